"""GUD §5.1 on CIFAR-10 in the Fourier basis: one network over a two-parameter schedule
family, softness a × ordering r (the grid of Fig. 5), white prior.

Schedule (`soft_mixed`, docs/maths.md §3 and §9): linear soft conditioning with effective labels
    e_i = a · l_i(r),   l_i(r) = (1 − r)·(−log λ_i) + r·c·log(1 + |k_i|),
    γ̃_i(t) = γ̃_den + (e_i − e_max) + t·(W + E),   unclipped,
where λ_i = Var(c_i) is the variance of Fourier component i on the training set, |k_i| its
spatial frequency (basis labels "variance" and "log_frequency"), and
c = span(−log λ)/span(log(1 + |k|)) is fixed when the schedule is built, so that both
orderings span the same range of labels.

What r means in our implementation (the paper does not define it; docs/maths.md §9): a linear
schedule depends only on the product a·l, so r cannot be a second scale; it changes the
SHAPE of the ordering at a fixed label range. r = 0 orders components by variance
(−log λ: high-variance components are generated first), r = 1 purely by frequency
(log(1 + |k|): low frequencies first); in between, a straight-line blend. a sets how far
apart the windows are (softness; the range of effective labels is a·span(−log λ) for
every r). The family trained is a ∈ [0.4, 1.6], r ∈ [0, 1], drawn per example.

Standard-diffusion points (marked in Fig. 5): (a, r) = (1, 0) only, `STANDARD_DIFFUSION_POINTS`:
with the white prior ρ_i = log λ_i, so e_i + ρ_i = 0 and every γ_i(t) is the same
(tests check this exactly with `schedules.is_standard_diffusion`). Since −log λ_i is
close to affine in log(1 + |k_i|) for natural images (λ ∝ |k|^−2), points with small r
and a ≈ 1 are near-standard.

Commands:
    python -m gudjax.main --config=configs/cifar10_fourier.py --workdir=workdirs/cifar10_fourier
    python -m gudjax.main --config=configs/cifar10_fourier.py --workdir=workdirs/cifar10_fourier \\
        --mode=eval                       # the 5 × 3 grid a = 0.4…1.6, r = 0, 0.5, 1
    python -m gudjax.main --config=configs/cifar10_fourier.py:runlocal \\
        --workdir=/tmp/rl_cifar10_fourier
`runlocal` uses the OFFLINE STAND-IN photo_patches (scikit-image photo tiles), NOT CIFAR-10.

Expected cost: 300k steps at batch 128 of the default U-Net (10.4M parameters, 1.07 TFLOP per
step, 3.2e17 FLOP in all): roughly 1.5–3 h at 30–60 TFLOP/s sustained on one accelerator
(an estimate, not measured), plus 15 NLL/FD evaluations for the grid.
runlocal: 200 steps, 2.5–4 min end to end on 2 shared CPU cores (experiments/README.md).
Expected result (paper, Fig. 5): sample quality over the (a, r) grid; near-standard
settings are about the best. docs/maths.md §9 gives no single number.
"""

import ml_collections

from gudjax.config_base import base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")

ARGS = {"runlocal": ("",)}

#: Family points equal to standard (white-noise) diffusion: all γ_i(t) identical.
STANDARD_DIFFUSION_POINTS = ({"a": 1.0, "r": 0.0},)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, ARGS)
    runlocal = "runlocal" in args
    c = base_config()
    common.cifar_defaults(c, dataset="cifar10", runlocal=runlocal)
    c.basis = ml_collections.ConfigDict(dict(name="fourier", whiten=False))
    c.schedule = ml_collections.ConfigDict(
        dict(
            name="soft_mixed",
            labels="variance",
            mix_labels="log_frequency",
            a=1.0,
            r=0.0,
            clip=False,
        )
    )
    c.family = ml_collections.ConfigDict(dict(a=(0.4, 1.6), r=(0.0, 1.0)))
    # The white prior leaves the zero frequency (the mean colour) with variance ≫ 1: without
    # the Gaussian skip the network learns its ε last and the samples come out as saturated
    # flat colours (docs/maths.md §5.1).
    c.model.gaussian_skip = True
    c.sample.a = ml_collections.config_dict.placeholder(float)
    c.sample.r = ml_collections.config_dict.placeholder(float)
    c.eval.sweep = "a=0.4,1.0,1.6;r=0,1" if runlocal else "a=0.4:1.6:5;r=0:1:3"
    return c
