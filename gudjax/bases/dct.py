"""DCT basis: orthonormal 2-D DCT-II over (H, W), per channel ("blurring diffusion").

Components are stored in (H, W, C) layout: position (ky, kx, ch) holds the coefficient of
spatial frequencies (ky, kx). Labels: frequency = sqrt(ky² + kx²) (DCT index units),
row = ky, column = kx. Groups: integer shells of the frequency.
"""

import jax.scipy.fft as jfft
import numpy as np

from gudjax.bases.core import BasisSpec, pixel_grid_labels, register_basis, shell_groups

MAX_GROUPS = 32


@register_basis("dct")
class DCTBasis(BasisSpec):
    @classmethod
    def forward(cls, arrays, x, shape, options):
        c = jfft.dctn(x, type=2, axes=(-3, -2), norm="ortho")
        return c.reshape(*c.shape[:-3], -1)

    @classmethod
    def inverse(cls, arrays, c, shape, options):
        img = c.reshape(*c.shape[:-1], *shape)
        return jfft.idctn(img, type=2, axes=(-3, -2), norm="ortho")

    @classmethod
    def labels(cls, shape, options):
        grid = pixel_grid_labels(shape)
        freq = np.sqrt(grid["row"] ** 2 + grid["column"] ** 2)
        return {**grid, "frequency": freq}

    @classmethod
    def groups(cls, shape, options, variance):
        return shell_groups(np.round(cls.labels(shape, options)["frequency"]), MAX_GROUPS)
