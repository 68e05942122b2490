"""TFDS builder ``photo_patches``: 32×32×3 patches of scikit-image's bundled colour photos.

An offline stand-in for CIFAR-10 and PCAM in the ``runlocal`` configs and the tests. Neither
CIFAR-10 nor PCAM can be downloaded where gudjax is tested, and no Python package ships
them, but scikit-image ships a handful of real colour photographs inside the wheel
(``skimage.data``). This builder cuts them into non-overlapping 32×32 RGB tiles. It is NOT
CIFAR-10 or PCAM: numbers measured on it say nothing about the paper's numbers; it only
lets the paper configs run end to end on a laptop in about a minute.

Photos (all bundled, no ``pooch`` download): astronaut, coffee, chelsea, rocket,
immunohistochemistry, retina, hubble_deep_field, and the left and right views of
stereo_motorcycle (9 photos, 300–1411 pixels on a side).

Patches: every photo is taken at scales 1, 2 and 4 (an f×f area average, rounded half up,
so coarse scales hold whole objects like CIFAR-10 and scale 1 holds texture like PCAM);
each scaled photo is tiled into non-overlapping 32×32 tiles from its top-left corner
(incomplete tiles at the right and bottom edges are dropped). Near-constant tiles (standard
deviation of the grey value < ``MIN_STD`` in 8-bit units, e.g. the black border of the
retina photo) are dropped.

Split (fixed, deterministic, by region): in every photo the columns
x ≥ round(``TEST_FRACTION`` · W) form the test region and the rest the train region; the
two regions are tiled separately at every scale, so no test pixel ever appears in a train
patch. That gives 3451 train and 685 test patches.

Stored features (``tfds.features.Tensor``, ArrayRecord, no TensorFlow needed):
  image  uint8 (32, 32, 3)
  photo  int32 ()    index into ``PHOTOS``
  scale  int32 ()    1, 2 or 4
  row    int32 ()    top-left corner of the tile in the scaled region (pixels)
  col    int32 ()    ditto, relative to the region's left edge
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

PATCH = 32
SCALES = (1, 2, 4)
TEST_FRACTION = 0.8  # columns x >= 0.8·W of every photo are the test region
MIN_STD = 4.0  # tiles whose grey standard deviation is below this (8-bit units) are dropped
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "retina",
    "hubble_deep_field",
    "motorcycle_left",
    "motorcycle_right",
)


def load_photo(name: str) -> np.ndarray:
    """uint8 (H, W, 3) photo from scikit-image's bundled data (no download)."""
    from skimage import data  # only needed when building

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = data.stereo_motorcycle()
        image = left if name == "motorcycle_left" else right
    else:
        image = getattr(data, name)()
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"skimage photo {name!r} is {image.dtype} {image.shape}, not uint8 RGB")
    return image


def area_downsample(image: np.ndarray, f: int) -> np.ndarray:
    """uint8 (H, W, C) → (H//f, W//f, C): mean over f×f blocks, rounded half up."""
    if f == 1:
        return image
    h, w, c = image.shape
    h, w = h // f * f, w // f * f
    blocks = image[:h, :w].reshape(h // f, f, w // f, f, c).astype(np.uint32)
    n = f * f
    return ((blocks.sum(axis=(1, 3)) + n // 2) // n).astype(np.uint8)


def tiles(region: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Non-overlapping (row, col, uint8 (32, 32, 3)) tiles of `region` that are not flat."""
    out = []
    h, w, _ = region.shape
    for r in range(0, h - PATCH + 1, PATCH):
        for c in range(0, w - PATCH + 1, PATCH):
            tile = region[r : r + PATCH, c : c + PATCH]
            if tile.mean(axis=-1).std() >= MIN_STD:
                out.append((r, c, tile))
    return out


def split_patches(split: str) -> list[dict]:
    """All examples of `split` ("train" or "test"), in a fixed order."""
    if split not in ("train", "test"):
        raise ValueError(f"photo_patches has splits train, test; got {split!r}")
    out = []
    for p, name in enumerate(PHOTOS):
        photo = load_photo(name)
        cut = int(round(TEST_FRACTION * photo.shape[1]))
        region = photo[:, :cut] if split == "train" else photo[:, cut:]
        for f in SCALES:
            for r, c, tile in tiles(area_downsample(region, f)):
                out.append(
                    dict(
                        image=tile,
                        photo=np.int32(p),
                        scale=np.int32(f),
                        row=np.int32(r),
                        col=np.int32(c),
                    )
                )
    return out


class PhotoPatches(tfds.core.GeneratorBasedBuilder):
    """32×32×3 tiles of scikit-image's colour photos (offline CIFAR/PCAM stand-in)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 9 skimage photos, scales 1/2/4, split by region."}

    def _info(self) -> tfds.core.DatasetInfo:
        scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.int32)
        return self.dataset_info_from_configs(
            description=(
                "Non-overlapping 32x32 RGB tiles of scikit-image's bundled colour photos at "
                "scales 1, 2, 4 (area average); near-flat tiles dropped; the right 20% of "
                "every photo is the test region. An offline stand-in, not CIFAR-10 or PCAM."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(PATCH, PATCH, 3), dtype=np.uint8),
                    "photo": scalar(),
                    "scale": scalar(),
                    "row": scalar(),
                    "col": scalar(),
                }
            ),
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the photos ship with scikit-image
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split):
        yield from enumerate(split_patches(split))
