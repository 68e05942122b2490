"""Defaults shared by every experiment config (configs/*.py build on `base_config()`)."""

from __future__ import annotations

import ml_collections

from gudjax.input_pipeline import default_data_config
from gudjax.models import default_model_config


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
    return c


def digits_defaults(c: ml_collections.ConfigDict, *, runlocal: bool = False) -> None:
    """Data, network and training sizes for the 8×8 digits runs (`make demo`, tests)."""
    c.batch_size = 64
    c.data.name = "digits"
    c.data.image_size = 8
    c.data.channels = 1
    m = c.model
    m.ch = 64
    m.ch_mult = (1, 2)
    m.num_res_blocks = 2
    m.attn_resolutions = (4,)
    m.cross_attn_resolutions = (4,)
    m.dropout = 0.1
    m.token_dim = 64

    c.optim.lr = 1e-3
    c.optim.warmup_steps = 200
    c.optim.decay = "cosine"
    c.optim.ema_decay = 0.999
    c.train.num_steps = 4000
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.sample.steps = 200
    c.sample.num = 64

    if runlocal:
        c.train.num_steps = 300
        c.train.checkpoint_every = 150
        c.optim.warmup_steps = 50
        c.optim.ema_decay = 0.99
        c.sample.steps = 50
        c.sample.num = 16


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
