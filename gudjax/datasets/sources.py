"""Data-set registry and random-access sources: what a data set is, where it lives, how
its images are read (TFDS ArrayRecord through grain's source protocol, no TensorFlow).

Every data set declares its number of grey levels L (`DatasetInfo.levels`): digits 17
(values 0 … 16), the 8-bit sets 256. Images are stored as uint8 k either way (the digits as
k = round(v·255/16)); `gudjax.input_pipeline.to_levels` maps k back to the level
l = round(k·(L − 1)/255) and `to_model_input` to x = 2(l + u)/L − 1 (docs/maths.md §1.1).

Splits: "train" and "test" as stored, and "validation", a fixed subset carved from the
train split when `config.data.validation_every` = m is set: the stored train examples with
index i ≡ m − 1 (mod m), about 1/m of them (TFDS stores examples in a fixed hashed order,
so this is a deterministic, class-mixed subset). With m set, "train" is the rest, so a
network trained with it never sees its validation images; without it "train" is the
whole stored split and asking for "validation" is a one-line error. Choices (which family
member is best) are made on "validation"; "test" is only reported.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds


class DatasetNotFoundError(ValueError):
    """A TFDS data set is not prepared (in ArrayRecord format) under the data directory."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What gudjax needs to know about a data set.

    tfds_name: the TFDS builder name. shape: native (H, W, C). train_split / test_split:
    the TFDS splits behind "train" / "test". prepare: how it gets onto disk ("auto" = built
    offline on first use; otherwise a shell command with a `{data_dir}` placeholder).
    levels: the number of grey levels L of the data (stored as uint8 either way).
    """

    tfds_name: str
    shape: tuple[int, int, int]
    train_split: str
    test_split: str
    prepare: str
    levels: int = 256


_BUILD = "tfds build {name} --file_format=array_record --data_dir={{data_dir}}"

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (8, 8, 1), "train", "test", prepare="auto", levels=17),
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
    every = validation_every(data_config)
    if split == "validation" and every is None:
        raise ValueError(
            f"data set {data_config.name!r} has no split 'validation' (available: train, "
            "test): set config.data.validation_every (e.g. 10: every 10th stored train "
            "example is held out)"
        )
    carve = split in ("train", "validation") and every is not None
    tfds_split = info.train_split if carve else split
    tfds_split = {"train": info.train_split, "test": info.test_split}.get(tfds_split, tfds_split)
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
    if carve:
        held = np.arange(len(examples)) % every == every - 1
        ids = np.flatnonzero(held if split == "validation" else ~held)
        examples = _Subset(examples, ids)
        tfds_split = f"{split} (1/{every} of {info.train_split})"
    return ImageSource(examples, name=data_config.name, split=tfds_split, factor=factor)


def validation_every(data_config) -> int | None:
    """config.data.validation_every (None: no validation split), checked."""
    every = data_config.get("validation_every", None)
    if every is None:
        return None
    if not isinstance(every, int | np.integer) or every < 2:
        raise ValueError(
            f"config.data.validation_every={every!r} must be an integer >= 2 (or None)"
        )
    return int(every)


def levels(data_config) -> int:
    """The number of grey levels L of the configured data set (`DatasetInfo.levels`)."""
    return int(_info(data_config).levels)


class _Subset:
    """The examples `ids` of a random-access source (len, [], __getitems__)."""

    def __init__(self, examples, ids):
        self.examples = examples
        self.ids = np.asarray(ids, np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return self.examples[int(self.ids[int(index)])]

    def __getitems__(self, indices):
        return self.examples.__getitems__([int(self.ids[int(i)]) for i in indices])
