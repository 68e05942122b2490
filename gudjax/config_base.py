"""Defaults shared by every experiment config (configs/*.py build on `base_config()`)."""

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
            features="classifier",  # FD-<dataset>-classifier (not FID)
            inception_weights=ph(str),  # standard FID: not supported yet (one-line error)
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


def parse_arg(arg: str | None) -> dict[str, str]:
    """'runlocal,whiten=1' → {'runlocal': '', 'whiten': '1'}."""
    out = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if part:
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip()
    return out


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
