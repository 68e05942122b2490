"""Where arrays live: the one module that places arrays on devices for the application layer.

Everything runs data parallel on a 1-D mesh with the axis "data" (`step.AXIS`):
`make_mesh()` spans every device of every process (training), `batch_mesh()` the local
devices of this process (sampling, NLL, features). Models, bases and schedules are
replicated (`replicate`), batches split on their leading axis (`row_sharding`,
`shard_rows`, and `shard_batch` for a process' slice of a global training batch).

Batched work over many images goes through ONE loop, `padded_chunks`: rows in chunks of a
fixed size, the last chunk padded (`pad_rows`) so every chunk shares one compilation, and
the chunk size rounded up to a multiple of the device count (`padded_size`).

Per-example work that runs on every device (sampling, NLL) runs PER DEVICE with
`jax.shard_map` (`per_device`: the model pytree replicated, P(), the rows split, P("data")),
so each device solves its own rows (an adaptive ODE solve picks its own step sizes) and no
device waits for another. Randomness does not depend on the device count: noise is drawn
with the GLOBAL batch shape and each device takes its own slice (`global_draw`), which is
how the training step draws its noise too (docs/maths.md §6, §7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gudjax.step import AXIS

Array = Any
PAD_MODES = ("first", "zeros")


# ------------------------------------------------------------------ meshes
def make_mesh() -> jax.sharding.Mesh:
    """1-D mesh over every device of every process, axis "data" (training)."""
    return jax.make_mesh((jax.device_count(),), (AXIS,))


def batch_mesh(devices: Sequence | None = None) -> jax.sharding.Mesh:
    """1-D mesh over the local devices (default: all of them), axis "data"."""
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def num_devices(mesh: jax.sharding.Mesh) -> int:
    return int(mesh.devices.size)


# ------------------------------------------------------------------ placement
def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def row_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh, other axes whole; valid for any rank."""
    return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh: jax.sharding.Mesh):
    """Every leaf copied to every device of the mesh (parameters, basis, schedule, keys)."""
    return jax.device_put(tree, replicated(mesh))


def shard_rows(x, mesh: jax.sharding.Mesh):
    """A host array (n, ...) of this process split on its rows over a local mesh."""
    return jax.device_put(x, row_sharding(mesh))


def shard_batch(local_batch: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
    """This process' slice of the global batch placed on the "data" axis (multi-host safe)."""
    return jax.make_array_from_process_local_data(row_sharding(mesh), local_batch)


def on_first_device(tree):
    """Host copy placed on this process' first device: replicated checkpoint arrays would
    make a jit run once per device; the batched paths re-place it on their own mesh."""
    return jax.device_put(jax.device_get(tree), jax.local_devices()[0])


# ------------------------------------------------------------------ padding and chunks
def padded_size(n: int, mesh: jax.sharding.Mesh | None) -> int:
    """n rounded up to a multiple of the number of devices in the mesh (n with None)."""
    k = 1 if mesh is None else num_devices(mesh)
    return -(-int(n) // k) * k


def pad_rows(x: np.ndarray, size: int, mode: str = "first") -> np.ndarray:
    """x (n, ...) padded to (size, ...): repeats of row 0 ('first') or zeros ('zeros')."""
    if mode not in PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}; allowed: {', '.join(PAD_MODES)}")
    x = np.asarray(x)
    m = size - x.shape[0]
    if m <= 0:
        return x
    fill = np.repeat(x[:1], m, axis=0) if mode == "first" else np.zeros((m, *x.shape[1:]), x.dtype)
    return np.concatenate([x, fill])


class Chunk(NamedTuple):
    """One chunk of `padded_chunks`: its index, first row, real row count, padded size and
    the chunk of every input array (padded; placed row-sharded when a mesh is given)."""

    index: int
    start: int
    num_real: int
    size: int
    arrays: tuple


def padded_chunks(
    num: int,
    batch_size: int,
    arrays: Sequence = (),
    *,
    mesh: jax.sharding.Mesh | None = None,
    pad: str = "first",
) -> Iterator[Chunk]:
    """THE chunk loop: rows 0..num−1 in chunks of `batch_size` rows (the last one padded).

    Every chunk has the same `size` = `padded_size(batch_size, mesh)` rows, so a jitted
    function compiles once. Each array of `arrays` ((num, ...) host arrays; an entry None
    passes through) is cut and padded with `pad_rows(…, mode=pad)`; with a mesh it is
    placed row-sharded over it. Callers keep the first `num_real` rows of each result.
    """
    num, bs = int(num), max(1, int(batch_size))
    size = padded_size(bs, mesh)
    for i, lo in enumerate(range(0, num, bs)):
        m = min(bs, num - lo)
        parts = []
        for a in arrays:
            if a is not None:
                a = pad_rows(np.asarray(a)[lo : lo + m], size, pad)
                if mesh is not None:
                    a = shard_rows(a, mesh)
            parts.append(a)
        yield Chunk(i, lo, m, size, tuple(parts))


def map_padded_chunks(
    fn: Callable, x, batch_size: int, *, mesh=None, pad: str = "zeros", out_dim: int = 0
) -> np.ndarray:
    """fn(chunk) over x (N, ...) float32 through `padded_chunks`; returns the (N, ...)
    float64 results with the padding rows dropped ((0, out_dim) for N = 0)."""
    x = np.asarray(x, np.float32)
    out = [
        np.asarray(fn(c.arrays[0]))[: c.num_real]
        for c in padded_chunks(len(x), batch_size, (x,), mesh=mesh, pad=pad)
    ]
    if not out:
        return np.zeros((0, out_dim))
    return np.concatenate(out).astype(np.float64)


# ------------------------------------------------------------------ per-device work
def per_device(fn: Callable, mesh: jax.sharding.Mesh, in_specs, out_specs) -> Callable:
    """fn mapped over the devices of `mesh` with `jax.shard_map` (call it inside jit).

    Specs: P() for replicated inputs (the model pytree, keys), P("data") (`ROWS`) for
    inputs split on their leading axis. Inside, `lax.axis_index("data")` is the device's
    position and `global_draw` draws device-count independent randomness.
    """
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


ROWS = P(AXIS)
WHOLE = P()


def global_draw(draw: Callable, key, local_shape, dtype, *, axis: int = 0) -> Array:
    """This device's slice of `draw(key, global_shape, dtype)` inside `per_device`.

    The global shape is `local_shape` with its `axis` multiplied by the device count, and
    the device takes the block at its index: the values equal those of one device drawing
    the whole batch (JAX's partitionable threefry), whatever the number of devices.
    """
    local_shape = tuple(local_shape)
    b = local_shape[axis]
    n = lax.axis_size(AXIS)
    full = draw(key, (*local_shape[:axis], b * n, *local_shape[axis + 1 :]), dtype)
    return lax.dynamic_slice_in_dim(full, lax.axis_index(AXIS) * b, b, axis=axis)
