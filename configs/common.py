"""Presets shared by the experiment configs: data, network and training sizes.

`digits_defaults` (scikit-learn's 8×8 digits, `make demo`, the tests), `cifar_defaults`
(the paper's 32×32×3 runs: CIFAR-10, PCAM) and `digits_model_config` (the small digits
network). A config file in this directory loads this module by its path:

    from gudjax.config_base import base_config, import_sibling
    common = import_sibling(__file__, "common")
    ...
    common.digits_defaults(c, runlocal="runlocal" in args)

This module is not a config itself (it has no get_config).
"""

import ml_collections

from gudjax.config_base import default_model_config


def digits_model_config() -> ml_collections.ConfigDict:
    """A small net for 8×8×1 digits on a CPU (resolutions 8, 4; attention at 4×4).

    0.84M params (G = 8 groups); a jitted Adam train step at batch 64 took 0.17 s of CPU
    time pinned to one core (about 6 steps/s), compile about 15 s; "t" conditioning 0.14 s.
    """
    c = default_model_config()
    c.ch = 32
    c.ch_mult = (1, 2)
    c.num_res_blocks = 1
    c.attn_resolutions = (4,)
    c.cross_attn_resolutions = (4,)
    c.token_dim = 64
    c.dropout = 0.1
    return c


def digits_defaults(c: ml_collections.ConfigDict, *, runlocal: bool = False) -> None:
    """Data, network and training sizes for the 8×8 digits runs (`make demo`, tests)."""
    c.batch_size = 64
    c.data.name = "digits"
    c.data.image_size = 8
    c.data.channels = 1
    c.model = digits_model_config()  # 0.84M parameters, ~6 steps/s at batch 64 on one core

    c.optim.lr = 1e-3
    c.optim.warmup_steps = 200
    c.optim.decay = "cosine"
    c.optim.ema_decay = 0.999
    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    # The few-step sampler with the data's full covariance as its linear part (D = 64): on
    # the Gaussian oracle it matches Euler–Maruyama at 100 calls with 10 or fewer, on
    # standard, soft and near-sequential (column) schedules (experiments/BENCHMARKS.md); the
    # trained column model needs 20 (configs/digits_columns.py).
    c.sample.solver = "dpmpp_2m_cov"
    c.sample.steps = 10
    c.sample.num = 64
    e = c.eval
    # FD samples: Euler–Maruyama, 200 steps (the FD of earlier evaluations; on the demo model
    # it is ~10% below dpmpp_2m_cov's at 10 calls, the PF-ODE's own gap to the SDE)
    e.sampler = "sde"
    e.sampler_steps = 200
    e.num_images = None  # the whole test split: 364 images
    e.batch_size = 128
    e.fd_num_samples = None  # as many as test images (364)
    e.fd_num_reference = None
    e.classifier_steps = 1500

    if runlocal:
        c.train.num_steps = 300
        c.train.checkpoint_every = 150
        c.optim.warmup_steps = 50
        c.optim.ema_decay = 0.99
        c.sample.num = 16
        e.sampler_steps = 50
        e.num_images = 64
        e.fd_num_samples = 128
        e.classifier_steps = 500


def cifar_defaults(
    c: ml_collections.ConfigDict,
    *,
    dataset: str = "cifar10",
    runlocal: bool = False,
    runlocal_steps: int = 200,
) -> None:
    """Data, network and training sizes of the paper's 32×32×3 runs (CIFAR-10, PCAM).

    Full size: `dataset` at 32×32 (patch_camelyon: 96×96 area-averaged 3×3), random
    horizontal flips, the default U-Net (`default_model_config`), batch 128, AdamW at
    2e-4 with 5k warm-up steps, EMA 0.9999, 300k steps, NLL on the whole test split.

    runlocal: the OFFLINE STAND-IN `photo_patches` (32×32×3 tiles of scikit-image's
    photos, `gudjax.datasets.photo_patches`; CIFAR-10 and PCAM cannot be downloaded here),
    a small U-Net (0.32M parameters: ch 16, resolutions 32, 16, 8), batch 32,
    `runlocal_steps` steps (12 GFLOP per step; 200: about 80 s of training at ~2.5 steps/s
    on 2 CPU cores, a few minutes end to end; measured: experiments/README.md). The
    pixel-basis configs use 500: at 200 their white-prior samples are still speckle. Its
    numbers say nothing about CIFAR-10 or PCAM.
    """
    c.batch_size = 128
    c.data.name = dataset
    c.data.image_size = 32
    c.data.channels = 3
    c.data.random_flip = True
    c.model = default_model_config()

    c.optim.lr = 2e-4
    c.optim.warmup_steps = 5000
    c.optim.decay = "constant"
    c.optim.ema_decay = 0.9999
    c.train.num_steps = 300_000
    c.train.log_every = 100
    c.train.checkpoint_every = 10_000
    c.train.keep_checkpoints = 3
    # Euler–Maruyama: the full-covariance few-step sampler of the digits configs needs D × D
    # step maps precomputed on the host, impractical at D = 3072; for standard and soft
    # schedules --config.sample.solver=dpmpp_2m_g --config.sample.steps=10 is the few-step
    # choice (it diverges on column schedules, experiments/BENCHMARKS.md).
    c.sample.steps = 250
    c.sample.num = 64
    e = c.eval
    e.num_images = None  # the whole test split (the paper's NLL)
    e.batch_size = 128
    e.fd_num_samples = 10_000
    e.fd_num_reference = 10_000
    e.classifier_steps = 5000

    if runlocal:
        c.batch_size = 32
        c.data.name = "photo_patches"
        m = c.model
        m.ch = 16
        m.ch_mult = (1, 2, 2)
        m.num_res_blocks = 1
        m.attn_resolutions = (8,)
        m.cross_attn_resolutions = (8,)
        m.token_dim = 32
        m.dropout = 0.0
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 20
        c.optim.decay = "cosine"
        c.optim.ema_decay = 0.99
        c.train.num_steps = int(runlocal_steps)
        c.train.log_every = 20
        c.train.checkpoint_every = 100
        c.sample.num = 16
        e.sampler_steps = 50
        e.num_images = 64
        e.batch_size = 64
        e.fd_num_samples = 128
        e.fd_num_reference = None  # the whole stand-in test split (685)
        e.classifier_steps = 300
        e.classifier_train_examples = None
