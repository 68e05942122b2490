"""TFDS builders for data sets that ship inside Python packages (no download).

Importing this package registers the builders with TFDS (``tfds.builder("digits")``).
"""

from gudjax.datasets.digits import Digits

__all__ = ["Digits"]
