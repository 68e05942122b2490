"""Training loop and IO: `train_and_evaluate(config, workdir)`.

The workdir is the run's identity: starting a run in a workdir that holds checkpoints
resumes it at the saved step, with the same data order continuation (batches are a pure
function of (seed, process, step)) and the same randomness (rng = fold_in(root, step)).
What a run is made of (config checks, basis, model, optimiser, checkpointer) comes from
`gudjax.experiment.build`; multi-process start-up from `gudjax.distributed`. This module
owns the loop: pre-emption, metrics, checkpoint cadence, sample grids and report files.
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

import gudjax
from gudjax import generation, input_pipeline, plotting, step
from gudjax.distributed import TrainingError, maybe_initialize_distributed
from gudjax.experiment import (
    any_paths_options,
    build,
    check_config_change,
    restore_state,
    sampling_model,
)
from gudjax.models import count_params
from gudjax.runtime import make_mesh, replicate, shard_batch
from gudjax.score_model import network_model
from gudjax.sweeps import family_member
from gudjax.workdir import hold as hold_workdir

log = logging.getLogger("gudjax")

__all__ = [
    "TrainingError",
    "family_member",
    "make_mesh",
    "maybe_initialize_distributed",
    "replicate",
    "report_files",
    "shard_batch",
    "train_and_evaluate",
    "write_samples",
]


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
    """Metrics as JSONL + TensorBoard event files; only process 0 writes.

    One row per logged step. A run resumed at step `start` > 0 opens a new event file with
    purge_step=start + 1: TensorBoard then discards the earlier files' events of steps
    > start, which the killed run logged after its last checkpoint and this run logs again
    (metrics.jsonl is trimmed to steps <= start for the same reason, `_trim_metrics`).
    """

    def __init__(self, workdir: str, start: int = 0):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if self.active:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(
                    os.path.join(workdir, "tb"), purge_step=start + 1 if start else None
                )
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

    def flush(self) -> None:
        """Put the queued TensorBoard events on disk (before a checkpoint: so that after a
        kill the events up to the checkpoint's step are there, and later ones are purged)."""
        if self.tb is not None:
            self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()


def train_and_evaluate(config, workdir: str) -> dict:
    """Train (or resume) the run in `workdir`; returns a summary dict.

    The run owns the workdir while it trains (`gudjax.workdir.hold`, mode "train"): a
    second writer is refused with `WorkdirLocked`.
    """
    maybe_initialize_distributed()
    with hold_workdir(workdir, "train"):
        return _train(config, workdir)


def _train(config, workdir: str) -> dict:
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
    run = build(config, workdir)
    mesh, basis, schedule, graphdef = run.mesh, run.basis, run.schedule, run.graphdef
    state, ckpt = run.state, run.ckpt
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
    basis_r, schedule_r, root_r = replicate((basis, schedule, run.root), mesh)
    levels = input_pipeline.levels(config.data)  # x = 2(l + ½)/L − 1 at the data's own L
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
        tx=run.tx,
        family_ranges=dict(config.get("family", {})),
        weighting=config.train.loss_weighting,
        ema_decay=config.optim.ema_decay,
        any_paths=any_paths_options(config),
    )
    num_steps = config.train.num_steps
    writer = _Writer(workdir, start)
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

    def flush(extra: dict | None = None) -> float | None:
        """Fetch queued metrics, fail on non-finite loss, write them (`extra` joins the row
        of the newest step); returns the last loss."""
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
            if extra and s == pending[-1][0]:
                m = {**m, **extra}
            if s % config.train.log_every == 0 or s == num_steps:
                writer.write(s, m)
            last = float(m["loss"])
        pending = []
        return last

    def save(s: int) -> None:
        nonlocal last_saved
        flush()
        writer.flush()
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
                batch = input_pipeline.to_model_input(next(batches), levels=levels)
                state, metrics = train_step(
                    state, basis_r, schedule_r, shard_batch(batch, mesh), root_r
                )
                pending.append((s, metrics))
                if block_every_step:
                    metrics["loss"].block_until_ready()
                steps_since += 1
                if s % config.train.log_every == 0 or s == num_steps:
                    jax.block_until_ready(metrics)  # the rate counts finished steps
                    rate = steps_since / max(time.time() - t_last, 1e-9)
                    last_loss = flush({"steps_per_sec": rate})
                    t_last, steps_since = time.time(), 0
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
                        workdir,
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


def write_samples(
    config, graphdef, params, basis, schedule, path: str, seed_step: int, workdir=None
) -> str:
    """A grid of config.sample.num samples of the EMA `params` (`generation.generate`, one
    batch over the local devices, rng = PRNGKey(seed_step)). `workdir` holds the data
    moments of the full-covariance samplers (`experiment.sampling_model`)."""
    sample_cfg = config.get("sample", ml_collections.ConfigDict())
    num = int(sample_cfg.get("num", 64))
    solver = sample_cfg.get("solver", "sde")
    model = network_model(graphdef, params, basis, schedule, family_member(config))
    images = generation.generate(
        sampling_model(model, config, workdir, solver),
        num,
        rng=jax.random.PRNGKey(seed_step),
        solver=solver,
        steps=int(sample_cfg.get("steps", 250)),
        batch_size=num,
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
        workdir,
    )
    out["loss_plot"] = plotting.plot_loss(
        os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "loss.png")
    )
    fam = {k: jnp.asarray(v) for k, v in family_member(config).items()}
    out["gamma_plot"] = plotting.plot_gamma(
        result["schedule"], fam or None, os.path.join(workdir, "gamma.png")
    )
    return out
