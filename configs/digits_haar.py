"""GUD on scikit-learn's 8×8 digits: 3-level Haar basis, variance-matched prior, soft
level-ordered schedule, one network trained over the softness family a ∈ [0, 2].

This is the `make demo` job: it needs no download (the digits ship with scikit-learn).

Command:
    python -m gudjax.main --config=configs/digits_haar.py --workdir=workdirs/digits_haar
    python -m gudjax.main --config=configs/digits_haar.py:runlocal --workdir=/tmp/dh   # ~1 min
Sample another family member from the same network:
    python -m gudjax.main --config=configs/digits_haar.py --workdir=... --mode=sample \\
        --config.sample.a=0.5

Expected cost: ~8–10 min on 2 CPU cores (full), ~1 min (runlocal).
Expected result: a loss that flattens around 0.1–0.2 and samples that read as digits
(samples.png in the workdir).

Schedule: e_i = a · level_i with level 0 = coarsest LL … 3 = finest details: finer
levels are noised earlier and generated later (coarse-to-fine soft conditioning);
a = 0 is standard diffusion with the variance-matched prior. The family is clipped (matched
end points, docs/maths.md §3.6): every member shares each component's γ̃(0) and γ̃(1), so
the bits/dim of different members compare the members, not their end points (measured on
this demo: see experiments/README.md).
"""

import ml_collections

from gudjax.config_base import base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg)
    c = base_config()

    c.basis = ml_collections.ConfigDict(dict(name="haar", whiten=True, levels=3))
    c.schedule = ml_collections.ConfigDict(dict(name="soft", labels="level", a=1.0, clip=True))
    c.family = ml_collections.ConfigDict(dict(a=(0.0, 2.0)))
    c.sample.a = ml_collections.config_dict.placeholder(float)

    common.digits_defaults(c, runlocal="runlocal" in args)
    return c
