"""Families given on the process γ directly (docs/maths.md §3): scalar_linear, cosine, function.

  scalar_linear  γ(t) = γ_min + (γ_max − γ_min)·t for every component (VDM: −13.3, 5)
  cosine         γ(t) = 2 log tan(π/2 · u(t)), u linear between the γ_min and γ_max points
  function       any user function γ(t) → (D,) or scalar (β via jvp like every other family)
They set the process γ, so at t = 1 σ²(1) = sigmoid(γ_max) in every basis; the true
γ̃ = γ − ρ at t = 0 depends on the prior (`endpoint_report` shows it).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from gudjax.schedules.core import (
    VDM_GAMMA_MAX,
    VDM_GAMMA_MIN,
    Schedule,
    f32,
    make_schedule,
    register_schedule,
)

Array = Any


def _check_range(gamma_min, gamma_max) -> None:
    if not gamma_min < gamma_max:
        raise ValueError(f"need gamma_min < gamma_max, got {gamma_min} >= {gamma_max}")


@dataclasses.dataclass(frozen=True)
class _GammaRange(Schedule):
    """A shared process γ(t) from γ_min at t = 0 to γ_max at t = 1 (subclasses: the shape)."""

    gamma_min: Array
    gamma_max: Array

    options: ClassVar[tuple[str, ...]] = ("gamma_min", "gamma_max")
    clip: ClassVar[bool] = False

    @classmethod
    def build(cls, *, basis, dim, rho, gamma_min=VDM_GAMMA_MIN, gamma_max=VDM_GAMMA_MAX):
        _check_range(gamma_min, gamma_max)
        return cls(rho=f32(rho), defaults={}, gamma_min=f32(gamma_min), gamma_max=f32(gamma_max))


@register_schedule("scalar_linear")
@dataclasses.dataclass(frozen=True)
class ScalarLinear(_GammaRange):
    """γ(t) = γ_min + (γ_max − γ_min)·t, shared by every component."""

    def _gamma(self, t, p):
        return (self.gamma_min + (self.gamma_max - self.gamma_min) * t) * jnp.ones_like(self.rho)


@register_schedule("cosine")
@dataclasses.dataclass(frozen=True)
class Cosine(_GammaRange):
    """γ(t) = 2 log tan(π/2 · u), u = u0 + (u1 − u0)·t with γ(0) = γ_min and γ(1) = γ_max."""

    def _gamma(self, t, p):
        u0 = 2.0 / jnp.pi * jnp.arctan(jnp.exp(0.5 * self.gamma_min))
        u1 = 2.0 / jnp.pi * jnp.arctan(jnp.exp(0.5 * self.gamma_max))
        u = u0 + (u1 - u0) * t
        return 2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * u)) * jnp.ones_like(self.rho)


@register_schedule("function")
@dataclasses.dataclass(frozen=True)
class Function(Schedule):
    """Any γ(t) given as a Python function of scalar t (β via jvp). Not settable from a config
    file (a function is code); build it with `make_schedule("function", basis, fn=...)`."""

    fn: Callable

    options: ClassVar[tuple[str, ...]] = ("fn",)
    static_fields: ClassVar[tuple[str, ...]] = ("fn",)
    clip: ClassVar[bool] = False

    def _gamma(self, t, p):
        return jnp.broadcast_to(self.fn(t), self.rho.shape).astype(jnp.float32)

    @classmethod
    def build(cls, *, basis, dim, rho, fn=None):
        if fn is None or not callable(fn):
            raise ValueError("schedule 'function' needs fn=callable(t) -> gamma")
        return cls(rho=f32(rho), defaults={}, fn=fn)

    @classmethod
    def example(cls, basis=None, dim=None):
        d = basis.dim if basis is not None else dim
        return make_schedule("function", basis, dim=None if basis is not None else d,
                             fn=_example_gamma(d))


@functools.cache
def _example_gamma(d: int) -> _ExampleGamma:
    """One function object per size, so example schedules of one size share a structure."""
    return _ExampleGamma(np.linspace(0.0, 1.0, d).astype(np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class _ExampleGamma:
    """γ(t) = −12 + 18 t + 2 sin(π t)·ramp: smooth, increasing, component-wise (hashed by id)."""

    ramp: Any

    def __call__(self, t):
        return -12.0 + 18.0 * t + 2.0 * jnp.sin(jnp.pi * t) * self.ramp
