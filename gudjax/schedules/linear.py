"""The linear soft-conditioning families (docs/maths.md §3): soft, soft_mixed, column, haar_column.

Every member is defined by effective labels e_i (larger e = noised earlier = generated later),
the generation window [γ̃_den, γ̃_noise] (W = γ̃_noise − γ̃_den, E = e_max − e_min) and the
terminal level γ_end:
    T_i = max(γ̃_noise, γ_end − min(ρ_i, 0))                     terminal target of γ̃_i
    Δ   = max(0, max_i [T_i − γ̃_noise − (e_i − e_min)])          shared stretch
    γ̃_i(t) = γ̃_den + (e_i − e_max) + t·(W + E + Δ),     γ_i = γ̃_i + ρ_i
computed as γ_i = [γ̃_den − e_max + t(W + E + Δ)] + (e_i + ρ_i), so "unwhitened, a = 1,
variance labels" (e_i = −ρ_i) gives bit-identical γ_i for all i: standard diffusion.
With clipping, γ̃_i is clipped to [γ̃_den, T_i].

End points: γ̃_i(0) ≤ γ̃_den and, at t = 1, γ̃_i(1) ≥ T_i, i.e. both γ̃_i(1) ≥ γ_end and
γ_i(1) ≥ γ_end: the process reaches N(0, I) in every basis and prior. Δ = 0 whenever the
window alone gets there (e.g. whitened with γ_end ≤ γ̃_noise, the schedule of the paper).
Δ slows the whole schedule uniformly, so every crossing time scales by (W + E)/(W + E + Δ):
the order and relative timing of generation are unchanged and b ↔ a holds inside the
generation phase [0, (W + E)/(W + E + Δ)].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

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
)

Array = Any


# ------------------------------------------------------------------ conversions
def b_to_a(b, width=GAMMA_NOISE - GAMMA_DEN):
    """Sequential offset fraction b ∈ [0, 1) → label scale a for labels spanning [0, 1].

    With clipping, the linear schedule with e = a·l, l ∈ [0, 1], has E = a and offset
    fraction b = E/(W + E) inside its generation phase, hence a = b·W/(1 − b).
    """
    return b * width / (1.0 - b)


def a_to_b(a, width=GAMMA_NOISE - GAMMA_DEN):
    """Inverse of `b_to_a`: b = a/(W + a)."""
    return a / (width + a)


def normalise_labels(labels) -> np.ndarray:
    """Map labels affinely onto [0, 1] (constant labels → 0)."""
    labels = np.asarray(labels, np.float64)
    span = labels.max() - labels.min()
    return ((labels - labels.min()) / span if span > 0 else np.zeros_like(labels)).astype(
        np.float32
    )


class Windows(NamedTuple):
    """Per-component times of a linear member, each (D,):
    start  γ̃_i leaves γ̃_den (forward time; the component is generated, in reverse time, when
           the sampler gets back here),
    end    γ̃_i reaches γ̃_noise (end of the generation window),
    settle γ̃_i reaches its terminal target T_i (clipped: β_i = 0 after it).
    """

    start: Array
    end: Array
    settle: Array


# ------------------------------------------------------------------ the shared base
@dataclasses.dataclass(frozen=True)
class LinearSchedule(Schedule):
    """Base of the linear families: subclasses define `effective_labels(params)`."""

    labels: Array
    gamma_den: Array
    gamma_noise: Array
    gamma_end: Array
    clip: bool

    static_fields: ClassVar[tuple[str, ...]] = ("clip",)
    common_options: ClassVar[tuple[str, ...]] = ("clip", "gamma_den", "gamma_noise", "gamma_end")
    clip_default: ClassVar[bool] = False

    @property
    def width(self) -> Array:
        return self.gamma_noise - self.gamma_den

    def _e(self, p: dict) -> Array:
        raise NotImplementedError

    def effective_labels(self, params: Mapping | None = None) -> Array:
        """e_i (larger = noised earlier = generated later)."""
        return self._e(self._resolve(params))

    def terminal_targets(self) -> Array:
        """T_i = max(γ̃_noise, γ_end − min(ρ_i, 0)), the γ̃_i every member reaches at t = 1."""
        return jnp.maximum(self.gamma_noise, self.gamma_end - jnp.minimum(self.rho, 0.0))

    def _rate(self, e: Array) -> tuple[Array, Array]:
        """(e_max, W + E + Δ): γ̃_i(t) = γ̃_den + e_i − e_max + t·rate."""
        e_max, e_min = jnp.max(e), jnp.min(e)
        stretch = jnp.maximum(
            0.0, jnp.max(self.terminal_targets() - self.gamma_noise - (e - e_min))
        )
        return e_max, self.width + (e_max - e_min) + stretch

    def _gamma(self, t, p: dict) -> Array:
        e = self._e(p)
        e_max, rate = self._rate(e)
        common = self.gamma_den - e_max + t * rate
        if self.clip:
            return jnp.clip(common + e, self.gamma_den, self.terminal_targets()) + self.rho
        return common + (e + self.rho)

    def windows(self, params: Mapping | None = None) -> Windows:
        """Start, generation-window end and settle times of every component (see `Windows`)."""
        e = self.effective_labels(params)
        e_max, rate = self._rate(e)
        start = (e_max - e) / rate
        return Windows(
            start=start,
            end=start + self.width / rate,
            settle=start + (self.terminal_targets() - self.gamma_den) / rate,
        )

    def kinks(self, params: Mapping | None = None) -> Array | None:
        """Clipped: β_i jumps where γ̃_i leaves γ̃_den and where it reaches T_i, (2D,)."""
        if not self.clip:
            return None
        w = self.windows(params)
        return jnp.concatenate([w.start, w.settle]).astype(jnp.float32)

    @classmethod
    def _common(cls, *, clip, gamma_den, gamma_noise, gamma_end) -> dict:
        if not gamma_den < gamma_noise:
            raise ValueError(f"need gamma_den < gamma_noise, got {gamma_den} >= {gamma_noise}")
        return dict(
            gamma_den=f32(gamma_den),
            gamma_noise=f32(gamma_noise),
            gamma_end=f32(gamma_end),
            clip=cls.clip_default if clip is None else bool(clip),
        )


def _defaults(**values) -> dict:
    return {k: f32(v) for k, v in values.items()}


# ------------------------------------------------------------------ the families
@register_schedule("soft")
@dataclasses.dataclass(frozen=True)
class Soft(LinearSchedule):
    """e = a · l for one label set l of the basis (variance, frequency, level, ...)."""

    param_names: ClassVar[tuple[str, ...]] = ("a",)
    options: ClassVar[tuple[str, ...]] = ("labels", "normalise", "a", *LinearSchedule.common_options)

    def _e(self, p):
        return p["a"] * self.labels

    @classmethod
    def build(cls, *, basis, dim, rho, labels="variance", normalise=False, a=1.0, clip=None,
              gamma_den=GAMMA_DEN, gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END):
        lab = _label_array(basis, labels, dim)
        if normalise:
            lab = normalise_labels(lab)
        return cls(
            rho=f32(rho),
            defaults=_defaults(a=a),
            labels=f32(lab),
            **cls._common(clip=clip, gamma_den=gamma_den, gamma_noise=gamma_noise,
                          gamma_end=gamma_end),
        )

    @classmethod
    def example(cls, basis=None, dim=None):
        labels = "variance" if basis is not None else np.linspace(0.0, 2.0, dim)
        return make_schedule("soft", basis, dim=dim, labels=labels, a=0.7)


@register_schedule("soft_mixed")
@dataclasses.dataclass(frozen=True)
class SoftMixed(LinearSchedule):
    """e = a · [(1 − r)·l + r·c·m]: a label set l mixed with a second one m, c = span(l)/span(m)
    (the Fourier (a, r) family of docs/maths.md §9: l = −log λ, m = log(1 + |k|))."""

    mix_labels: Array
    mix_scale: Array

    param_names: ClassVar[tuple[str, ...]] = ("a", "r")
    options: ClassVar[tuple[str, ...]] = (
        "labels", "mix_labels", "normalise", "a", "r", *LinearSchedule.common_options
    )

    def _e(self, p):
        return p["a"] * ((1.0 - p["r"]) * self.labels + p["r"] * self.mix_scale * self.mix_labels)

    @classmethod
    def build(cls, *, basis, dim, rho, labels="variance", mix_labels="frequency",
              normalise=False, a=1.0, r=0.0, clip=None, gamma_den=GAMMA_DEN,
              gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END):
        l1 = _label_array(basis, labels, dim)
        l2 = _label_array(basis, mix_labels, dim, "mix_labels")
        if normalise:
            l1, l2 = normalise_labels(l1), normalise_labels(l2)
            scale = 1.0
        else:
            span1, span2 = float(np.ptp(l1)), float(np.ptp(l2))
            scale = span1 / span2 if span2 > 0 else 0.0
        return cls(
            rho=f32(rho),
            defaults=_defaults(a=a, r=r),
            labels=f32(l1),
            mix_labels=f32(l2),
            mix_scale=f32(scale),
            **cls._common(clip=clip, gamma_den=gamma_den, gamma_noise=gamma_noise,
                          gamma_end=gamma_end),
        )

    @classmethod
    def example(cls, basis=None, dim=None):
        if basis is None:
            return make_schedule("soft_mixed", dim=dim, labels=np.linspace(0.0, 2.0, dim),
                                 mix_labels=np.cos(np.arange(dim)), a=0.8, r=0.4)
        mix = "frequency" if "frequency" in basis.labels else "index"
        return make_schedule("soft_mixed", basis, mix_labels=mix, a=0.8, r=0.4)


def _check_b(name: str, b) -> None:
    if not 0.0 <= float(b) < 1.0:
        raise ValueError(f"schedule '{name}' needs 0 <= b < 1, got b={b}")


@register_schedule("column")
@dataclasses.dataclass(frozen=True)
class Column(LinearSchedule):
    """Pixel columns, sequential: e = c(b)·colpos, colpos ∈ [0, 1] (left column = 0 = generated
    FIRST), c(b) = b·W/(1 − b); clipped by default."""

    param_names: ClassVar[tuple[str, ...]] = ("b",)
    options: ClassVar[tuple[str, ...]] = ("labels", "b", *LinearSchedule.common_options)
    clip_default: ClassVar[bool] = True

    def _e(self, p):
        return b_to_a(p["b"], self.width) * self.labels

    @classmethod
    def build(cls, *, basis, dim, rho, labels="column", b=0.5, clip=None, gamma_den=GAMMA_DEN,
              gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END):
        _check_b("column", b)
        return cls(
            rho=f32(rho),
            defaults=_defaults(b=b),
            labels=f32(normalise_labels(_label_array(basis, labels, dim))),
            **cls._common(clip=clip, gamma_den=gamma_den, gamma_noise=gamma_noise,
                          gamma_end=gamma_end),
        )

    @classmethod
    def example(cls, basis=None, dim=None):
        if basis is None or "column" not in basis.labels:
            d = basis.dim if basis is not None else dim
            return make_schedule("column", basis, dim=None if basis else d,
                                 labels=np.arange(d) % 4, b=0.3)
        return make_schedule("column", basis, b=0.3)


@register_schedule("haar_column")
@dataclasses.dataclass(frozen=True)
class HaarColumn(LinearSchedule):
    """e = a·level + c(b)·colpos (colpos ∈ [0, 1] inside each Haar sub-band); clipped by default.
    At a = 0 it is the column schedule with fraction b applied to every sub-band."""

    colpos: Array

    param_names: ClassVar[tuple[str, ...]] = ("a", "b")
    options: ClassVar[tuple[str, ...]] = (
        "level", "colpos", "a", "b", *LinearSchedule.common_options
    )
    clip_default: ClassVar[bool] = True

    def _e(self, p):
        return p["a"] * self.labels + b_to_a(p["b"], self.width) * self.colpos

    @classmethod
    def build(cls, *, basis, dim, rho, level="level", colpos="colpos", a=0.5, b=0.5, clip=None,
              gamma_den=GAMMA_DEN, gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END):
        _check_b("haar_column", b)
        return cls(
            rho=f32(rho),
            defaults=_defaults(a=a, b=b),
            labels=f32(_label_array(basis, level, dim, "level")),
            colpos=f32(normalise_labels(_label_array(basis, colpos, dim, "colpos"))),
            **cls._common(clip=clip, gamma_den=gamma_den, gamma_noise=gamma_noise,
                          gamma_end=gamma_end),
        )

    @classmethod
    def example(cls, basis=None, dim=None):
        if basis is None or not {"level", "colpos"} <= set(basis.labels):
            d = basis.dim if basis is not None else dim
            idx = np.arange(d)
            return make_schedule("haar_column", basis, dim=None if basis else d,
                                 level=idx % 3, colpos=(idx // 3) % 4, a=0.5, b=0.3)
        return make_schedule("haar_column", basis, a=0.5, b=0.3)
