"""Multi-process start-up: `maybe_initialize_distributed` (jax.distributed, when asked for).

Runs first thing in a training process, before anything touches a JAX device. Settings come
from the gudjax.main flags or the JAX_* environment variables (`DIST_ENV`); a TPU pod, Slurm
or Open MPI job is detected by JAX itself. Failures a user can cause (nothing listening at
the coordinator, a busy port, a bad process id) are one-line errors.
"""

from __future__ import annotations

import logging
import os
import time

import jax

log = logging.getLogger("gudjax")


class TrainingError(RuntimeError):
    """A user-facing, one-line training failure (non-finite loss, config mismatch, start-up)."""


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
