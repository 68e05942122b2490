"""GUD §5.3 on CIFAR-10: 3-level Haar wavelet basis, variance-matched prior, and a
two-parameter family, level softness a × column offset b, trained as ONE network for 300k
steps; the (a, b) heat map of NLL comes from that network (config.eval.sweep).

Schedule (`haar_column`, docs/maths.md §3): e_i = a·level_i + c(b)·colpos_i, clipped to
[γ̃_den, γ̃_noise], with level 0 = coarsest LL … 3 = finest details (finer levels are
noised earlier, generated later), colpos ∈ [0, 1] the normalised column of the coefficient
inside its sub-band (left first) and c(b) = b·W/(1 − b). At a = 0 it is exactly the column
schedule with fraction b in every sub-band; at a = b = 0 standard diffusion with the
variance-matched prior (ρ = 0: all γ_i equal). Family trained: a ∈ [0, 2], b ∈ [0, 0.6]
(our choice; the paper does not give its ranges).

Commands:
    python -m gudjax.main --config=configs/cifar10_haar_columns.py \\
        --workdir=workdirs/cifar10_haar_columns
    python -m gudjax.main --config=configs/cifar10_haar_columns.py \\
        --workdir=workdirs/cifar10_haar_columns --mode=eval   # NLL, a = 0…2 × b = 0…0.5
    python -m gudjax.main --config=configs/cifar10_haar_columns.py:runlocal \\
        --workdir=/tmp/rl_cifar10_haar_columns
`runlocal` uses the OFFLINE STAND-IN photo_patches (scikit-image photo tiles), NOT CIFAR-10.

Expected cost: 300k steps at batch 128 of the default U-Net (10.4M parameters, 1.07 TFLOP per
step, 3.2e17 FLOP in all): roughly 1.5–3 h at 30–60 TFLOP/s sustained on one accelerator
(an estimate, not measured), plus 12 NLL evaluations on the test split.
runlocal: 200 steps, 2.5–4 min end to end on 2 shared CPU cores (experiments/README.md).
Expected result (paper): best NLL 3.17 bits/dim over the (a, b) grid.
"""

import ml_collections

from gudjax.config_base import base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")

ARGS = {"runlocal": ("",)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, ARGS)
    runlocal = "runlocal" in args
    c = base_config()
    common.cifar_defaults(c, dataset="cifar10", runlocal=runlocal)
    c.basis = ml_collections.ConfigDict(dict(name="haar", whiten=True, levels=3))
    c.schedule = ml_collections.ConfigDict(dict(name="haar_column", a=0.5, b=0.3, clip=True))
    c.family = ml_collections.ConfigDict(dict(a=(0.0, 2.0), b=(0.0, 0.6)))
    c.train.num_steps = 200 if runlocal else 300_000
    c.sample.a = ml_collections.config_dict.placeholder(float)
    c.sample.b = ml_collections.config_dict.placeholder(float)
    c.eval.sweep = "a=0,1;b=0,0.5" if runlocal else "a=0,0.5,1,2;b=0,0.3,0.5"
    return c
