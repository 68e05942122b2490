"""The exact autoregressive limit of the linear families (docs/maths.md §10.4): `autoregressive`.

Components are split into K ordered blocks by a label set of the basis (lowest label =
generated FIRST, as in every linear family: PCA by variance, Fourier by frequency, Haar by
level, pixel columns). In forward time block k (k = 0 generated first) is noised only on its
own window [(K − 1 − k)/K, (K − k)/K], linearly in γ̃ from the common γ̃_den to its terminal
target T_i = max(γ̃_noise, γ_end − min(ρ_i, 0)); outside it β = 0. So at most one block changes
at any time, and every member shares the end points of the clipped (matched) linear families:
γ̃_i(0) = γ̃_den and γ̃_i(1) = T_i.

Blocks: with `num_blocks` None every distinct label value is a block (pixel columns: one block
per column; Haar levels: one per level); with `num_blocks = K` the components are ranked by label
and cut into K blocks of (nearly) equal size, ties kept together.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from gudjax.schedules.core import (
    GAMMA_DEN,
    GAMMA_END,
    GAMMA_NOISE,
    Schedule,
    _label_array,
    f32,
    make_schedule,
    register_schedule,
    terminal_targets,
)

Array = Any


def label_blocks(labels, num_blocks: int | None = None) -> np.ndarray:
    """Block index (0 = generated first) of every component from its label, (D,) int."""
    labels = np.asarray(labels, np.float64)
    values, inverse = np.unique(labels, return_inverse=True)
    if num_blocks is None or num_blocks >= len(values):
        return inverse.astype(np.int32)
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be a positive int, got {num_blocks}")
    # rank the distinct values by how many components lie below them; cut into K equal shares
    counts = np.bincount(inverse, minlength=len(values))
    below = np.cumsum(counts) - counts  # components before each distinct value
    blocks = np.minimum((below * num_blocks) // len(labels), num_blocks - 1)
    return blocks[inverse].astype(np.int32)


@register_schedule("autoregressive")
@dataclasses.dataclass(frozen=True)
class Autoregressive(Schedule):
    """K blocks, one time window each (see the module docstring)."""

    block: Array  # (D,) block index as float
    num_blocks: Array
    gamma_den: Array
    gamma_noise: Array
    gamma_end: Array

    options: ClassVar[tuple[str, ...]] = (
        "labels", "num_blocks", "gamma_den", "gamma_noise", "gamma_end"
    )
    clip: ClassVar[bool] = True

    def terminal_targets(self) -> Array:
        """T_i = max(γ̃_noise, γ_end − min(ρ_i, 0)) (as in the linear families)."""
        return terminal_targets(self.rho, self.gamma_noise, self.gamma_end)

    def window_start(self) -> Array:
        """Forward-time start of each component's block window, (D,)."""
        return (self.num_blocks - 1.0 - self.block) / self.num_blocks

    def _gamma(self, t, p):
        u = jnp.clip(self.num_blocks * t - (self.num_blocks - 1.0 - self.block), 0.0, 1.0)
        return self.gamma_den + (self.terminal_targets() - self.gamma_den) * u + self.rho

    def kinks(self, params=None) -> Array:
        """Every block window's start and end, (2D,)."""
        start = self.window_start()
        return jnp.concatenate([start, start + 1.0 / self.num_blocks]).astype(jnp.float32)

    @classmethod
    def build(cls, *, basis, dim, rho, labels="variance", num_blocks=None, gamma_den=GAMMA_DEN,
              gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END):
        if not gamma_den < gamma_noise:
            raise ValueError(f"need gamma_den < gamma_noise, got {gamma_den} >= {gamma_noise}")
        blocks = label_blocks(_label_array(basis, labels, dim), num_blocks)
        return cls(
            rho=f32(rho),
            defaults={},
            block=f32(blocks),
            num_blocks=f32(int(blocks.max()) + 1),
            gamma_den=f32(gamma_den),
            gamma_noise=f32(gamma_noise),
            gamma_end=f32(gamma_end),
        )

    @classmethod
    def example(cls, basis=None, dim=None):
        if basis is None or "level" not in basis.labels:
            d = basis.dim if basis is not None else dim
            return make_schedule("autoregressive", basis, dim=None if basis else d,
                                 labels=np.arange(d) % 4)
        return make_schedule("autoregressive", basis, labels="level")
