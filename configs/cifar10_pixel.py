"""Standard diffusion baseline on CIFAR-10: pixel basis, white prior, and one scalar VDM
schedule γ(t) = −13.3 + 18.3·t shared by all 3072 components (docs/maths.md §3 "scalar linear").

Every other paper config is compared with this process: in any orthonormal basis with the
white prior, equal γ_i(t) for all i is the same diffusion (the a = 1 unwhitened PCA point of
configs/cifar10_pca.py and the (a, r) = (1, 0) Fourier point differ from it only in the
range of γ(t), which there follows from γ̃_den, γ̃_noise and the data variances).

Commands:
    python -m gudjax.main --config=configs/cifar10_pixel.py --workdir=workdirs/cifar10_pixel
    python -m gudjax.main --config=configs/cifar10_pixel.py --workdir=workdirs/cifar10_pixel \\
        --mode=eval                       # NLL (bits/dim) on the whole test split, FD
    python -m gudjax.main --config=configs/cifar10_pixel.py:runlocal --workdir=/tmp/rl_cifar10_pixel

Data: CIFAR-10 prepared once as TFDS ArrayRecord (see gudjax/input_pipeline.py).
`runlocal` trains on the OFFLINE STAND-IN photo_patches (32×32×3 tiles of scikit-image's
photos), NOT on CIFAR-10: it checks that the pipeline runs, nothing more.

Expected cost: 300k steps at batch 128 of the default U-Net (10.4M parameters, 1.07 TFLOP per
step, 3.2e17 FLOP in all): roughly 1.5–3 h at 30–60 TFLOP/s sustained on one accelerator
(an estimate, not measured).
runlocal: 500 steps, about 10 min end to end on 2 shared CPU cores (experiments/README.md).
Expected result: the paper reports standard diffusion only as reference points of its
figures (Fig. 3 a = 1 unwhitened, Fig. 5 marked points); docs/maths.md §9 lists no separate number.
"""

import ml_collections

from gudjax.config_base import base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")

ARGS = {"runlocal": ("",)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, ARGS)
    c = base_config()
    # runlocal: 500 steps; at 200 the white-prior pixel samples are still speckle.
    common.cifar_defaults(c, dataset="cifar10", runlocal="runlocal" in args, runlocal_steps=500)
    c.basis = ml_collections.ConfigDict(dict(name="pixel", whiten=False))
    c.schedule = ml_collections.ConfigDict(dict(name="scalar_linear"))
    c.family = ml_collections.ConfigDict()
    return c
