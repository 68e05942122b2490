"""Pixel basis: U = identity, components in (H, W, C) raster order.

Labels: row, column (image coordinates), colpos = column / (W − 1) ∈ [0, 1].
Groups (conditioning tokens): one per image column, so a column-sequential schedule
is fully described by its tokens.
"""

import numpy as np

from gudjax.bases.core import BasisSpec, pixel_grid_labels, register_basis


@register_basis("pixel")
class PixelBasis(BasisSpec):
    @classmethod
    def forward(cls, arrays, x, shape, options):
        return x.reshape(*x.shape[:-3], -1)

    @classmethod
    def inverse(cls, arrays, c, shape, options):
        return c.reshape(*c.shape[:-1], *shape)

    @classmethod
    def labels(cls, shape, options):
        labels = pixel_grid_labels(shape)
        w = shape[1]
        labels["colpos"] = labels["column"] / max(w - 1, 1)
        return labels

    @classmethod
    def groups(cls, shape, options, variance):
        return pixel_grid_labels(shape)["column"].astype(np.int32)
