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

Presets (data, network and training sizes shared by several experiments: digits, CIFAR-10 /
PCAM) live in configs/common.py, next to the configs that use them; a config file loads it
with `import_sibling(__file__, "common")`, which works from any working directory. This
module keeps only generic defaults and imports nothing but ml_collections, so loading a
config file never imports TFDS, grain or Flax.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
    """The `config.data` block (`gudjax.input_pipeline`): digits at its native 8×8×1, no flips,
    default data_dir."""
    return ml_collections.ConfigDict(
        {
            "name": "digits",
            "data_dir": ml_collections.config_dict.placeholder(str),
            "image_size": 8,
            "channels": 1,
            "random_flip": False,
            # None: keep the train split in memory if <= input_pipeline.CACHE_AUTO_BYTES;
            # True / False.
            "cache": ml_collections.config_dict.placeholder(bool),
            # Training batches read ahead on a background thread (0: read in the loop).
            "prefetch": 2,
        }
    )


def default_model_config() -> ml_collections.ConfigDict:
    """The `config.model` block (`gudjax.models`): a DDPM++-like U-Net for 32×32 images
    (resolutions 32, 16, 8, 4), γ-token conditioning.

    Fields:
      name: registry key ("unet").
      ch: base channels; level l has ch * ch_mult[l] channels.
      ch_mult: channel multipliers, one per resolution level; the image size must be
        divisible by 2**(len(ch_mult) - 1) (28×28: use 3 levels → 28, 14, 7).
      num_res_blocks: ResBlocks per level on the way down (one more on the way up).
      attn_resolutions: feature-map heights with self-attention (the middle block always has it).
      cross_attn_resolutions: heights with cross-attention to the γ-tokens ("gamma" mode;
        the middle block always has it in that mode).
      dropout: dropout rate inside the ResBlocks (train=True only).
      conditioning: "gamma" (tokens of per-group γ̃ stats) or "t" (time only, baseline).
      gamma_map_channel: also feed γ̃ in image layout as extra input channels.
      token_dim: width of the γ-tokens.
      num_heads: attention heads (gcd(channels, num_heads) where num_heads does not divide).
      num_fourier: Fourier frequencies per γ̃ statistic in the token features.
      gamma_input_scale: γ̃ is multiplied by this before it enters the network
        (γ̃ ∈ [-8, 4] → about [-1, 0.5]).
      emb_mult: the global embedding has emb_mult * ch features.
      max_norm_groups: GroupNorm uses the largest divisor of the channels that is
        <= max_norm_groups and leaves >= 4 channels per group.
      scale_shift_norm: the global embedding modulates each ResBlock as a FiLM scale and
        shift after its second GroupNorm (True) or is added before it (False, DDPM++).
      gaussian_skip: add the Gaussian-optimal ε̂ of every component (its posterior mean of ε
        if the data were Gaussian with the basis variances) to the network's output, which
        then learns only the residual (docs/maths.md §5.1). Needed where the white prior
        leaves components of variance ≫ 1 (PCA, Fourier, Haar mean colour).
    """
    c = ml_collections.ConfigDict()
    c.name = "unet"
    c.ch = 64
    c.ch_mult = (1, 2, 2, 2)
    c.num_res_blocks = 2
    c.attn_resolutions = (8,)
    c.cross_attn_resolutions = (8, 4)
    c.dropout = 0.1
    c.conditioning = "gamma"
    c.gamma_map_channel = False
    c.token_dim = 128
    c.num_heads = 4
    c.num_fourier = 8
    c.gamma_input_scale = 0.125
    c.emb_mult = 4
    c.max_norm_groups = 32
    c.scale_shift_norm = True
    c.gaussian_skip = False
    return c


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 128  # global, over all devices and hosts
    c.allow_config_change = False

    c.data = default_data_config()

    # Basis and prior (docs/maths.md §1). Extra fields are basis options (e.g. haar levels).
    c.basis = ml_collections.ConfigDict(dict(name="pixel", whiten=False))

    # Schedule (docs/maths.md §3): fields are make_schedule() keyword arguments.
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
    # What the noising states are drawn from (docs/maths.md §4.1): "family" (members of
    # config.family, or the fixed schedule) or "any" (random monotone per-unit paths between
    # the common end points γ̃_den and T_i; needs a clipped linear family or "autoregressive"
    # and conditioning="gamma"). path_min_length: the shortest window ℓ_min ∈ (0, 1];
    # path_p_family: probability an example takes a family member instead, in [0, 1];
    # path_units: "groups" (one window per conditioning group, which the γ tokens describe
    # exactly) or "components" (one per component; needs model.gamma_map_channel=True).
    c.train.paths = "family"
    c.train.path_min_length = 0.1
    c.train.path_p_family = 0.5
    c.train.path_units = "groups"
    # Sampling: solver (gudjax.generation.SOLVERS: sde | ode | ddim | ddim_sde | dpmpp_2m |
    # heun, the _g forms, and ddim_cov | dpmpp_2m_cov: the data's full covariance as the
    # linear part, for D <= 256, moments stored in <workdir>/data_moments.npz), steps, number
    # of images; family members via e.g. sample.a.
    c.sample = ml_collections.ConfigDict(dict(solver="sde", steps=250, num=64, seed=0))
    # Where the steps go (gudjax.solvers.TIME_GRIDS: uniform | lambda | edm | arc | auto);
    # None = the solver's default. eta: the noise of ddim_sde (1 = the DDPM posterior step).
    c.sample.time_grid = ml_collections.config_dict.placeholder(str)
    c.sample.eta = 1.0
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
            bound_num_t=8,  # variational bound per row: stratified times per image (0 = off)
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


def import_sibling(config_file: str, name: str) -> types.ModuleType:
    """The module `<name>.py` in the directory of `config_file` (e.g. configs/common.py),
    loaded by its path: config files are loaded by path too, so `configs` need not be an
    importable package (a run started from another directory)."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py")
    key = f"gudjax_config_{name}_{abs(hash(path)):x}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or not os.path.exists(path):
        raise ValueError(f"{config_file} needs {path}, which does not exist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[key] = module
    return module


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """Load `get_config(arg)` from a config file path (as --config=path[:arg] does)."""
    if not os.path.exists(path):
        raise ValueError(f"config file {path} does not exist")
    name = "gudjax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()
