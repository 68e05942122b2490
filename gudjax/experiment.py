"""What a run is made of, built from its config and workdir: `build(config, workdir) -> Run`.

Config checks (`validate_config`, `check_config_change`), the basis fitted once from the
training split and stored as `basis.npz` in the workdir (`fit_or_load_basis`), the model,
optimiser and checkpointer (`build`), and the newest readable checkpoint (`restore_state`).
The data's mean and covariance in component space, which the full-covariance samplers need,
are computed once on demand and stored as `data_moments.npz` (`fit_or_load_moments`).
Training (`gudjax.train`) and the sample/eval modes (`gudjax.run.load_trained`) start here.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import bases, gaussian_flow, input_pipeline, models, paths, process, schedules, step
from gudjax.checkpointing import Checkpointer
from gudjax.distributed import TrainingError
from gudjax.models import create_model
from gudjax.runtime import make_mesh, replicated

log = logging.getLogger("gudjax")

#: Config fields that may change between restarts of the same run (they do not change
#: what is being trained).
MUTABLE_FIELDS = (
    "train.num_steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.sample_every",
    "train.keep_checkpoints",
    "train.progress",
    "allow_config_change",
    "data.data_dir",
    "data.prefetch",
    "sample",
    "eval",
)

#: Fields added after runs were started, with the value that means "as before": a stored
#: config.json without them resumes as long as the current config keeps that value.
ADDED_FIELDS = {
    "train.paths": "family",
    "train.path_min_length": 0.1,
    "train.path_p_family": 0.5,
    "train.path_units": "groups",
    "model.gaussian_skip": False,
}


class Run(NamedTuple):
    """Everything a run needs, as `build` makes it (state is the freshly initialised one)."""

    mesh: jax.sharding.Mesh
    basis: bases.Basis
    schedule: Any
    graphdef: Any
    tx: Any
    state: dict
    ckpt: Checkpointer
    root: jax.Array


# ------------------------------------------------------------------ config helpers
def validate_config(config) -> None:
    """Checks a user can get wrong, each a one-line ValueError naming the field."""
    n_dev = jax.device_count()
    if config.batch_size % n_dev:
        raise ValueError(
            f"config.batch_size={config.batch_size} is not divisible by the {n_dev} devices; "
            f"use a multiple of {n_dev}"
        )
    for name, rng in dict(config.get("family", {})).items():
        lo, hi = (float(v) for v in rng)
        if lo > hi:
            raise ValueError(f"config.family.{name}=({lo}, {hi}) has min > max; swap the bounds")
    sched = config.schedule.name
    registered = schedules.registered_schedules()
    if sched not in registered:
        raise ValueError(
            f"unknown config.schedule.name '{sched}'; allowed: {', '.join(registered)}"
        )
    allowed = schedules.family_params(sched)
    for name in dict(config.get("family", {})):
        if name not in allowed:
            raise ValueError(
                f"config.family.{name}: schedule '{sched}' has parameters {list(allowed) or 'none'}"
            )
    for field, value, allowed in (
        ("basis.name", config.basis.name, bases.registered_bases()),
        ("data.name", config.data.name, tuple(input_pipeline.DATASETS)),
        ("model.name", config.model.name, models.registered_models()),
    ):
        if value not in allowed:
            raise ValueError(f"unknown config.{field} {value!r}; allowed: {', '.join(allowed)}")
    if config.train.loss_weighting not in process.WEIGHTINGS:
        raise ValueError(
            f"unknown config.train.loss_weighting '{config.train.loss_weighting}'; "
            f"allowed: {', '.join(process.WEIGHTINGS)}"
        )
    _validate_paths(config)


def _validate_paths(config) -> None:
    """The any-path training fields (docs/maths.md §4.1)."""
    tr = config.train
    kind = tr.get("paths", "family")
    if kind not in paths.PATHS:
        raise ValueError(
            f"unknown config.train.paths {kind!r}; allowed: {', '.join(paths.PATHS)}"
        )
    if kind == "family":
        return
    units = tr.get("path_units", "groups")
    if units not in paths.PATH_UNITS:
        raise ValueError(
            f"unknown config.train.path_units {units!r}; allowed: {', '.join(paths.PATH_UNITS)}"
        )
    if not 0.0 < float(tr.get("path_min_length", 0.1)) <= 1.0:
        raise ValueError(
            f"config.train.path_min_length={tr.path_min_length} must be in (0, 1]"
        )
    if not 0.0 <= float(tr.get("path_p_family", 0.5)) <= 1.0:
        raise ValueError(f"config.train.path_p_family={tr.path_p_family} must be in [0, 1]")
    if config.model.get("conditioning", "gamma") != "gamma":
        raise ValueError(
            "config.train.paths='any' needs config.model.conditioning='gamma' (t does not "
            "say where an example is on a random path)"
        )
    if units == "components" and not config.model.get("gamma_map_channel", False):
        raise ValueError(
            "config.train.path_units='components' needs config.model.gamma_map_channel=True "
            "(the group tokens cannot say which component is where); or use 'groups'"
        )


def any_paths_options(config) -> paths.AnyPaths | None:
    """`config.train.paths` as the train step's `any_paths` option (None: "family")."""
    tr = config.train
    if tr.get("paths", "family") == "family":
        return None
    return paths.AnyPaths(
        min_length=float(tr.get("path_min_length", 0.1)),
        p_family=float(tr.get("path_p_family", 0.5)),
        per_component=tr.get("path_units", "groups") == "components",
    )


def basis_options(config) -> dict:
    opts = dict(config.basis)
    opts.pop("name")
    opts.pop("whiten", None)
    return opts


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_config_json(path: str) -> dict:
    """The config stored in a workdir; a damaged or unreadable file is a one-line error."""
    fix = "restore it or delete it to accept the current config"
    try:
        with open(path) as f:
            stored = json.load(f)
    except json.JSONDecodeError as e:
        raise TrainingError(f"{path} is not valid JSON (line {e.lineno}); {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or " ".join(str(e).split())
        raise TrainingError(f"cannot read {path} ({reason}); {fix}") from None
    if not isinstance(stored, dict):
        raise TrainingError(f"{path} does not hold a config (a JSON object); {fix}")
    return stored


def check_config_change(config, workdir: str) -> None:
    """Refuse to continue a run whose stored config differs (unless allow_config_change)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path) or config.get("allow_config_change", False):
        return
    old = _flatten(read_config_json(path))
    new = _flatten(json.loads(config.to_json_best_effort()))
    diffs = [
        k
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
        and not any(k == m or k.startswith(m + ".") for m in MUTABLE_FIELDS)
        and not (k not in old and k in ADDED_FIELDS and new.get(k) == ADDED_FIELDS[k])
    ]
    if diffs:
        k = diffs[0]
        raise TrainingError(
            f"workdir {workdir} holds a run with a different config ({k}: {old.get(k)!r} → "
            f"{new.get(k)!r}{' and more' if len(diffs) > 1 else ''}); use a fresh --workdir or "
            "pass --config.allow_config_change=True"
        )


# ------------------------------------------------------------------ basis
def fit_or_load_basis(config, workdir: str) -> bases.Basis:
    """Fit the basis from the training split once; later runs load `workdir/basis.npz`."""
    path = os.path.join(workdir, "basis.npz")
    if os.path.exists(path):
        basis = bases.load_basis(path)
        want = (config.basis.name, bool(config.basis.whiten))
        if (basis.kind, basis.whiten) != want:
            raise TrainingError(
                f"{path} holds a '{basis.kind}' basis (whiten={basis.whiten}) but the config asks "
                f"for {want}; use a fresh --workdir"
            )
        return basis
    shape = input_pipeline.image_shape(config.data)
    try:
        bases.check_image_shape(config.basis.name, shape, **basis_options(config))
    except ValueError as e:  # name the config fields involved
        fields = [f"config.basis.{k}={v!r}" for k, v in basis_options(config).items()]
        fields = ", ".join(
            [
                f"config.basis.name={config.basis.name!r}",
                *fields,
                f"config.data.image_size={config.data.image_size!r}",
            ]
        )
        raise ValueError(f"{fields}: {e}") from None
    levels = input_pipeline.levels(config.data)
    batches = (
        input_pipeline.to_model_input(b, levels=levels)
        for b in input_pipeline.fit_batches(config.data, batch_size=256)
    )
    basis = bases.fit_basis(
        config.basis.name,
        batches,
        whiten=bool(config.basis.whiten),
        min_variance=bases.dequantization_variance(levels),  # (2/L)²/12
        **basis_options(config),
    )
    if jax.process_index() == 0:
        bases.save_basis(path, basis)
    return basis


MOMENTS_FILE = "data_moments.npz"


def component_moments(data_config, basis, *, batch_size: int = 512):
    """(mean (D,), covariance (D, D)), float64, of the training split in `basis`'s component
    space: one streaming pass, images centre-dequantised at the data's own levels."""
    levels = input_pipeline.levels(data_config)
    encode = jax.jit(basis.encode)
    n, s1, s2 = 0, 0.0, 0.0
    for batch in input_pipeline.fit_batches(data_config, batch_size=batch_size):
        x = input_pipeline.to_model_input(batch, levels=levels)
        z = np.asarray(encode(jnp.asarray(x)), np.float64)
        n, s1, s2 = n + z.shape[0], s1 + z.sum(0), s2 + z.T @ z
    if n < 2:
        raise ValueError(f"the training split of {data_config.name!r} has {n} image(s); the "
                         "data covariance needs at least 2")
    mean = s1 / n
    return mean, (s2 - n * np.outer(mean, mean)) / (n - 1)


def fit_or_load_moments(config, workdir: str | None, basis):
    """The training split's (mean, covariance) in `basis`'s component space: computed once
    (`component_moments`) and stored as `workdir/data_moments.npz`; later calls load it. An
    unreadable or mismatched file is recomputed (with a warning) and replaced."""
    d = basis.dim
    path = os.path.join(workdir, MOMENTS_FILE) if workdir else None
    if path and os.path.exists(path):
        try:
            with np.load(path) as f:
                mean, cov = np.asarray(f["mean"]), np.asarray(f["cov"])
            if mean.shape == (d,) and cov.shape == (d, d) and np.all(np.isfinite(cov)):
                return mean, cov
            log.warning("%s holds moments of shape %s, not for D = %d; recomputing it",
                        path, cov.shape, d)
        except (OSError, KeyError, ValueError) as e:
            log.warning("%s is unreadable (%s); recomputing it from the training split", path, e)
    log.info("data moments: one pass over the training split (D = %d)", d)
    mean, cov = component_moments(config.data, basis)
    if path and jax.process_index() == 0:
        tmp = path + ".tmp.npz"
        np.savez(tmp, mean=mean, cov=cov)
        os.replace(tmp, path)
    return mean, cov


def sampling_model(model, config, workdir: str | None, solver: str,
                   field: str = "config.sample.solver"):
    """`model` ready for `solver`: the full-covariance samplers (`gaussian_flow.SAMPLERS`)
    get the data moments (`fit_or_load_moments`); the others take the model as it is."""
    if solver not in gaussian_flow.SAMPLERS:
        return model
    gaussian_flow.check_dim(solver, model.basis.dim, field)
    return model.with_moments(*fit_or_load_moments(config, workdir, model.basis))


# ------------------------------------------------------------------ the run
def build(config, workdir: str) -> Run:
    """Everything a run needs: mesh, basis, schedule, model, optimiser, state, checkpointer."""
    validate_config(config)
    mesh = make_mesh()
    basis = fit_or_load_basis(config, workdir)
    if jax.process_count() > 1:  # every process trains with process 0's basis, bit for bit
        from jax.experimental import multihost_utils

        basis = multihost_utils.broadcast_one_to_all(basis)
    # end points checked at the defaults and at every corner of the trained family range
    schedule = schedules.schedule_from_config(
        config.schedule, basis, family=dict(config.get("family", {}))
    )
    if any_paths_options(config) is not None and not paths.has_common_end_points(schedule):
        raise ValueError(
            f"config.train.paths='any' needs a schedule with common end points; "
            f"config.schedule.name={config.schedule.name!r} has none: use clip=True with a "
            "linear family, or 'autoregressive'"
        )
    root = jax.random.PRNGKey(config.seed)
    graphdef, params = create_model(
        config.model,
        image_shape=basis.shape,
        num_groups=basis.num_groups,
        rng=jax.random.fold_in(root, 1),
    )
    tx = step.make_optimizer(config.optim, config.train.num_steps)
    state = step.init_train_state(params, tx)
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.train.keep_checkpoints,
        async_save=True,
    )
    return Run(mesh, basis, schedule, graphdef, tx, state, ckpt, root)


def restore_state(ckpt: Checkpointer, state: dict, mesh):
    """Restore the newest readable checkpoint into `state`'s structure (or return None)."""
    sharding = replicated(mesh)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
    )
    return ckpt.restore(abstract)
