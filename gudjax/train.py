"""Training loop and IO: `train_and_evaluate(config, workdir)`.

The workdir is the run's identity (STYLE rule 6): starting a run in a workdir that holds
checkpoints resumes it at the saved step, with the same data order continuation
(batches are a pure function of (seed, process, step)) and the same randomness
(rng = fold_in(root, step)). The basis statistics are fitted once from the training split
and stored as `basis.npz` in the workdir and inside every checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gudjax
from gudjax import bases, input_pipeline, models, plotting, schedules, step
from gudjax.checkpointing import Checkpointer
from gudjax.models import count_params, create_model

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


class TrainingError(RuntimeError):
    """A user-facing, one-line training failure (non-finite loss, config mismatch)."""


# ------------------------------------------------------------------ distributed setup
#: Environment variables read by `maybe_initialize_distributed` (flags on gudjax.main win).
DIST_ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
    "timeout": "JAX_INIT_TIMEOUT",
}


def _cluster_detected(env) -> bool:
    """A scheduler that jax.distributed.initialize() configures itself (TPU pod, Slurm, MPI)."""
    if env.get("TPU_WORKER_HOSTNAMES", "").count(",") >= 1:
        return True
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        try:
            if int(env.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def _int_setting(value, source: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}={value!r} is not an integer") from None


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Fail with one line (not an abort deep inside XLA) when nothing listens at `address`."""
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise TrainingError(
                    f"cannot reach the JAX coordinator at {address} within {timeout:g} s "
                    f"({e.strerror or e}); start process 0 there first, or check the address, "
                    "the port and the firewall (more time: JAX_INIT_TIMEOUT)"
                ) from None
            time.sleep(0.5)


def _check_port_free(address: str) -> None:
    """Process 0 serves the coordinator on the port of `address` (all interfaces)."""
    import socket

    port = int(address.rpartition(":")[2])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: TIME_WAIT is fine
        try:
            s.bind(("", port))
        except OSError as e:
            raise TrainingError(
                f"process 0 cannot serve the JAX coordinator on port {port} of "
                f"{address} ({e.strerror or e}); pick a free port"
            ) from None


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: int | None = None,
) -> bool:
    """jax.distributed.initialize() only when a multi-process run is asked for.

    Each setting comes from its argument (the gudjax.main flags) or else from the
    environment (`DIST_ENV`: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID,
    JAX_INIT_TIMEOUT, default 300 s). Without them a TPU pod, Slurm or Open MPI job is
    detected by JAX itself. One process (or GUDJAX_NO_DISTRIBUTED=1) initialises nothing.
    Must run before anything touches a JAX device. Returns whether it initialised.
    On CPU the cross-process collectives are gloo (JAX's default,
    `jax_cpu_collectives_implementation`).
    """
    from jax._src import xla_bridge

    env = os.environ
    if jax.distributed.is_initialized() or env.get("GUDJAX_NO_DISTRIBUTED"):
        return False
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
        "timeout": timeout,
    }
    settings, source = {}, {}
    for key, value in given.items():
        if value is None and DIST_ENV[key] in env:
            value, source[key] = env[DIST_ENV[key]], f"${DIST_ENV[key]}"
        else:
            source[key] = f"--{key}"
        settings[key] = value
    n_src = source["num_processes"]
    explicit = any(settings[k] is not None for k in ("coordinator_address", "num_processes"))
    if not explicit:
        if not _cluster_detected(env):
            return False
        if xla_bridge.backends_are_initialized():
            raise TrainingError(_TOO_LATE)
        jax.distributed.initialize()
        return True
    if settings["num_processes"] is None:
        raise ValueError(
            f"{source['coordinator_address']}={settings['coordinator_address']!r} needs the "
            f"number of processes (--num_processes or ${DIST_ENV['num_processes']})"
        )
    num = _int_setting(settings["num_processes"], n_src)
    if num < 1:
        raise ValueError(f"{n_src}={num} must be >= 1")
    if num == 1:
        return False
    address = settings["coordinator_address"]
    if not address or ":" not in str(address) or not str(address).rpartition(":")[2].isdigit():
        raise ValueError(
            f"{source['coordinator_address']}={address!r} must be HOST:PORT of process 0 "
            f"when {n_src}={num}"
        )
    if settings["process_id"] is None:
        raise ValueError(
            f"{n_src}={num} needs the process id in [0, {num}) (--process_id or "
            f"${DIST_ENV['process_id']})"
        )
    pid = _int_setting(settings["process_id"], source["process_id"])
    if not 0 <= pid < num:
        raise ValueError(f"{source['process_id']}={pid} is out of range [0, {num})")
    wait = _int_setting(settings["timeout"] or 300, source["timeout"])
    if pid != 0:
        _wait_for_coordinator(str(address), wait)
    else:
        _check_port_free(str(address))
    if xla_bridge.backends_are_initialized():
        raise TrainingError(_TOO_LATE)
    log.info(
        "jax.distributed: process %d of %d, coordinator %s; waiting up to %d s for all "
        "processes (JAX aborts with DEADLINE_EXCEEDED after that)",
        pid,
        num,
        address,
        wait,
    )
    jax.distributed.initialize(
        coordinator_address=str(address),
        num_processes=num,
        process_id=pid,
        initialization_timeout=wait,
        cluster_detection_method="deactivate",
    )
    return True


_TOO_LATE = (
    "jax.distributed must be initialised before JAX touches a device; call "
    "maybe_initialize_distributed() first thing in the process"
)


def make_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((jax.device_count(),), (step.AXIS,))


def replicate(tree, mesh):
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def shard_batch(local_batch: np.ndarray, mesh) -> jax.Array:
    """Place this process' slice of the global batch on the 'data' axis (multi-host safe)."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P(step.AXIS)), local_batch)


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
    if sched not in schedules.SCHEDULES:
        raise ValueError(
            f"unknown config.schedule.name '{sched}'; allowed: {', '.join(schedules.SCHEDULES)}"
        )
    allowed = schedules.FAMILY_PARAMS[sched]
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
    if config.train.loss_weighting not in ("unweighted", "elbo"):
        raise ValueError(
            f"unknown config.train.loss_weighting '{config.train.loss_weighting}'; "
            "allowed: unweighted, elbo"
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


def check_config_change(config, workdir: str) -> None:
    """Refuse to continue a run whose stored config differs (unless allow_config_change)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path) or config.get("allow_config_change", False):
        return
    with open(path) as f:
        old = _flatten(json.load(f))
    new = _flatten(json.loads(config.to_json_best_effort()))
    diffs = [
        k
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
        and not any(k == m or k.startswith(m + ".") for m in MUTABLE_FIELDS)
    ]
    if diffs:
        k = diffs[0]
        raise TrainingError(
            f"workdir {workdir} holds a run with a different config ({k}: {old.get(k)!r} → "
            f"{new.get(k)!r}{' and more' if len(diffs) > 1 else ''}); use a fresh --workdir or "
            "pass --config.allow_config_change=True"
        )


def family_member(config, overrides: dict | None = None) -> dict:
    """The family parameters used for sampling/evaluation: config.schedule defaults
    overridden by config.sample (e.g. --config.sample.a=1.2) and `overrides`."""
    names = schedules.FAMILY_PARAMS[config.schedule.name]
    out = {k: float(config.schedule[k]) for k in names if k in config.schedule}
    sample_cfg = config.get("sample", ml_collections.ConfigDict())
    for k in names:
        if k in sample_cfg and sample_cfg[k] is not None:
            out[k] = float(sample_cfg[k])
    out.update(overrides or {})
    return out


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
    batches = (
        input_pipeline.to_model_input(b)
        for b in input_pipeline.fit_batches(config.data, batch_size=256)
    )
    basis = bases.fit_basis(
        config.basis.name, batches, whiten=bool(config.basis.whiten), **basis_options(config)
    )
    if jax.process_index() == 0:
        bases.save_basis(path, basis)
    return basis


# ------------------------------------------------------------------ generation
def generate(
    graphdef,
    params,
    basis,
    schedule,
    family_params: dict,
    *,
    num: int,
    rng,
    solver: str = "sde",
    num_steps: int = 250,
) -> np.ndarray:
    """Images in [-1, 1], (num, H, W, C), from the reverse SDE or the Heun PF-ODE."""
    from gudjax import sampling

    fam = {k: jnp.asarray(v, jnp.float32) for k, v in family_params.items()} or None
    if solver not in ("sde", "ode"):
        raise ValueError(f"unknown config.sample.solver '{solver}'; allowed: sde, ode")

    @jax.jit
    def run(params, basis, schedule, fam, rng):
        score_fn = step.make_score_fn(graphdef, params, basis, schedule, fam)
        gamma_fn = lambda t: schedule.gamma(t, fam)
        k1, k2 = jax.random.split(rng)
        z1 = jax.random.normal(k1, (num, basis.dim))
        if solver == "sde":
            z0 = sampling.sde_sample(k2, score_fn, gamma_fn, z1, num_steps)
        else:
            z0 = sampling.ode_sample(score_fn, gamma_fn, z1, num_steps)
        return jnp.clip(basis.decode(z0), -1.0, 1.0)

    return np.asarray(run(params, basis, schedule, fam, rng))


# ------------------------------------------------------------------ the loop
class _Preemption:
    """Turns SIGTERM into a flag the loop checks: checkpoint, wait, exit 0.

    Several processes must stop at the same step (checkpointing and every train step
    are collective). There JAX's preemption service (started by jax.distributed) owns
    SIGTERM: a notice to any process makes `reached_preemption_sync_point(step)` true on
    every process at the same step, so `stop(step)` is consistent across processes.
    """

    def __init__(self):
        self.requested = False
        self._old = None
        self._multi = jax.process_count() > 1 and jax.config.jax_enable_preemption_service
        self.reason = "pre-emption notice (SIGTERM to a process)" if self._multi else "SIGTERM"

    def __enter__(self):
        if self._multi:
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def stop(self, step_: int) -> bool:
        """Whether to checkpoint and leave after `step_` (called once per step)."""
        if self._multi:
            from jax.experimental import multihost_utils

            self.requested = multihost_utils.reached_preemption_sync_point(step_)
        return self.requested

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class _Writer:
    """Metrics as JSONL + TensorBoard event files; only process 0 writes."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if self.active:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(os.path.join(workdir, "tb"))
            except Exception as e:  # pragma: no cover - optional
                log.warning("TensorBoard writer unavailable: %s", e)

    def write(self, step_: int, scalars: dict) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(
                json.dumps({"step": int(step_), **{k: float(v) for k, v in scalars.items()}}) + "\n"
            )
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, float(v), int(step_))

    def close(self):
        if self.tb is not None:
            self.tb.close()


def build(config, workdir: str):
    """Everything a run needs: mesh, basis, schedule, model, optimiser, data, checkpointer."""
    validate_config(config)
    mesh = make_mesh()
    basis = fit_or_load_basis(config, workdir)
    if jax.process_count() > 1:  # every process trains with process 0's basis, bit for bit
        from jax.experimental import multihost_utils

        basis = multihost_utils.broadcast_one_to_all(basis)
    schedule = schedules.schedule_from_config(config.schedule, basis)
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
    return mesh, basis, schedule, graphdef, tx, state, ckpt, root


def restore_state(ckpt: Checkpointer, state: dict, mesh):
    """Restore the newest readable checkpoint into `state`'s structure (or return None)."""
    sharding = NamedSharding(mesh, P())
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
    )
    return ckpt.restore(abstract)


def train_and_evaluate(config, workdir: str) -> dict:
    """Train (or resume) the run in `workdir`; returns a summary dict."""
    maybe_initialize_distributed()
    os.makedirs(workdir, exist_ok=True)
    check_config_change(config, workdir)
    is_main = jax.process_index() == 0
    log.info(
        "gudjax %s | process %d/%d | %d local / %d global devices (%s) | workdir %s",
        gudjax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
        workdir,
    )
    mesh, basis, schedule, graphdef, tx, state, ckpt, root = build(config, workdir)
    try:
        restored = restore_state(ckpt, state, mesh)
    except Exception:
        ckpt.close()
        raise
    start = 0
    if restored is not None:
        start, state, _ = restored
        log.info("resumed from checkpoint at step %d", start)
    if is_main:  # only once the run can start: a refused start leaves the workdir as it was
        _write_atomic(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
        _trim_metrics(os.path.join(workdir, "metrics.jsonl"), start)
    state = replicate(state, mesh)
    basis_r, schedule_r, root_r = replicate((basis, schedule, root), mesh)
    data = input_pipeline.TrainData(
        config.data,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    train_step = step.make_sharded_train_step(
        mesh,
        graphdef=graphdef,
        tx=tx,
        family_ranges=dict(config.get("family", {})),
        weighting=config.train.loss_weighting,
        ema_decay=config.optim.ema_decay,
    )
    num_steps = config.train.num_steps
    writer = _Writer(workdir)
    sample_dir = os.path.join(workdir, "samples")
    os.makedirs(sample_dir, exist_ok=True)
    meta = {"config": json.loads(config.to_json_best_effort()), "gudjax": gudjax.__version__}
    log.info("model: %s parameters", f"{count_params(state['params']):,}")

    # Several CPU processes (gloo collectives) with many steps queued can deadlock
    # (seen with jax 0.10.2 and >= 2 devices per process): wait for each step there.
    block_every_step = jax.process_count() > 1 and jax.devices()[0].platform == "cpu"
    pending: list[tuple[int, dict]] = []
    last_saved = start if restored is not None else None
    t_last, steps_since = time.time(), 0

    def flush() -> float | None:
        """Fetch queued metrics, fail on non-finite loss, write them; returns last loss."""
        nonlocal pending
        last = None
        for s, m in pending:
            m = jax.device_get(m)
            if not (np.isfinite(m["loss"]) and np.isfinite(m["param_norm"])):
                what = "loss" if not np.isfinite(m["loss"]) else "parameters"
                raise TrainingError(
                    f"{what} became non-finite at step {s}; last good checkpoint: "
                    f"{'step ' + str(last_saved) if last_saved is not None else 'none'} (kept). "
                    "Lower config.optim.lr or check the data"
                )
            if s % config.train.log_every == 0 or s == num_steps:
                writer.write(s, m)
            last = float(m["loss"])
        pending = []
        return last

    def save(s: int) -> None:
        nonlocal last_saved
        flush()
        ckpt.save(s, jax.device_get(state), meta=meta)
        last_saved = s

    progress = None
    if is_main and config.train.get("progress", True):
        from tqdm import tqdm

        progress = tqdm(
            total=num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True
        )
    last_loss = None
    s = start
    preempted = False
    # Batch s - 1 feeds step s; a thread reads ahead while the step runs (same batches).
    batches = data.iter_from(start, prefetch=config.data.prefetch)
    try:
        with _Preemption() as pre:
            for s in range(start + 1, num_steps + 1):
                batch = input_pipeline.to_model_input(next(batches))
                state, metrics = train_step(
                    state, basis_r, schedule_r, shard_batch(batch, mesh), root_r
                )
                pending.append((s, metrics))
                if block_every_step:
                    metrics["loss"].block_until_ready()
                steps_since += 1
                if s % config.train.log_every == 0 or s == num_steps:
                    last_loss = flush()
                    now = time.time()
                    rate = steps_since / max(now - t_last, 1e-9)
                    t_last, steps_since = now, 0
                    writer.write(s, {"steps_per_sec": rate})
                    if progress is not None:
                        progress.set_postfix(loss=f"{last_loss:.4f}", steps_s=f"{rate:.2f}")
                if progress is not None:
                    progress.update(1)
                if s % config.train.checkpoint_every == 0 or s == num_steps:
                    save(s)
                if config.train.sample_every and s % config.train.sample_every == 0 and is_main:
                    # host copy: a jit over the global (all-process) array would wait
                    # for the other processes, which do not sample
                    ema = jax.device_get(state["ema_params"])
                    write_samples(
                        config,
                        graphdef,
                        ema,
                        basis,
                        schedule,
                        os.path.join(sample_dir, f"samples_{s:07d}.png"),
                        s,
                    )
                if pre.stop(s):
                    log.warning("%s: checkpointing step %d and exiting", pre.reason, s)
                    if last_saved != s:
                        save(s)
                    preempted = True
                    break
    finally:
        batches.close()
        if progress is not None:
            progress.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    last_loss = flush() or last_loss
    return {
        "step": s,
        "loss": last_loss,
        "workdir": workdir,
        "basis": basis,
        "schedule": schedule,
        "graphdef": graphdef,
        "state": state,
        "preempted": preempted,
    }


def _write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` via a temp file and a rename: a kill never leaves half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _trim_metrics(path: str, start: int) -> None:
    """Keep the metrics.jsonl rows of steps <= `start` (the step training resumes from).

    A run killed after its last checkpoint logged steps that the resumed run recomputes
    (bit for bit) and logs again; without this they would appear twice. A line cut short
    by the kill is dropped too (it would break every reader of the file).
    """
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                if int(row["step"]) <= start:
                    keep.append(line.rstrip("\n") + "\n")
            except (ValueError, KeyError, TypeError):
                continue
    _write_atomic(path, "".join(keep))


def write_samples(config, graphdef, params, basis, schedule, path: str, seed_step: int) -> str:
    sample_cfg = config.get("sample", ml_collections.ConfigDict())
    images = generate(
        graphdef,
        params,
        basis,
        schedule,
        family_member(config),
        num=int(sample_cfg.get("num", 64)),
        rng=jax.random.PRNGKey(seed_step),
        solver=sample_cfg.get("solver", "sde"),
        num_steps=int(sample_cfg.get("steps", 250)),
    )
    plotting.save_image_grid(images, path)
    return path


def report_files(config, workdir: str, result: dict) -> dict[str, str]:
    """Final sample grid, loss curve and γ(t) plot of a finished run."""
    state = result["state"]
    out = {}
    out["samples"] = write_samples(
        config,
        result["graphdef"],
        jax.device_get(state["ema_params"]),
        result["basis"],
        result["schedule"],
        os.path.join(workdir, "samples.png"),
        10**6 + int(result["step"]),
    )
    out["loss_plot"] = plotting.plot_loss(
        os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "loss.png")
    )
    fam = {k: jnp.asarray(v) for k, v in family_member(config).items()}
    out["gamma_plot"] = plotting.plot_gamma(
        result["schedule"], fam or None, os.path.join(workdir, "gamma.png")
    )
    return out
