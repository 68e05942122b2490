"""TFDS builders for data sets that ship inside Python packages (no download).

Importing this package registers the builders with TFDS (``tfds.builder("digits")``,
``tfds.builder("photo_patches")``).
"""

from gudjax.datasets.digits import Digits
from gudjax.datasets.photo_patches import PhotoPatches

__all__ = ["Digits", "PhotoPatches"]
