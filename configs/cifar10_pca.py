"""GUD §5.1 on CIFAR-10 in the PCA basis: linear soft conditioning with variance labels
l_i = −log λ_i (λ_i the PCA eigenvalues, index 0 = largest), one network per prior trained
over the whole softness family a ∈ [0.4, 1.6] (a drawn per example).

Schedule (docs/maths.md §3): γ̃_i(t) = γ̃_den + (e_i − e_max) + t·(W + E), e_i = a·l_i, unclipped.
  whiten=0 (white prior): a = 1 makes all γ_i equal: exactly standard diffusion;
           a < 1 / a > 1 noise high-variance components later / earlier than that.
  whiten=1 (variance-matched prior, N(0, data covariance)): a = 0 would be standard
           diffusion with that prior; a > 0 generates high-variance components first.

Commands (one network per prior; `python -m experiments.sweep configs/cifar10_pca.py`
launches both):
    python -m gudjax.main --config=configs/cifar10_pca.py:whiten=0 \\
        --workdir=workdirs/cifar10_pca/whiten=0
    python -m gudjax.main --config=configs/cifar10_pca.py:whiten=1 \\
        --workdir=workdirs/cifar10_pca/whiten=1
Fig. 3 (NLL and FD vs a) from each network, 7 points a = 0.4, 0.6, …, 1.6 (config.eval.sweep):
    python -m gudjax.main --config=configs/cifar10_pca.py:whiten=1 \\
        --workdir=workdirs/cifar10_pca/whiten=1 --mode=eval
    python -m experiments.sweep configs/cifar10_pca.py --mode=eval --launcher=local
Laptop check (OFFLINE STAND-IN photo_patches, NOT CIFAR-10):
    python -m gudjax.main --config=configs/cifar10_pca.py:runlocal --workdir=/tmp/rl_cifar10_pca

Expected cost, per network: 300k steps at batch 128 of the default U-Net (10.4M parameters,
1.07 TFLOP per step, 3.2e17 FLOP in all): roughly 1.5–3 h at 30–60 TFLOP/s sustained on one
accelerator (an estimate, not measured); fitting PCA needs the 3072×3072 covariance (seconds).
runlocal: 200 steps, 2.5–4 min end to end on 2 shared CPU cores (experiments/README.md).
Expected result (paper, Fig. 3): NLL and FID vs a for both priors, with a = 1 unwhitened =
standard diffusion as the reference; docs/maths.md §9 gives no single number. FD here is in the
features of a gudjax-trained classifier ("FD-cifar10-classifier"), not FID.
"""

import ml_collections

from gudjax.config_base import arg_bool, base_config, import_sibling, parse_arg

common = import_sibling(__file__, "common")

ARGS = {"runlocal": ("",), "whiten": ("0", "1")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, ARGS)
    runlocal = "runlocal" in args
    c = base_config()
    common.cifar_defaults(c, dataset="cifar10", runlocal=runlocal)
    c.basis = ml_collections.ConfigDict(dict(name="pca", whiten=arg_bool(args, "whiten")))
    c.schedule = ml_collections.ConfigDict(dict(name="soft", labels="variance", a=1.0, clip=False))
    c.family = ml_collections.ConfigDict(dict(a=(0.4, 1.6)))
    # The white prior leaves the mean colour with variance ≫ 1 (575 for the top PCA component
    # of the photo stand-in): without the Gaussian skip the network learns its ε last and the
    # samples come out as saturated flat colours (docs/maths.md §5.1). Both priors use it, so
    # the two networks differ only in the prior.
    c.model.gaussian_skip = True
    c.sample.a = ml_collections.config_dict.placeholder(float)
    c.eval.sweep = "a=0.4,1.0,1.6" if runlocal else "a=0.4:1.6:7"
    return c


def sweep(add):
    """One network per prior (the two curves of Fig. 3)."""
    for whiten in (0, 1):
        add(whiten=whiten)
