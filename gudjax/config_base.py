"""Defaults shared by every experiment config (configs/*.py build on `base_config()`).

The shape of a config file (configs/<experiment>.py):

    ARGS = {"runlocal": ("",), "whiten": ("0", "1")}     # optional: get_config arguments

    def get_config(arg=None):                           # --config=configs/x.py:runlocal,whiten=1
        args = parse_arg(arg, ARGS)                     # {'runlocal': '', 'whiten': '1'}
        ...

    def sweep(add):                                     # optional: the runs the paper makes
        for whiten in (0, 1):
            add(whiten=whiten)

Arguments (`ARGS`): the names `get_config` understands, each with the values the tests
build (``""`` for a flag such as ``runlocal``). `parse_arg(arg, ARGS)` refuses other names
with a one-line error, so a typo such as ``whitne=1`` cannot silently train the default.

Sweeps (`sweep(add)`, expanded by ``python -m experiments.sweep``): every call
``add(**overrides)`` registers one run, with its own workdir named after the overrides.
Each keyword is either
  - a get_config argument listed in ARGS (``add(whiten=1)``, ``add(b=0.3)``): merged into
    the config argument, ``--config=configs/x.py:runlocal,whiten=1``; or
  - a config field, as its dotted path (``add(**{"optim.lr": 1e-4, "seed": 1})``): passed as
    ``--config.optim.lr=0.0001 --config.seed=1``.
The sweep launcher builds the config of every point and checks every field exists (and
takes the value's type) before it launches anything. A config without `sweep` is one run.
"""

from __future__ import annotations

import ml_collections

from gudjax.input_pipeline import default_data_config
from gudjax.models import default_model_config, digits_model_config


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 128  # global, over all devices and hosts
    c.allow_config_change = False

    c.data = default_data_config()

    # Basis and prior (SPEC §1). Extra fields are basis options (e.g. haar levels).
    c.basis = ml_collections.ConfigDict(dict(name="pixel", whiten=False))

    # Schedule (SPEC §3): fields are make_schedule() keyword arguments.
    c.schedule = ml_collections.ConfigDict(dict(name="scalar_linear"))
    # Family ranges for training: {param: (low, high)} drawn per example; empty = fixed.
    c.family = ml_collections.ConfigDict()

    c.model = default_model_config()

    c.optim = ml_collections.ConfigDict(
        dict(lr=2e-4, warmup_steps=500, decay="constant", b1=0.9, b2=0.999, weight_decay=0.0,
             grad_clip=1.0, ema_decay=0.999)
    )
    c.train = ml_collections.ConfigDict(
        dict(num_steps=100_000, log_every=50, checkpoint_every=5_000, sample_every=0,
             keep_checkpoints=3, loss_weighting="unweighted", progress=True)
    )
    # Sampling: solver sde|ode, steps, number of images; family members via e.g. sample.a.
    c.sample = ml_collections.ConfigDict(dict(solver="sde", steps=250, num=64, seed=0))
    # Conditional generation (gudjax/conditional.py) from --mode=sample: an inpainting
    # mask spec ("left:K", "right:K", "top:K", "bottom:K", "center:K", "box:r0:r1:c0:c1",
    # or a .npy file, True = known), or image extension by sliding the window K columns.
    c.sample.inpaint = ml_collections.config_dict.placeholder(str)
    c.sample.extend_columns = ml_collections.config_dict.placeholder(int)
    c.sample.extend_width = ml_collections.config_dict.placeholder(int)  # None: 2 × W
    # First window of an extension: "noise" (an unconditional sample) or "test" (the first
    # sample.num real test images, kept as the left W columns).
    c.sample.extend_from = "noise"
    # Images per sampler call, split over all local devices; None = min(num, 256).
    c.sample.batch_size = ml_collections.config_dict.placeholder(int)

    # Evaluation (--mode=eval, gudjax/evaluate.py): NLL in bits/dim through the PF-ODE,
    # the Gaussian baseline, Fréchet distance in classifier features, family sweeps.
    ph = ml_collections.config_dict.placeholder
    c.eval = ml_collections.ConfigDict(
        dict(
            split="test",
            num_images=ph(int),  # test images for the NLL; None = the whole split
            batch_size=64,
            seed=0,  # dequantisation noise, Hutchinson probes, FD samples
            divergence="hutchinson",  # or "exact" (D Jacobian-vector products per step)
            num_probes=1,
            solver="tsit5",
            rtol=1e-5,
            atol=1e-5,
            max_steps=4096,
            baseline_ode_images=8,  # PF-ODE cross-check of the closed-form Gaussian baseline
            fd=True,
            # "classifier": FD-<dataset>-classifier (not FID), plus "FID" when
            # inception_weights is set; "inception": FID only (needs inception_weights).
            features="classifier",
            # Standard FID: a local .npz of pytorch-fid's InceptionV3 weights (convert the .pth
            # with experiments/convert_inception_weights.py); None = no FID.
            inception_weights=ph(str),
            inception_batch_size=64,  # images per Inception call (split over the devices)
            fd_num_samples=ph(int),  # generated images; None = as many as reference images
            fd_num_reference=ph(int),  # test images; None = the whole split
            sampler=ph(str),  # sde | ode; None = config.sample.solver
            sampler_steps=ph(int),  # None = config.sample.steps
            classifier_dir=ph(str),  # None = <workdir>/fd_classifier; share it across runs
            classifier_steps=2000,
            classifier_batch_size=128,
            classifier_lr=1e-3,
            classifier_seed=0,
            classifier_train_examples=ph(int),  # None = the whole train split
            # Family sweep from one network: "a=0:2:5", "a=0,1,2", "a=0,1;b=0.3,0.5" (grid).
            sweep="",
        )
    )
    c.eval.num_images = 1000
    c.eval.fd_num_samples = 5000
    c.eval.fd_num_reference = 10000
    c.eval.classifier_train_examples = 50000
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
    c.sample.steps = 200
    c.sample.num = 64
    e = c.eval
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
        c.sample.steps = 50
        c.sample.num = 16
        e.num_images = 64
        e.fd_num_samples = 128
        e.classifier_steps = 500


def cifar_defaults(
    c: ml_collections.ConfigDict, *, dataset: str = "cifar10", runlocal: bool = False
) -> None:
    """Data, network and training sizes of the paper's 32×32×3 runs (CIFAR-10, PCAM).

    Full size: `dataset` at 32×32 (patch_camelyon: 96×96 area-averaged 3×3), random
    horizontal flips, the default U-Net (`default_model_config`), batch 128, AdamW at
    2e-4 with 5k warm-up steps, EMA 0.9999, 300k steps, NLL on the whole test split.

    runlocal: the OFFLINE STAND-IN `photo_patches` (32×32×3 tiles of scikit-image's
    photos, `gudjax.datasets.photo_patches`; CIFAR-10 and PCAM cannot be downloaded here),
    a small U-Net (0.32M parameters: ch 16, resolutions 32, 16, 8), batch 32, 200 steps
    (12 GFLOP per step): about 80 s of training at ~2.5 steps/s on 2 CPU cores, a few
    minutes end to end (measured: experiments/README.md). Its numbers say nothing about
    CIFAR-10 or PCAM.
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
        c.train.num_steps = 200
        c.train.log_every = 20
        c.train.checkpoint_every = 100
        c.sample.steps = 50
        c.sample.num = 16
        e.num_images = 64
        e.batch_size = 64
        e.fd_num_samples = 128
        e.fd_num_reference = None  # the whole stand-in test split (685)
        e.classifier_steps = 300
        e.classifier_train_examples = None


def parse_arg(arg: str | None, allowed: dict | None = None) -> dict[str, str]:
    """'runlocal,whiten=1' → {'runlocal': '', 'whiten': '1'}.

    With `allowed` (a config file's ARGS), a name not in it is a one-line ValueError.
    """
    out = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if part:
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip()
    if allowed is not None:
        unknown = [k for k in out if k not in allowed]
        if unknown:
            raise ValueError(
                f"unknown config argument {unknown[0]!r} in {arg!r}; allowed: "
                f"{', '.join(allowed) or 'none'} (e.g. --config=configs/x.py:runlocal)"
            )
    return out


def arg_bool(args: dict[str, str], name: str, default: bool = False) -> bool:
    """A 0/1/true/false config argument; a bad value is a one-line ValueError."""
    value = args.get(name)
    if value is None:
        return default
    v = value.strip().lower()
    if v in ("1", "true", "yes", ""):
        return True
    if v in ("0", "false", "no"):
        return False
    raise ValueError(f"config argument {name}={value!r}; allowed: 0, 1 (or true, false)")


def arg_float(args: dict[str, str], name: str, default: float) -> float:
    """A float config argument; a bad value is a one-line ValueError."""
    value = args.get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"config argument {name}={value!r} is not a number") from None


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """Load `get_config(arg)` from a config file path (as --config=path[:arg] does)."""
    import importlib.util
    import os

    if not os.path.exists(path):
        raise ValueError(f"config file {path} does not exist")
    name = "gudjax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()
