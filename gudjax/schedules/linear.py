"""The linear soft-conditioning families (docs/maths.md §3): soft, soft_mixed, column, haar_column.

Every member is defined by effective labels e_i (larger e = noised earlier = generated later),
the generation window [γ̃_den, γ̃_noise] (W = γ̃_noise − γ̃_den, E = e_max − e_min) and the
terminal level γ_end. Along a path coordinate s (in units of γ̃):
    γ̃_i(s) = γ̃_den + (e_i − e_max) + s,      s ∈ [0, W + E + Δ],      γ_i = γ̃_i + ρ_i
    T_i = max(γ̃_noise, γ_end − min(ρ_i, 0))                  terminal target of γ̃_i
    Δ   = max(0, max_i [T_i − γ̃_noise − (e_i − e_min)])       extra path after generation
computed as γ_i = [γ̃_den − e_max + s] + (e_i + ρ_i), so "unwhitened, a = 1, variance labels"
(e_i = −ρ_i) gives bit-identical γ_i for all i: standard diffusion. With clipping, γ̃_i is
clipped to [γ̃_den, T_i].

Time: the generation phase s ∈ [0, W + E] (every window of every component) takes t ∈ [0, t*],
linearly; the tail s ∈ [W + E, W + E + Δ], where only components short of their terminal
target still move, takes t ∈ [t*, 1], linearly. The tail's share is 1 − t* =
min(Δ/(W + E + Δ), `tail`): one uniform time scale when the extra path is short (then s = t·(W
+ E + Δ); whitened defaults: Δ = 2, 1 − t* = 2/22), at most `tail` (default 0.2) when it is
long (white prior with near-constant pixels: Δ ≈ 9 on the 17-level digits).

End points: γ̃_i(0) ≤ γ̃_den and, at t = 1, γ̃_i(1) ≥ T_i, i.e. both γ̃_i(1) ≥ γ_end and
γ_i(1) ≥ γ_end: the process reaches N(0, I) in every basis and prior. Δ = 0 whenever the
window alone gets there (e.g. whitened with γ_end ≤ γ̃_noise, the schedule of the paper).
Inside the generation phase every time is the old one times t*: the order and relative
timing of generation are unchanged and b ↔ a holds inside [0, t*].
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
    terminal_targets,
)

Array = Any
#: Largest share of the time axis after the generation phase (docs/maths.md §3, end points).
TAIL = 0.2


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
    t_star is the end of the generation phase (a kink of every moving component).
    """

    start: Array
    end: Array
    settle: Array
    t_star: Array


# ------------------------------------------------------------------ the shared base
@dataclasses.dataclass(frozen=True)
class LinearSchedule(Schedule):
    """Base of the linear families: subclasses define `effective_labels(params)`."""

    labels: Array
    gamma_den: Array
    gamma_noise: Array
    gamma_end: Array
    tail: Array
    clip: bool

    static_fields: ClassVar[tuple[str, ...]] = ("clip",)
    common_options: ClassVar[tuple[str, ...]] = (
        "clip", "gamma_den", "gamma_noise", "gamma_end", "tail"
    )
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
        return terminal_targets(self.rho, self.gamma_noise, self.gamma_end)

    def _path(self, e: Array) -> tuple[Array, Array, Array, Array]:
        """(e_max, W + E, Δ, t*) of the member with effective labels e."""
        e_max, e_min = jnp.max(e), jnp.min(e)
        extent = self.width + (e_max - e_min)
        extra = jnp.maximum(
            0.0, jnp.max(self.terminal_targets() - self.gamma_noise - (e - e_min))
        )
        t_star = 1.0 - jnp.minimum(extra / (extent + extra), self.tail)
        return e_max, extent, extra, t_star

    @staticmethod
    def _s_of_t(t, extent, extra, t_star) -> Array:
        """Path coordinate s(t): linear on [0, t*] to W + E, then linear on [t*, 1] to W + E + Δ."""
        tail = 1.0 - t_star
        in_tail = extent + (t - t_star) * extra / jnp.maximum(tail, 1e-12)
        return jnp.where(t <= t_star, t * extent / t_star, in_tail)

    def _t_of_s(self, s, extent, extra, t_star) -> Array:
        """The inverse of `_s_of_t` (times of given path positions)."""
        tail = 1.0 - t_star
        in_tail = t_star + (s - extent) * tail / jnp.maximum(extra, 1e-12)
        return jnp.where(s <= extent, s * t_star / extent, in_tail)

    def _gamma(self, t, p: dict) -> Array:
        e = self._e(p)
        e_max, extent, extra, t_star = self._path(e)
        common = self.gamma_den - e_max + self._s_of_t(t, extent, extra, t_star)
        if self.clip:
            return jnp.clip(common + e, self.gamma_den, self.terminal_targets()) + self.rho
        return common + (e + self.rho)

    def windows(self, params: Mapping | None = None) -> Windows:
        """Start, generation-window end and settle times of every component (see `Windows`)."""
        e = self.effective_labels(params)
        e_max, extent, extra, t_star = self._path(e)
        at = lambda s: self._t_of_s(s, extent, extra, t_star)
        s0 = e_max - e
        return Windows(
            start=at(s0),
            end=at(s0 + self.width),
            settle=at(s0 + self.terminal_targets() - self.gamma_den),
            t_star=t_star,
        )

    def kinks(self, params: Mapping | None = None) -> Array | None:
        """Times where β jumps: t* (the speed of the path changes there) and, clipped, where
        γ̃_i leaves γ̃_den and where it reaches T_i; (1,) or (2D + 1,)."""
        w = self.windows(params)
        t_star = jnp.reshape(w.t_star, (1,))
        if not self.clip:
            return t_star.astype(jnp.float32)
        return jnp.concatenate([w.start, w.settle, t_star]).astype(jnp.float32)

    @classmethod
    def _common(cls, *, clip, gamma_den, gamma_noise, gamma_end, tail) -> dict:
        if not gamma_den < gamma_noise:
            raise ValueError(f"need gamma_den < gamma_noise, got {gamma_den} >= {gamma_noise}")
        if not 0.0 < float(tail) < 1.0:
            raise ValueError(f"need 0 < tail < 1 (the time share after generation), got {tail}")
        return dict(
            gamma_den=f32(gamma_den),
            gamma_noise=f32(gamma_noise),
            gamma_end=f32(gamma_end),
            tail=f32(tail),
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
    options: ClassVar[tuple[str, ...]] = (
        "labels", "normalise", "a", *LinearSchedule.common_options
    )

    def _e(self, p):
        return p["a"] * self.labels

    @classmethod
    def build(cls, *, basis, dim, rho, labels="variance", normalise=False, a=1.0, clip=None,
              gamma_den=GAMMA_DEN, gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END, tail=TAIL):
        lab = _label_array(basis, labels, dim)
        if normalise:
            lab = normalise_labels(lab)
        return cls(
            rho=f32(rho),
            defaults=_defaults(a=a),
            labels=f32(lab),
            **cls._common(clip=clip, gamma_den=gamma_den, gamma_noise=gamma_noise,
                          gamma_end=gamma_end, tail=tail),
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
              gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END, tail=TAIL):
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
                          gamma_end=gamma_end, tail=tail),
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
    left_to_right: ClassVar[bool] = True

    def _e(self, p):
        return b_to_a(p["b"], self.width) * self.labels

    @classmethod
    def build(cls, *, basis, dim, rho, labels="column", b=0.5, clip=None, gamma_den=GAMMA_DEN,
              gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END, tail=TAIL):
        _check_b("column", b)
        return cls(
            rho=f32(rho),
            defaults=_defaults(b=b),
            labels=f32(normalise_labels(_label_array(basis, labels, dim))),
            **cls._common(clip=clip, gamma_den=gamma_den, gamma_noise=gamma_noise,
                          gamma_end=gamma_end, tail=tail),
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
    left_to_right: ClassVar[bool] = True

    def _e(self, p):
        return p["a"] * self.labels + b_to_a(p["b"], self.width) * self.colpos

    @classmethod
    def build(cls, *, basis, dim, rho, level="level", colpos="colpos", a=0.5, b=0.5, clip=None,
              gamma_den=GAMMA_DEN, gamma_noise=GAMMA_NOISE, gamma_end=GAMMA_END, tail=TAIL):
        _check_b("haar_column", b)
        return cls(
            rho=f32(rho),
            defaults=_defaults(a=a, b=b),
            labels=f32(_label_array(basis, level, dim, "level")),
            colpos=f32(normalise_labels(_label_array(basis, colpos, dim, "colpos"))),
            **cls._common(clip=clip, gamma_den=gamma_den, gamma_noise=gamma_noise,
                          gamma_end=gamma_end, tail=tail),
        )

    @classmethod
    def example(cls, basis=None, dim=None):
        if basis is None or not {"level", "colpos"} <= set(basis.labels):
            d = basis.dim if basis is not None else dim
            idx = np.arange(d)
            return make_schedule("haar_column", basis, dim=None if basis else d,
                                 level=idx % 3, colpos=(idx // 3) % 4, a=0.5, b=0.3)
        return make_schedule("haar_column", basis, a=0.5, b=0.3)
