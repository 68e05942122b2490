"""Input pipeline: TFDS ArrayRecord sources read by random access with grain, no TensorFlow.

Images travel as uint8 (B, H, W, C) arrays; `to_model_input` turns them into the model's
float32 data space x ∈ [-1, 1] (SPEC §1): x = 2(k + u)/256 − 1 with u = 0.5 ("center") or
u ~ U[0, 1) ("uniform" dequantisation, for likelihoods).

Data sets (`DATASETS`):
  digits          scikit-learn's 8×8×1 digits (`gudjax.datasets.digits`), prepared offline
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
import concurrent.futures
import contextlib
import dataclasses
import itertools
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from gudjax.config_base import default_data_config

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
    "load_split",
    "resolve_data_dir",
    "to_model_input",
    "to_uint8",
]


class DatasetNotFoundError(ValueError):
    """A TFDS data set is not prepared (in ArrayRecord format) under the data directory."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What gudjax needs to know about a data set.

    tfds_name: the TFDS builder name. shape: native (H, W, C). train_split / test_split:
    the TFDS splits behind "train" / "test". prepare: how it gets onto disk ("auto" = built
    offline on first use; otherwise a shell command with a `{data_dir}` placeholder).
    """

    tfds_name: str
    shape: tuple[int, int, int]
    train_split: str
    test_split: str
    prepare: str


_BUILD = "tfds build {name} --file_format=array_record --data_dir={{data_dir}}"

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (8, 8, 1), "train", "test", prepare="auto"),
    "cifar10": DatasetInfo(
        "cifar10", (32, 32, 3), "train", "test", prepare=_BUILD.format(name="cifar10")
    ),
    "patch_camelyon": DatasetInfo(
        "patch_camelyon",
        (96, 96, 3),
        "train",
        "test",
        prepare=_BUILD.format(name="patch_camelyon"),
    ),
    "photo_patches": DatasetInfo("photo_patches", (32, 32, 3), "train", "test", prepare="auto"),
}

_GUDJAX_DATA_DIR = "GUDJAX_DATA_DIR"

# TrainData keeps the decoded train split in memory when it is at most this big (and
# config.data.cache is None): digits (0.1 MB) and cifar10 (150 MB) are cached,
# patch_camelyon at 32×32 (805 MB) is streamed from disk.
CACHE_AUTO_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------------------
# Config validation


def _info(data_config) -> DatasetInfo:
    name = data_config.name
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def _downsample_factor(data_config) -> int:
    """f such that image = f×f area average of the native image (1 = native size)."""
    info = _info(data_config)
    native = info.shape[0]
    size = data_config.image_size
    if not isinstance(size, int | np.integer) or size <= 0 or native % size:
        raise ValueError(
            f"config.data.image_size={size!r} does not fit data set {data_config.name!r} "
            f"of native size {native}: use {native} or a divisor of it"
        )
    return native // int(size)


def image_shape(data_config) -> tuple[int, int, int]:
    """(H, W, C) of the images the pipeline yields, after any resizing."""
    info = _info(data_config)
    f = _downsample_factor(data_config)
    channels = data_config.get("channels", None)
    if channels is not None and channels != info.shape[2]:
        raise ValueError(
            f"config.data.channels={channels!r} does not match data set "
            f"{data_config.name!r}, which has {info.shape[2]} channel(s)"
        )
    return (info.shape[0] // f, info.shape[1] // f, info.shape[2])


def resolve_data_dir(data_config) -> str:
    """The directory TFDS data sets are read from (and digits is built into)."""
    _info(data_config)
    data_dir = data_config.get("data_dir", None)
    if not data_dir:
        if data_config.name in _LOCAL_BUILDERS:
            data_dir = os.environ.get(_GUDJAX_DATA_DIR) or "~/tensorflow_datasets"
        else:
            data_dir = tfds.core.constants.get_default_data_dir()
    return os.path.abspath(os.path.expanduser(str(data_dir)))


# ----------------------------------------------------------------------------------------
# Sources


def _area_downsample(images: np.ndarray, f: int) -> np.ndarray:
    """uint8 (..., H, W, C) → (..., H/f, W/f, C): mean over f×f blocks, rounded half up."""
    if f == 1:
        return images
    *lead, h, w, c = images.shape
    blocks = images.reshape(*lead, h // f, f, w // f, f, c)
    total = blocks.sum(axis=(-4, -2), dtype=np.uint32)
    n = f * f
    return ((total + n // 2) // n).astype(np.uint8)


class ImageSource:
    """Random-access uint8 images of one split: `src[i]` → (H, W, C), `src.read(ids)` → batch.

    Wraps a TFDS ArrayRecord data source (`examples`, whose items are feature dicts) and
    applies the configured downsampling. Implements grain's batched-read source protocol
    (`__len__`, `__getitem__`, `_getitems`), so `grain.MapDataset.source(src)` works.
    """

    def __init__(self, examples: Sequence[Any], *, name: str, split: str, factor: int):
        self.examples = examples
        self.name = name
        self.split = split
        self.factor = factor

    def __len__(self) -> int:
        return len(self.examples)

    def __repr__(self) -> str:
        return f"ImageSource({self.name!r}, split={self.split!r}, n={len(self)})"

    def __getitem__(self, index: int) -> np.ndarray:
        image = np.asarray(self.examples[int(index)]["image"], dtype=np.uint8)
        return _area_downsample(image, self.factor)

    def _getitems(self, indices: Sequence[int]) -> list[np.ndarray]:
        return list(self.read(indices))

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 (len(indices), H, W, C), read in one batched ArrayRecord request."""
        indices = [int(i) for i in indices]
        if not indices:
            return np.zeros((0, *self._shape()), np.uint8)
        records = self.examples.__getitems__(indices)
        images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records])
        return _area_downsample(images, self.factor)

    def nbytes(self) -> int:
        """Bytes the whole split takes as a uint8 array (after resizing)."""
        return len(self) * int(np.prod(self._shape()))

    def materialize(self, *, chunk: int = 1024, threads: int | None = None) -> np.ndarray:
        """The whole split as one uint8 (N, H, W, C) array, in stored order."""
        out = np.empty((len(self), *self._shape()), np.uint8)

        def fill(lo: int) -> None:
            hi = min(lo + chunk, len(self))
            out[lo:hi] = self.read(range(lo, hi))

        threads = threads or min(8, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, range(0, len(self), chunk)))
        return out

    def _shape(self) -> tuple[int, int, int]:
        h, w, c = DATASETS[self.name].shape
        return (h // self.factor, w // self.factor, c)


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive advisory lock (POSIX); a no-op where fcntl is unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _local_builder_class(name: str):
    """The builder class of a data set that ships inside a Python package ("auto")."""
    if name == "digits":
        from gudjax.datasets.digits import Digits

        return Digits
    from gudjax.datasets.photo_patches import PhotoPatches

    return PhotoPatches


# Data sets built offline on first use (prepare="auto"), from packages' bundled data.
_LOCAL_BUILDERS = ("digits", "photo_patches")


def _local_builder(name: str, data_dir: str):
    cls = _local_builder_class(name)
    builder = cls(data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        os.makedirs(data_dir, exist_ok=True)
        # Several processes (hosts, test workers) may share the data_dir: build once.
        with _file_lock(os.path.join(data_dir, f".{name}.lock")):
            builder = cls(data_dir=data_dir, file_format="array_record")
            if not builder.is_prepared():
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
                )
    return builder


def _not_found(info: DatasetInfo, data_dir: str, what: str) -> DatasetNotFoundError:
    command = info.prepare.format(data_dir=data_dir)
    return DatasetNotFoundError(
        f"data set {info.tfds_name!r} {what} under data_dir {data_dir}; gudjax never "
        f"downloads: prepare it once (TensorFlow needed for the build only) with: {command}"
    )


def _tfds_builder(info: DatasetInfo, data_dir: str):
    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        raise _not_found(info, data_dir, "is not prepared")
    return builder


def load_split(data_config, split: str) -> ImageSource:
    """Random-access uint8 images of `split` ("train", "test" or any TFDS split string).

    digits is built (offline, from scikit-learn) into the data_dir when missing. The TFDS
    data sets must already be prepared in ArrayRecord format; otherwise this raises
    `DatasetNotFoundError` naming the directory and the `tfds build` command.
    """
    info = _info(data_config)
    factor = _downsample_factor(data_config)
    image_shape(data_config)  # validates channels
    data_dir = resolve_data_dir(data_config)
    tfds_split = {"train": info.train_split, "test": info.test_split}.get(split, split)
    if data_config.name in _LOCAL_BUILDERS:
        builder = _local_builder(data_config.name, data_dir)
    else:
        builder = _tfds_builder(info, data_dir)
    try:
        examples = builder.as_data_source(split=tfds_split)
    except NotImplementedError as e:  # prepared, but only as TFRecord (no random access)
        raise DatasetNotFoundError(
            f"data set {info.tfds_name!r} is prepared under data_dir {data_dir} but not in "
            f"ArrayRecord format; convert it once (TensorFlow needed) with: tfds "
            f"convert_format --dataset_version_dir={builder.data_dir} "
            f"--out_file_format=array_record"
        ) from e
    except (KeyError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"data set {data_config.name!r} has no split {split!r} (available: "
            f"{', '.join(builder.info.splits)}): {reason}"
        ) from e
    return ImageSource(examples, name=data_config.name, split=tfds_split, factor=factor)


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


def to_model_input(images_uint8, *, dequantize: str = "center", rng=None):
    """uint8 k → float32 x = 2(k + u)/256 − 1 ∈ (−1, 1), the data space of SPEC §1.

    dequantize="center": u = 0.5 (training, sampling). dequantize="uniform": u ~ U[0, 1)
    per value (likelihoods in bits/dim); `rng` is a `np.random.Generator` (returns numpy)
    or a JAX PRNG key (returns a jax.Array). A jax.Array input gives a jax.Array output.
    """
    if dequantize not in _DEQUANTIZE:
        raise ValueError(f"dequantize={dequantize!r}; allowed: {', '.join(_DEQUANTIZE)}")
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

        k = jnp.asarray(images_uint8).astype(jnp.float32)
        return (k + u) * jnp.float32(2.0 / 256.0) - jnp.float32(1.0)
    k = np.asarray(images_uint8).astype(np.float32)
    return (k + u) * np.float32(2.0 / 256.0) - np.float32(1.0)


def to_uint8(x) -> np.ndarray:
    """Model-space x ∈ [−1, 1] → uint8 k = clip(floor((x + 1)·128), 0, 255) (inverse bins)."""
    k = np.floor((np.asarray(x, dtype=np.float32) + 1.0) * 128.0)
    return np.clip(k, 0, 255).astype(np.uint8)


def _is_jax_array(x) -> bool:
    try:
        import jax
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, jax.Array)
