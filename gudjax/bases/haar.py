"""Orthonormal multi-level 2-D Haar wavelet basis (J levels, default 3), per channel.

One level maps each 2×2 block (a b / c d) to
  LL = (a + b + c + d)/2,  O1 = (a + b − c − d)/2 (rows differ),
  O2 = (a − b + c − d)/2 (columns differ),  O3 = (a − b − c + d)/2,
an orthonormal 4×4 map. Coefficients are kept in the Mallat image layout: the (h, w)
block becomes [[LL, O1], [O2, O3]] of half size each, and LL is transformed again, J
times. So components have (H, W, C) layout and the basis needs H, W divisible by 2^J.

Labels (docs/maths.md §1): level 0 = coarsest LL, level j = details of the j-th coarsest scale,
J = finest details; orientation 0 (LL), 1, 2, 3; column/row = position inside the
coefficient's sub-band, colpos = column / (band width − 1) ∈ [0, 1] (0 for width 1).
Groups: level × orientation (1 + 3J tokens).
"""

import jax.numpy as jnp
import numpy as np

from gudjax.bases.core import BasisSpec, register_basis


def _split(a):
    p, q = a[..., 0::2, 0::2, :], a[..., 0::2, 1::2, :]
    r, s = a[..., 1::2, 0::2, :], a[..., 1::2, 1::2, :]
    return (p + q + r + s) / 2, (p + q - r - s) / 2, (p - q + r - s) / 2, (p - q - r + s) / 2


def _merge(ll, o1, o2, o3):
    p = (ll + o1 + o2 + o3) / 2
    q = (ll + o1 - o2 - o3) / 2
    r = (ll - o1 + o2 - o3) / 2
    s = (ll - o1 - o2 + o3) / 2
    top = jnp.stack([p, q], axis=-2).reshape(*p.shape[:-2], 2 * p.shape[-2], p.shape[-1])
    bot = jnp.stack([r, s], axis=-2).reshape(*r.shape[:-2], 2 * r.shape[-2], r.shape[-1])
    out = jnp.stack([top, bot], axis=-3)
    return out.reshape(*p.shape[:-3], 2 * p.shape[-3], 2 * p.shape[-2], p.shape[-1])


def haar_forward_image(x, levels: int):
    """(..., H, W, C) → (..., H, W, C) Mallat layout."""
    if levels == 0:
        return x
    ll, o1, o2, o3 = _split(x)
    ll = haar_forward_image(ll, levels - 1)
    top = jnp.concatenate([ll, o1], axis=-2)
    bot = jnp.concatenate([o2, o3], axis=-2)
    return jnp.concatenate([top, bot], axis=-3)


def haar_inverse_image(y, levels: int):
    if levels == 0:
        return y
    h, w = y.shape[-3] // 2, y.shape[-2] // 2
    ll = haar_inverse_image(y[..., :h, :w, :], levels - 1)
    return _merge(ll, y[..., :h, w:, :], y[..., h:, :w, :], y[..., h:, w:, :])


def haar_layout(h: int, w: int, levels: int) -> dict[str, np.ndarray]:
    """Labels of every position of the Mallat layout, each (h, w)."""
    level = np.zeros((h, w))
    orient = np.zeros((h, w))
    col = np.zeros((h, w))
    row = np.zeros((h, w))
    bw = np.zeros((h, w))
    ch_, cw = h, w
    for j in range(levels):
        hh, hw = ch_ // 2, cw // 2
        lev = levels - j
        for o, (r0, c0) in enumerate([(0, hw), (hh, 0), (hh, hw)], start=1):
            rr, cc = np.meshgrid(np.arange(hh), np.arange(hw), indexing="ij")
            sl = (slice(r0, r0 + hh), slice(c0, c0 + hw))
            level[sl], orient[sl], row[sl], col[sl], bw[sl] = lev, o, rr, cc, hw
        ch_, cw = hh, hw
    rr, cc = np.meshgrid(np.arange(ch_), np.arange(cw), indexing="ij")
    sl = (slice(0, ch_), slice(0, cw))
    level[sl], orient[sl], row[sl], col[sl], bw[sl] = 0, 0, rr, cc, cw
    colpos = np.where(bw > 1, col / np.maximum(bw - 1, 1), 0.0)
    return dict(level=level, orientation=orient, column=col, row=row, colpos=colpos)


@register_basis("haar")
class HaarBasis(BasisSpec):
    default_options = {"levels": 3}

    @classmethod
    def check_shape(cls, shape, options):
        levels = int(options["levels"])
        if levels < 1:
            raise ValueError(f"haar levels must be >= 1, got {levels}")
        f = 2**levels
        if shape[0] % f or shape[1] % f:
            raise ValueError(
                f"haar basis with {levels} levels needs H and W divisible by {f}, got image "
                f"shape {tuple(shape)}; change the image size or the basis levels option"
            )

    @classmethod
    def forward(cls, arrays, x, shape, options):
        y = haar_forward_image(x, int(options["levels"]))
        return y.reshape(*y.shape[:-3], -1)

    @classmethod
    def inverse(cls, arrays, c, shape, options):
        return haar_inverse_image(c.reshape(*c.shape[:-1], *shape), int(options["levels"]))

    @classmethod
    def labels(cls, shape, options):
        h, w, ch = shape
        lay = haar_layout(h, w, int(options["levels"]))
        return {k: np.repeat(v[..., None], ch, axis=-1).reshape(-1) for k, v in lay.items()}

    @classmethod
    def groups(cls, shape, options, variance):
        lab = cls.labels(shape, options)
        return np.where(lab["level"] == 0, 0, 3 * (lab["level"] - 1) + lab["orientation"]).astype(
            np.int32
        )
