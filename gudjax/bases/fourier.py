"""Real orthonormal 2-D Fourier basis, per channel.

F = fft2(x, norm="ortho") is unitary. For a real image F_{−k} = conj(F_k), so the D
complex numbers carry D real degrees of freedom. We store one real number per position
k = (ky, kx) of the (H, W, C) layout:
  self-conjugate k (k ≡ −k mod (H, W)):   Re F_k
  k before its partner −k (flat order):   √2 Re F_k
  k after its partner:                    −√2 Im F_k   (= √2 Im F_{−k})
Each conjugate pair keeps |F_k|² + |F_{−k}|² = (√2 Re F_k)² + (√2 Im F_k)², so the map is a
linear isometry R^D → R^D, i.e. orthonormal and real: white noise stays white noise.
Labels: frequency = |k| with signed frequencies (fftfreq · size), log_frequency = log(1 + |k|)
(the ordering of the (a, r) family, docs/maths.md §9); row/column = position.
Groups: integer shells of |k|.
"""

import jax.numpy as jnp
import numpy as np

from gudjax.bases.core import BasisSpec, pixel_grid_labels, register_basis, shell_groups

MAX_GROUPS = 32
SQRT2 = float(np.sqrt(2.0))


def _pairing(h: int, w: int):
    """Per position of the (h, w) grid: flat index of the conjugate partner, and masks."""
    ky, kx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    partner = ((-ky) % h) * w + ((-kx) % w)
    flat = ky * w + kx
    self_conj = partner == flat
    lower = flat < partner
    return partner, self_conj, lower


@register_basis("fourier")
class FourierBasis(BasisSpec):
    @classmethod
    def fixed_arrays(cls, shape, options):
        return {}

    @classmethod
    def forward(cls, arrays, x, shape, options):
        h, w, _ = shape
        _, self_conj, lower = _pairing(h, w)
        f = jnp.fft.fft2(x, axes=(-3, -2), norm="ortho")
        sc = self_conj[:, :, None]
        lo = lower[:, :, None]
        out = jnp.where(sc, f.real, jnp.where(lo, SQRT2 * f.real, -SQRT2 * f.imag))
        return out.reshape(*x.shape[:-3], -1).astype(x.dtype)

    @classmethod
    def inverse(cls, arrays, c, shape, options):
        h, w, ch = shape
        partner, self_conj, lower = _pairing(h, w)
        img = c.reshape(*c.shape[:-1], h, w, ch)
        flat = img.reshape(*c.shape[:-1], h * w, ch)
        other = jnp.take(flat, partner.reshape(-1), axis=-2).reshape(img.shape)
        sc = self_conj[:, :, None]
        lo = lower[:, :, None]
        f = jnp.where(
            sc,
            img.astype(jnp.complex64),
            jnp.where(lo, (img + 1j * other) / SQRT2, (other - 1j * img) / SQRT2),
        )
        return jnp.fft.ifft2(f, axes=(-3, -2), norm="ortho").real.astype(c.dtype)

    @classmethod
    def labels(cls, shape, options):
        h, w, ch = shape
        fy = np.fft.fftfreq(h) * h
        fx = np.fft.fftfreq(w) * w
        ky, kx = np.meshgrid(fy, fx, indexing="ij")
        freq = np.repeat(np.sqrt(ky**2 + kx**2)[..., None], ch, axis=-1).reshape(-1)
        return {**pixel_grid_labels(shape), "frequency": freq, "log_frequency": np.log1p(freq)}

    @classmethod
    def groups(cls, shape, options, variance):
        return shell_groups(np.round(cls.labels(shape, options)["frequency"]), MAX_GROUPS)
