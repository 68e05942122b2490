"""GUD on 8×8 digits in the PCA basis: linear soft conditioning with variance labels
l_i = −log λ_i, one network over the softness family a ∈ [0.4, 1.6] (the digits-sized
analogue of the paper's CIFAR-10 PCA experiment, §5.1).

Argument: `whiten=0|1` (default 0) and/or `runlocal`, e.g.
    python -m gudjax.main --config=configs/digits_pca.py:whiten=1 --workdir=workdirs/digits_pca_w
    python -m gudjax.main --config=configs/digits_pca.py:runlocal --workdir=/tmp/dp

With the white prior (whiten=0), a = 1 is exactly standard diffusion (all γ_i equal).
Expected cost: ~8–10 min on 2 CPU cores (full), ~1 min (runlocal).
"""

import ml_collections

from gudjax.config_base import base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg)
    c = base_config()
    common.digits_defaults(c, runlocal="runlocal" in args)
    whiten = args.get("whiten", "0") not in ("0", "", "false", "False")
    c.basis = ml_collections.ConfigDict(dict(name="pca", whiten=whiten))
    c.schedule = ml_collections.ConfigDict(dict(name="soft", labels="variance", a=1.0, clip=False))
    c.family = ml_collections.ConfigDict(dict(a=(0.4, 1.6)))
    c.sample.a = ml_collections.config_dict.placeholder(float)
    return c

