"""Multi-host training: 2 processes × 4 CPU devices equal 1 process × 8 devices.

The same `python -m gudjax.main` command runs as two jax.distributed processes on
127.0.0.1 (gloo collectives) and as one process; after a few steps of the tiny digits
config their checkpoints must agree. Every child runs under `timeout -k` in its own
process group, and the group is SIGKILLed in a `finally` (a process ignores SIGTERM once
jax.distributed is up), so a hang costs at most `CHILD_TIMEOUT_S`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import FAST_COMPILE_XLA_FLAGS

from gudjax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_TIMEOUT_S = 600
NUM_STEPS = 4

# The tiny runlocal digits run: a one-level U-Net without attention blocks keeps the
# compile (the bulk of the cost on 2 cores) short; 4 steps, checkpoints at 2 and 4.
TINY = {
    "batch_size": 16,
    "model.ch": 8,
    "model.ch_mult": "(1,)",
    "model.attn_resolutions": "()",
    "model.cross_attn_resolutions": "()",
    "model.token_dim": 16,
    "model.num_heads": 2,
    "model.dropout": 0.0,
    "optim.decay": "constant",
    "optim.warmup_steps": 2,
    "train.num_steps": NUM_STEPS,
    "train.log_every": 1,
    "train.checkpoint_every": 2,
    "train.progress": False,
    "sample.num": 4,
    "sample.steps": 5,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(workdir, data_dir, dist_flags=()) -> list[str]:
    overrides = [f"--config.{k}={v}" for k, v in TINY.items()]
    return [
        "timeout", "-k", "10", str(CHILD_TIMEOUT_S),
        sys.executable, "-m", "gudjax.main", "--config=configs/digits_haar.py:runlocal",
        f"--config.data.data_dir={data_dir}", *overrides, f"--workdir={workdir}", *dist_flags,
    ]  # fmt: skip


def _env(num_devices: int) -> dict:
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices} {FAST_COMPILE_XLA_FLAGS}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(var, None)
    return env


def _run_all(jobs, log_dir, timeout_s) -> list[tuple[int, str]]:
    """Start every (name, command, env) at once; wait for all; always kill the groups."""
    procs = []
    try:
        for name, cmd, env in jobs:
            log = open(os.path.join(log_dir, f"{name}.log"), "w")
            procs.append((name, log, subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )))  # fmt: skip
        deadline = time.monotonic() + timeout_s
        for name, _, p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {timeout_s} s; log: {log_dir}/{name}.log")
    finally:
        for _, log, p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)
            log.close()
    out = []
    for name, _, p in procs:
        with open(os.path.join(log_dir, f"{name}.log")) as f:
            out.append((p.returncode, f.read()))
    return out


def _restore_state(workdir: str, step: int) -> dict:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ck:  # numpy leaves, no devices involved
        return ck.restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def _losses(workdir: str) -> dict[int, float]:
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, NUM_STEPS + 1)), steps  # once per step: one writer
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
def test_two_processes_equal_one_process_with_eight_devices(tmp_path):
    import jax

    data_dir, multi, single = tmp_path / "tfds", tmp_path / "multi", tmp_path / "single"
    port = _free_port()
    jobs = [
        (
            f"proc{i}",
            _command(multi, data_dir, [f"--coordinator_address=127.0.0.1:{port}",
                                       "--num_processes=2", f"--process_id={i}"]),
            _env(4),
        )
        for i in range(2)
    ]  # fmt: skip
    jobs.append(("single", _command(single, data_dir), _env(8)))
    t0 = time.monotonic()
    results = _run_all(jobs, tmp_path, CHILD_TIMEOUT_S + 30)
    wall = time.monotonic() - t0
    for (name, _, _), (rc, log) in zip(jobs, results, strict=True):
        assert rc == 0, f"{name} exited {rc} after {wall:.0f} s:\n{log[-3000:]}"
    assert "process 0/2 | 4 local / 8 global devices (cpu)" in results[0][1]
    assert "process 1/2 | 4 local / 8 global devices (cpu)" in results[1][1]
    assert "process 0/1 | 8 local / 8 global devices (cpu)" in results[2][1]
    # only process 0 writes metrics, plots and samples
    assert "final loss" in results[0][1] and "final loss" not in results[1][1]
    assert (multi / "samples.png").exists() and (multi / "loss.png").exists()

    # Same data, same noise, same updates. Not bit for bit: the gradient psum adds the
    # 8 per-device gradients in a different order over gloo (2 processes) than inside
    # one process, so float32 sums differ in the last bits (measured: losses to 1e-7
    # relative, parameters to <1e-7 absolute after 4 steps). Each Adam step moves every
    # parameter by about lr = 1e-3, so atol 1e-6 still catches any wrong batch slice,
    # noise draw or step (those differ by ~1e-3).
    l_multi, l_single = _losses(str(multi)), _losses(str(single))
    np.testing.assert_allclose(list(l_multi.values()), list(l_single.values()), rtol=1e-5)
    a, b = _restore_state(str(multi), NUM_STEPS), _restore_state(str(single), NUM_STEPS)
    assert int(a["step"]) == int(b["step"]) == NUM_STEPS
    for key in ("params", "ema_params", "opt_state"):
        leaves_a, leaves_b = jax.tree.leaves(a[key]), jax.tree.leaves(b[key])
        assert len(leaves_a) == len(leaves_b) > 0
        for x, y in zip(leaves_a, leaves_b, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=key)
    # ... and the comparison is not vacuous: training moved the parameters
    start = _restore_state(str(single), 2)["params"]
    moved = max(
        float(np.max(np.abs(x - y)))
        for x, y in zip(jax.tree.leaves(b["params"]), jax.tree.leaves(start), strict=True)
    )
    assert moved > 1e-4, moved


def test_process_id_out_of_range_is_one_line():
    with pytest.raises(ValueError, match=r"--process_id=2 is out of range \[0, 2\)") as e:
        distributed.maybe_initialize_distributed("127.0.0.1:1234", 2, 2)
    assert "\n" not in str(e.value)


def test_missing_settings_are_one_line(monkeypatch):
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match="needs the number of processes"):
        distributed.maybe_initialize_distributed("127.0.0.1:1234", None, 0)
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        distributed.maybe_initialize_distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"needs the process id in \[0, 2\)"):
        distributed.maybe_initialize_distributed("127.0.0.1:1234", 2, None)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES='two' is not an integer"):
        distributed.maybe_initialize_distributed("127.0.0.1:1234", None, 0)


def test_single_process_initialises_nothing(monkeypatch):
    for var in distributed.DIST_ENV.values():
        monkeypatch.delenv(var, raising=False)
    assert distributed.maybe_initialize_distributed() is False
    assert distributed.maybe_initialize_distributed(num_processes=1) is False


def test_unreachable_coordinator_is_one_line_naming_the_address():
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(distributed.TrainingError) as e:
        distributed.maybe_initialize_distributed(f"127.0.0.1:{port}", 2, 1, timeout=2)
    msg = str(e.value)
    assert f"cannot reach the JAX coordinator at 127.0.0.1:{port} within 2 s" in msg
    assert "\n" not in msg and time.monotonic() - t0 < 15


def test_coordinator_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        match = f"cannot serve the JAX coordinator on port {port}"
        with pytest.raises(distributed.TrainingError, match=match):
            distributed.maybe_initialize_distributed(f"127.0.0.1:{port}", 2, 0)
