"""Conditional generation by replacement (docs/maths.md §6): inpainting and image extension.

Replacement works on a mask in COMPONENT space: at every sampler step the known components
are overwritten with the forward-noised truth at their own noise level,
z_i ← α_i(t) z0_i + σ_i(t) ε_i (`sampling.Known`). A pixel mask has to be expressed in the
model's basis first. What is supported:

* Known components = those whose basis vector lies entirely inside the known pixels
  (`known_components`): row i of U has no weight on an unknown pixel, so c_i is a function
  of known pixels only and its true value is known. For the pixel basis this is exactly the
  pixel mask, and inpainting is exact replacement conditioning. For Haar it is the
  coefficients whose support lies inside the known region (fine levels near the known
  area; the coarse LL coefficients that straddle the border are generated). For global
  bases (PCA, Fourier, DCT) almost no component qualifies: the sample is then essentially
  unconditional. The known-component count is returned (and logged) so this is visible.
* After sampling, the known pixels are pasted back into the decoded image
  (`paste=True`, the default): the output always keeps the known pixels exactly. For the
  pixel basis this changes nothing but round-off; for other bases it is a pixel-space
  projection after the fact, not a conditioning of the generation.
* Component-space conditioning for any basis: pass `known_values(basis, images, mask)`
  with a component mask (D,) or (B, D) as `known=` to `generation.generate`.

Image extension (`extend`), for column-schedule models (pixel basis with the `column`
schedule, or `haar_column`): generate a first window of width W (or start from given
images), then repeatedly shift the window right by k columns: the W − k kept columns are
known (left part of the window, which the column schedule generates first, so the
known part is the part a left-to-right model conditions on), the k new columns are
generated, and appended. The result is cropped to the requested width. From the command line
(`run.sample`): config.sample.extend_columns=k, config.sample.extend_from="noise" (first window
sampled) or "test" (first window = real test images, kept exactly as the left W columns).

Every sampler call goes through `generation.generate` (split over all local devices, run per
device); the result does not depend on the number of devices.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from gudjax import generation, sampling

log = logging.getLogger("gudjax")

MASK_SPECS = ("left:K", "right:K", "top:K", "bottom:K", "center:K", "box:r0:r1:c0:c1", "FILE.npy")


# ------------------------------------------------------------------ masks
def pixel_mask(mask, shape, batch: int | None = None) -> np.ndarray:
    """A known-pixel mask as bool (H, W, C) or (B, H, W, C); one-line error on a bad shape.

    Accepts (H, W) (all channels), (H, W, C), or (B, H, W, C) with B = `batch`.
    """
    m = np.asarray(mask)
    h, w, c = (int(v) for v in shape)
    allowed = f"({h}, {w}), ({h}, {w}, {c})" + (f" or ({batch}, {h}, {w}, {c})" if batch else "")
    if m.shape == (h, w):
        m = np.repeat(m[..., None], c, axis=-1)
    elif m.shape == (h, w, c) or (batch is not None and m.shape == (batch, h, w, c)):
        pass
    else:
        raise ValueError(
            f"inpainting mask has shape {m.shape}; allowed: {allowed} (True = known pixel)"
        )
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))):
            raise ValueError("inpainting mask must be boolean or 0/1 (True = known pixel)")
        m = m.astype(bool)
    return m


def parse_mask_spec(spec: str, shape) -> np.ndarray:
    """`config.sample.inpaint` → bool (H, W, C) known-pixel mask.

    left:K / right:K / top:K / bottom:K: that many known columns or rows;
    center:K: a K×K unknown hole in the centre; box:r0:r1:c0:c1: unknown rows r0..r1−1,
    columns c0..c1−1; FILE.npy: a saved mask of shape (H, W) or (H, W, C), True = known.
    """
    h, w, c = (int(v) for v in shape)
    spec = str(spec).strip()
    if spec.endswith(".npy"):
        if not os.path.exists(spec):
            raise ValueError(f"config.sample.inpaint: mask file {spec} does not exist")
        return pixel_mask(np.load(spec), shape)
    kind, _, rest = spec.partition(":")
    try:
        nums = [int(v) for v in rest.split(":")] if rest else []
    except ValueError:
        nums = None
    m = np.zeros((h, w), bool)
    ok = nums is not None
    if ok and kind in ("left", "right", "top", "bottom", "center") and len(nums) == 1:
        k = nums[0]
        lim = w if kind in ("left", "right") else h
        ok = 0 <= k <= lim
        if ok and kind == "left":
            m[:, :k] = True
        elif ok and kind == "right":
            m[:, w - k :] = True
        elif ok and kind == "top":
            m[:k] = True
        elif ok and kind == "bottom":
            m[h - k :] = True
        elif ok and kind == "center":
            ok = k <= min(h, w)
            m[:] = True
            r0, c0 = (h - k) // 2, (w - k) // 2
            m[r0 : r0 + k, c0 : c0 + k] = False
    elif ok and kind == "box" and len(nums) == 4:
        r0, r1, c0, c1 = nums
        ok = 0 <= r0 <= r1 <= h and 0 <= c0 <= c1 <= w
        m[:] = True
        m[r0:r1, c0:c1] = False
    else:
        ok = False
    if not ok:
        raise ValueError(
            f"config.sample.inpaint={spec!r} is not a mask for {h}×{w} images; allowed: "
            f"{', '.join(MASK_SPECS)}"
        )
    return np.repeat(m[..., None], c, axis=-1)


def known_components(basis, mask) -> np.ndarray:
    """Component mask (D,) or (B, D): components whose basis vector is supported inside the
    known pixels (|U| · 1[unknown] = 0). Exactly the pixel mask for the pixel basis."""
    m = np.asarray(mask, bool)
    lead = m.shape[:-3]
    flat = m.reshape(*lead, -1)
    if basis.kind == "pixel":
        return flat
    u = np.abs(np.asarray(basis.matrix(), np.float64))  # (D, D), rows = basis vectors
    leak = (~flat).astype(np.float64) @ u.T  # weight of each component on unknown pixels
    return leak <= 1e-6 * u.max(axis=1)


def known_values(basis, x_known, comp_mask) -> sampling.Known:
    """`sampling.Known(mask, z0)` for `generation.generate`: the components in `comp_mask`
    ((D,) or (B, D)) take their values from the images `x_known` (B, H, W, C), z0 = encode(x)."""
    x_known = np.asarray(x_known, np.float32)
    b, d = x_known.shape[0], basis.dim
    comp_mask = np.asarray(comp_mask, bool)
    if comp_mask.shape not in ((d,), (b, d)):
        raise ValueError(
            f"component mask has shape {tuple(comp_mask.shape)}; allowed: ({d},) or ({b}, {d})"
        )
    return sampling.Known(comp_mask, np.asarray(basis.encode(x_known), np.float32))


def inpaint(
    model,
    images,
    mask,
    *,
    rng,
    solver: str = "sde",
    steps: int = 250,
    paste: bool = True,
    **sampler_options,
) -> dict:
    """Fill the unknown pixels of `images` (B, H, W, C) ∈ [−1, 1]; `mask` True = known pixel,
    shape (H, W), (H, W, C) or (B, H, W, C). See the module docstring for non-pixel bases.
    `sampler_options`: time_grid, eta of `generation.generate`.

    Returns {'images' (B, H, W, C) numpy, 'component_mask', 'num_known_components',
    'num_known_pixels'}; with paste=True the known pixels of the output equal the input's.
    """
    basis = model.basis
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(basis.shape):
        raise ValueError(
            f"images have shape {images.shape}; expected (B, "
            f"{', '.join(map(str, basis.shape))}) like the model"
        )
    m = pixel_mask(mask, basis.shape, batch=images.shape[0])
    comp = known_components(basis, m)
    n_comp = int(comp.sum()) if comp.ndim == 1 else int(comp.sum(-1).min())
    if basis.kind != "pixel":
        log.info(
            "inpainting in the '%s' basis: %d of %d components lie inside the known pixels "
            "and are conditioned on; known pixels are pasted afterwards",
            basis.kind,
            n_comp,
            basis.dim,
        )
    b = len(images)
    known = known_values(basis, images, comp)
    out = generation.generate(
        model, b, rng=rng, solver=solver, steps=steps, batch_size=b, known=known,
        **sampler_options,
    )
    if paste:
        out = np.where(np.broadcast_to(m, out.shape), images, out)
    return {
        "images": out,
        "component_mask": comp,
        "num_known_components": n_comp,
        "num_known_pixels": int(m.sum()) if m.ndim == 3 else int(m.sum((1, 2, 3)).min()),
    }


def extend(
    model,
    *,
    width: int,
    shift: int,
    num: int,
    rng,
    solver: str = "sde",
    steps: int = 250,
    init=None,
    **sampler_options,
) -> np.ndarray:
    """Images (num, H, width, C) wider than the model's W, generated left to right.

    The first window is `init` (num, H, W, C) or an unconditional sample; each further
    window keeps the last W − shift columns (known, by replacement) and generates `shift`
    new ones. Needs 1 ≤ shift ≤ W − 1 and width ≥ W. `sampler_options`: time_grid, eta of
    `generation.generate`.
    """
    h, w, c = model.basis.shape
    if not isinstance(shift, int | np.integer) or not 1 <= shift <= w - 1:
        raise ValueError(
            f"config.sample.extend_columns={shift!r} must be an integer in [1, {w - 1}] "
            f"(new columns per window of width {w})"
        )
    if not isinstance(width, int | np.integer) or width < w:
        raise ValueError(
            f"config.sample.extend_width={width!r} must be an integer >= the training width {w}"
        )
    if not model.schedule.left_to_right:
        log.warning(
            "image extension with a '%s' schedule: the model does not generate left to "
            "right, so the kept columns are only conditioned on by replacement",
            model.schedule.kind,
        )
    k_init, k_loop = jax.random.split(rng)
    if init is None:  # an empty mask: unconditional, and the same compiled sampler as below
        empty = known_values(model.basis, np.zeros((num, h, w, c)), np.zeros(h * w * c, bool))
        canvas = generation.generate(
            model, num, rng=k_init, solver=solver, steps=steps, batch_size=num, known=empty,
            **sampler_options,
        )
    else:
        canvas = np.asarray(init, np.float32)
        if canvas.shape != (num, h, w, c):
            raise ValueError(f"init has shape {canvas.shape}; expected ({num}, {h}, {w}, {c})")
    keep = w - shift
    mask = np.zeros((h, w, c), bool)
    mask[:, :keep] = True
    comp = known_components(model.basis, mask)
    i = 0
    while canvas.shape[2] < width:
        window = np.zeros((num, h, w, c), np.float32)
        window[:, :, :keep] = canvas[:, :, -keep:]
        new = generation.generate(
            model,
            num,
            rng=jax.random.fold_in(k_loop, i),
            solver=solver,
            steps=steps,
            batch_size=num,
            known=known_values(model.basis, window, comp),
            **sampler_options,
        )
        canvas = np.concatenate([canvas, new[:, :, keep:]], axis=2)
        i += 1
    return canvas[:, :, :width]
