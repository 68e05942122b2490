"""TFDS builder ``digits``: scikit-learn's 8×8 handwritten digits as a local data set.

scikit-learn ships the UCI "optical recognition of handwritten digits" test set inside the
package (``sklearn.datasets.load_digits``): 1797 grey images of 8×8 pixels with integer
values v ∈ {0, …, 16} and a label 0–9 (about 180 per class). Nothing is downloaded, so the
builder can prepare itself offline in well under a second; it is the data set of the
``runlocal`` configs and of the end-to-end tests.

Stored features (all ``tfds.features.Tensor``, so neither writing nor reading needs
TensorFlow; the data set is written as ArrayRecord for random access):
  image  uint8 (8, 8, 1)   k = round(v · 255 / 16), so k spans 0…255 (v = 16 → 255)
  label  int64 ()          the digit
  id     int32 ()          the example's index in ``load_digits()`` (for bookkeeping/tests)

Split (fixed, deterministic, stratified by class): the examples of each class are taken in
``load_digits`` order and every 5th one — positions 0, 5, 10, … within its class — goes to
``test``, the rest to ``train``. That gives test = 364 (35–37 per class) and train = 1433.
TFDS reorders examples when it writes them (by a hash of the key), so the stored order is
not the ``load_digits`` order, but it is the same on every build.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

# Every TEST_EVERY-th example of each class (positions 0, 5, 10, ... within the class) is test.
TEST_EVERY = 5


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 (1797, 8, 8, 1) with k = round(v · 255/16), labels int64)."""
    from sklearn.datasets import load_digits  # only needed when building

    digits = load_digits()
    values = np.asarray(digits.images, dtype=np.float64)  # (1797, 8, 8) in 0..16
    images = np.rint(values * 255.0 / 16.0).astype(np.uint8)[..., None]
    return images, np.asarray(digits.target, dtype=np.int64)


def split_ids(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed stratified split: ``{'train': ids, 'test': ids}`` (indices into load_digits)."""
    labels = np.asarray(labels)
    is_test = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        ids = np.flatnonzero(labels == c)  # ascending = load_digits order
        is_test[ids[::TEST_EVERY]] = True
    return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8×8 digits (1797 images), uint8 (8, 8, 1); stratified 80/20 split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: sklearn load_digits, k = round(v*255/16)."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "scikit-learn load_digits: 1797 8x8 grey images of handwritten digits, values "
                "0..16 rescaled to uint8 by k = round(v*255/16). Stratified split: every 5th "
                "example of each class is test."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                    "id": tfds.features.Tensor(shape=(), dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data ships with scikit-learn
        images, labels = digits_arrays()
        ids = split_ids(labels)
        return {
            split: self._generate_examples(images, labels, split_ids_)
            for split, split_ids_ in ids.items()
        }

    def _generate_examples(self, images, labels, ids):
        for i in ids:
            yield int(i), {"image": images[i], "label": labels[i], "id": np.int32(i)}
