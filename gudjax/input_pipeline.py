"""Input pipeline: TFDS ArrayRecord sources read by random access with grain, no TensorFlow.

Images travel as uint8 (B, H, W, C) arrays; `to_model_input` turns them into the model's
float32 data space x ∈ [-1, 1] (docs/maths.md §1.1) at the data set's own number of levels L
(`levels(config.data)`): level l = round(k·(L − 1)/255) (`to_levels`; l = k for L = 256) and
x = 2(l + u)/L − 1 with u = 0.5 ("center": training, sampling) or u ~ U[0, 1) ("uniform"
dequantisation, for likelihoods). The registry, the sources and the validation split live in
`gudjax.datasets.sources` (re-exported here).

Data sets (`DATASETS`, with their levels L):
  digits          (L = 17) scikit-learn's 8×8×1 digits (`gudjax.datasets.digits`), prepared offline
                  automatically on first use (it ships inside scikit-learn).
  photo_patches   32×32×3 tiles of scikit-image's bundled colour photos
                  (`gudjax.datasets.photo_patches`), train 3451 / test 685, prepared offline
                  automatically: the stand-in for cifar10 / patch_camelyon in `runlocal`.
  cifar10         TFDS `cifar10`, 32×32×3, train 50000 / test 10000.
  patch_camelyon  TFDS `patch_camelyon`, 96×96×3 (use image_size 32: 3×3 area average).
cifar10 and patch_camelyon must be prepared beforehand in ArrayRecord format (the only TFDS
format with random access that needs no TensorFlow to read):
  tfds build cifar10 --file_format=array_record --data_dir=DIR
(`tfds build` itself imports TensorFlow, so run it once where TensorFlow is installed).
Nothing here ever downloads: a missing data set raises `DatasetNotFoundError` at once.

Data directory (`config.data.data_dir`): when None, digits and photo_patches use
`$GUDJAX_DATA_DIR` or `~/tensorflow_datasets`; the TFDS data sets use the TFDS default
(`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).

Training order (`TrainData`), deterministic and resumable without any iterator state:
the training stream is the infinite sequence of example indices
  grain.MapDataset.range(N).shuffle(seed=s).repeat(None)
(grain's Feistel index shuffle, reseeded every epoch, so each epoch has its own order).
Global batch `step` is stream positions [step·B, (step+1)·B); host p of P reads the
contiguous rows [p·B/P, (p+1)·B/P) of it. `batch(step)` is therefore a pure function of
(seed, process_index, step): a restart at step k sees exactly the batches of an
uninterrupted run, and the union over hosts equals the single-host global batch (a
multi-host run sees the same data as a single-host run). Batches straddle epoch
boundaries. Horizontal flips (`random_flip`) are drawn per (seed, step, row of the
global batch), so they too are identical across restarts and host counts. The decoded
train split is kept in memory when small (`config.data.cache`: None = auto, at most
`CACHE_AUTO_BYTES`; digits and cifar10 yes, patch_camelyon at 32×32 no); this changes
speed only, never the batches.

Evaluation (`eval_batches`) walks a split once in stored order with the same host layout
(global batch size, contiguous rows per host; see its docstring for the short last batch
and the `pad=True` (images, mask) form). `fit_batches` walks the train split once on one
host, for streaming basis statistics.

Resizing: `image_size` must equal the native size or divide it; a smaller size is an
area average over f×f blocks (f = native / image_size), rounded half up to uint8.
"""

from __future__ import annotations

import atexit
import itertools
import queue
import threading
from collections.abc import Iterator

import grain
import numpy as np

from gudjax.config_base import default_data_config
from gudjax.datasets.sources import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    ImageSource,
    _area_downsample,  # noqa: F401  (features reads it)
    image_shape,
    levels,
    load_split,
    resolve_data_dir,
    validation_every,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageSource",
    "TrainData",
    "default_data_config",
    "eval_batches",
    "fit_batches",
    "image_shape",
    "levels",
    "load_split",
    "resolve_data_dir",
    "to_levels",
    "to_model_input",
    "to_uint8",
    "validation_every",
]


# TrainData keeps the decoded train split in memory when it is at most this big (and
# config.data.cache is None): digits (0.1 MB) and cifar10 (150 MB) are cached,
# patch_camelyon at 32×32 (805 MB) is streamed from disk.
CACHE_AUTO_BYTES = 256 * 2**20

# ----------------------------------------------------------------------------------------
# Training batches


def _derived_seed(seed: int, tag: int) -> int:
    """A 32-bit seed for one purpose (`tag`) from the run seed (any int)."""
    seq = np.random.SeedSequence([int(seed) % 2**64, tag])
    return int(seq.generate_state(1, np.uint32)[0])


_SHUFFLE_TAG, _FLIP_TAG = 0x5EED, 0xF11D


# Prefetch threads still running. A daemon thread inside native code (array_record,
# grain) when the interpreter finalises aborts the process ("terminate called without an
# active exception", exit code 134), so an atexit hook stops and joins them first.
_LIVE_WORKERS: set[tuple[threading.Event, threading.Thread]] = set()


@atexit.register
def _stop_live_workers() -> None:
    workers = list(_LIVE_WORKERS)
    for stop, _ in workers:
        stop.set()
    for _, worker in workers:
        worker.join(timeout=30)


class TrainData:
    """Deterministic, resumable, per-host training batches (see the module docstring).

    `batch(step)` → uint8 (local_batch_size, H, W, C), a pure function of
    (seed, process_index, step). `iter_from(step)` yields batch(step), batch(step + 1), …
    with `prefetch` batches prepared ahead on one background thread.
    """

    def __init__(
        self,
        data_config,
        *,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index={process_index} must lie in [0, process_count={process_count})"
            )
        if global_batch_size <= 0 or global_batch_size % process_count:
            raise ValueError(
                f"config.batch_size={global_batch_size} must be a positive multiple of the "
                f"process count {process_count}"
            )
        self.data_config = data_config
        self.source = load_split(data_config, "train")
        self.num_examples = len(self.source)
        self.image_shape = image_shape(data_config)
        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = self.global_batch_size // process_count
        self.process_index = process_index
        self.process_count = process_count
        self.seed = seed
        self.random_flip = bool(data_config.get("random_flip", False))
        cache = data_config.get("cache", None)
        if cache is None:
            cache = self.source.nbytes() <= CACHE_AUTO_BYTES
        # The cache changes speed only: batch(step) reads the same indices either way.
        self._images = self.source.materialize() if cache else None
        self._flip_seed = _derived_seed(seed, _FLIP_TAG)
        # Example index at every position of the infinite training stream; epoch e is
        # shuffled with grain's index_shuffle under seed (s + e) mod 2**32.
        self._order = (
            grain.MapDataset.range(self.num_examples)
            .shuffle(seed=_derived_seed(seed, _SHUFFLE_TAG))
            .repeat(None)
        )

    @property
    def steps_per_epoch(self) -> float:
        return self.num_examples / self.global_batch_size

    def indices(self, step: int) -> np.ndarray:
        """Example indices (into `source`) of this host's rows of global batch `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        return np.array(
            [self._order[i] for i in range(start, start + self.local_batch_size)], np.int64
        )

    def flips(self, step: int) -> np.ndarray:
        """bool (local_batch_size,): which of this host's rows are mirrored at `step`."""
        if not self.random_flip:
            return np.zeros(self.local_batch_size, bool)
        # One Philox stream per (seed, step), one draw per row of the GLOBAL batch.
        rng = np.random.Generator(np.random.Philox(key=[self._flip_seed, step]))
        coins = rng.random(self.global_batch_size) < 0.5
        lo = self.process_index * self.local_batch_size
        return coins[lo : lo + self.local_batch_size]

    def batch(self, step: int) -> np.ndarray:
        """uint8 (local_batch_size, H, W, C): this host's rows of global batch `step`."""
        ids = self.indices(step)
        images = self._images[ids] if self._images is not None else self.source.read(ids)
        flip = self.flips(step)
        if flip.any():
            images[flip] = images[flip, :, ::-1]
        return images

    def iter_from(self, step: int = 0, *, prefetch: int = 2) -> Iterator[np.ndarray]:
        """Yields batch(step), batch(step + 1), …; `prefetch` > 0 reads ahead on a thread."""
        if prefetch <= 0:
            return (self.batch(s) for s in itertools.count(step))
        return self._prefetching(step, prefetch)

    def _prefetching(self, step: int, prefetch: int) -> Iterator[np.ndarray]:
        # One daemon thread computes batch(step), batch(step + 1), ... into a bounded queue;
        # closing (or dropping) the generator stops it. Errors are re-raised in the caller.
        ready: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def work(s: int) -> None:
            while not stop.is_set():
                try:
                    item = (self.batch(s), None)
                except Exception as e:  # noqa: BLE001 - handed to the consumer
                    item = (None, e)
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if item[1] is not None:
                    return
                s += 1

        worker = threading.Thread(target=work, args=(step,), name="gudjax-data", daemon=True)
        entry = (stop, worker)
        _LIVE_WORKERS.add(entry)
        worker.start()
        try:
            while True:
                images, error = ready.get()
                if error is not None:
                    raise error
                yield images
        finally:
            stop.set()
            worker.join()
            _LIVE_WORKERS.discard(entry)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_from(0)


# ----------------------------------------------------------------------------------------
# Finite passes


def eval_batches(
    data_config,
    *,
    split: str = "test",
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    max_examples: int | None = None,
    pad: bool = False,
) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
    """One pass over the first `max_examples` (default all) examples of `split`, in order.

    `batch_size` is GLOBAL, like `TrainData`: global batch i holds examples
    [i·B, (i+1)·B) and host p yields its rows [p·B/P, (p+1)·B/P) of it, so the union over
    hosts equals the single-host pass and every host yields the same number of batches,
    ceil(n / B). The last global batch may be short, so a host's last batch may be
    smaller (even empty on some hosts). With `pad=True` every batch instead has exactly
    B/P rows and comes as (images, mask): the missing rows are zero images with
    mask False.
    """
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(
            f"eval batch_size={batch_size} must be a positive multiple of the process "
            f"count {process_count}"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} must lie in [0, process_count={process_count})"
        )
    source = load_split(data_config, split)
    n = len(source) if max_examples is None else min(int(max_examples), len(source))
    return _eval_pass(source, n, batch_size, process_index, process_count, pad)


def _eval_pass(source, n, batch_size, process_index, process_count, pad):
    local = batch_size // process_count
    # Chunk j = rows [j·local, (j+1)·local) of the pass; host p of global batch i = chunk i·P + p.
    chunks = grain.MapDataset.range(n).batch(local, drop_remainder=False)
    for i in range(-(-n // batch_size)):
        j = i * process_count + process_index
        ids = chunks[j] if j < len(chunks) else np.zeros(0, np.int64)
        images = source.read(ids)
        if pad:
            mask = np.zeros(local, bool)
            mask[: len(images)] = True
            padded = np.zeros((local, *images.shape[1:]), np.uint8)
            padded[: len(images)] = images
            yield padded, mask
        else:
            yield images


def fit_batches(data_config, *, batch_size: int = 256) -> Iterator[np.ndarray]:
    """One pass over the whole train split in stored order, uint8 batches (last one short).

    For streaming statistics (mean, covariance, per-component variances) of the bases.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    source = load_split(data_config, "train")
    chunks = grain.MapDataset.range(len(source)).batch(batch_size, drop_remainder=False)
    return (source.read(chunks[j]) for j in range(len(chunks)))


# ----------------------------------------------------------------------------------------
# uint8 ↔ model space


_DEQUANTIZE = ("center", "uniform")


def _check_levels(levels) -> int:
    if not isinstance(levels, int | np.integer) or not 2 <= levels <= 256:
        raise ValueError(f"levels={levels!r} must be an integer in [2, 256]")
    return int(levels)


def to_levels(images_uint8, levels: int = 256):
    """Stored uint8 k → level l = round(k·(L − 1)/255) ∈ {0, …, L − 1} (float32; l = k at
    L = 256). Inverse of the storage map k = round(l·255/(L − 1)) (e.g. the digits)."""
    levels = _check_levels(levels)
    xp = _xp(images_uint8)
    k = xp.asarray(images_uint8).astype(xp.float32)
    if levels == 256:
        return k
    return xp.round(k * xp.float32((levels - 1) / 255.0))


def to_model_input(images_uint8, *, levels: int = 256, dequantize: str = "center", rng=None):
    """uint8 k → float32 x = 2(l + u)/L − 1 ∈ (−1, 1), l = `to_levels`(k, L) (docs/maths.md §1.1).

    dequantize="center": u = 0.5 (training, sampling). dequantize="uniform": u ~ U[0, 1)
    per value (likelihoods in bits/dim); `rng` is a `np.random.Generator` (returns numpy)
    or a JAX PRNG key (returns a jax.Array). A jax.Array input gives a jax.Array output.
    `levels` is the data's L (`levels(config.data)`; 256 = plain 8-bit).
    """
    if dequantize not in _DEQUANTIZE:
        raise ValueError(f"dequantize={dequantize!r}; allowed: {', '.join(_DEQUANTIZE)}")
    levels = _check_levels(levels)
    use_jax = _is_jax_array(images_uint8)
    if dequantize == "uniform":
        if rng is None:
            raise ValueError("dequantize='uniform' needs rng (a np.random.Generator or JAX key)")
        if isinstance(rng, np.random.Generator):
            u = rng.random(np.shape(images_uint8), dtype=np.float32)
        else:
            import jax

            u = jax.random.uniform(rng, np.shape(images_uint8), dtype=np.float32)
            use_jax = True
    else:
        u = np.float32(0.5)
    if use_jax:
        import jax.numpy as jnp

        lv = to_levels(jnp.asarray(images_uint8), levels)
        return (lv + u) * jnp.float32(2.0 / levels) - jnp.float32(1.0)
    lv = to_levels(np.asarray(images_uint8), levels)
    return (lv + u) * np.float32(2.0 / levels) - np.float32(1.0)


def to_uint8(x, levels: int = 256) -> np.ndarray:
    """Model-space x ∈ [−1, 1] → stored uint8: level l = clip(floor((x + 1)·L/2), 0, L − 1)
    (the inverse bins), then k = round(l·255/(L − 1)) (k = l at L = 256)."""
    levels = _check_levels(levels)
    lv = np.floor((np.asarray(x, dtype=np.float32) + 1.0) * np.float32(levels / 2.0))
    lv = np.clip(lv, 0, levels - 1)
    if levels == 256:
        return lv.astype(np.uint8)
    return np.rint(lv * (255.0 / (levels - 1))).astype(np.uint8)


def _xp(x):
    if _is_jax_array(x):
        import jax.numpy as jnp

        return jnp
    return np


def _is_jax_array(x) -> bool:
    try:
        import jax
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, jax.Array)
