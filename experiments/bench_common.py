"""Timing, compile and reporting helpers shared by the benchmarks (bench, bench_maths, bench_eval).

Conventions: every figure is a median over `repeats` timed calls after `warmup` untimed
ones, outputs blocked on (`jax.block_until_ready`), wall clock (`time.perf_counter`).
Compile times come from ahead-of-time compilation, `jitted.lower(...).compile()`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np


def median_seconds(fn: Callable, *args, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn(*args) (outputs blocked on), after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(
    calls: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of each zero-argument call, timed round-robin (A B C A B C …).

    On a shared machine the load drifts; interleaving puts every case under the same drift,
    so ratios between cases measured here are fairer than timings taken one after another.
    """
    for _ in range(warmup):
        for fn in calls.values():
            jax.block_until_ready(fn())
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def aot_compile(jitted, *args, **static):
    """(compile seconds, the compiled executable) of a jitted function for these arguments."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    return time.perf_counter() - t0, compiled


def timed_lower_compile(jitted, *args, **static) -> tuple[float, float, object]:
    """(trace+lower seconds, XLA compile seconds, compiled executable)."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **static)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return t1 - t0, time.perf_counter() - t1, compiled


def timed(compiled, *args):
    """(seconds of one call, outputs fetched to the host) of a compiled executable."""
    t0 = time.perf_counter()
    out = jax.device_get(compiled(*args))
    return time.perf_counter() - t0, out


def flops_of(compiled) -> float:
    """FLOPs of one call from XLA's cost analysis of a compiled executable (nan if absent)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, Sequence) and not isinstance(cost, dict):  # older JAX: list per module
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", math.nan))


def matmul_flops_per_s(n: int, *, repeats: int, dtype="float32") -> dict:
    """Dense n×n @ n×n matmul throughput (2n³ FLOPs per call), the machine's reference."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    mm = jax.jit(lambda a, b: a @ b)
    t = median_seconds(mm, a, b, repeats=repeats)
    return {"n": n, "dtype": str(dtype), "seconds": t, "flops_per_s": 2.0 * n**3 / t}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: VmHWM of /proc/self/status (reset by execve; ru_maxrss is not, so a subprocess
    forked from a big parent would report the parent's peak). Elsewhere: ru_maxrss.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def machine_info() -> dict:
    """Where the numbers were taken: devices, JAX version, host CPU, load."""
    dev = jax.devices()[0]
    info = {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        pass
    return info


def random_images(n: int, shape, seed: int = 0, axes: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Smooth random images in [−1, 1]: uniform noise averaged with its neighbour along `axes`
    (image axes 1 = rows, 2 = columns), so neighbouring pixels are correlated."""
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, *shape))
    for ax in axes:
        x = 0.5 * (x + np.roll(x, 1, axis=ax))
    return x.astype(np.float32)


def write_json(path: str | None, result: dict) -> None:
    """Write `result` to `path` (no-op for None); numpy scalars become Python numbers."""
    if not path:
        return

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=default)
