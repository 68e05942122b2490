"""Component-wise noise schedules γ(t) ∈ R^D (SPEC §3).

A schedule is a frozen pytree: its arrays (ρ, labels, levels) are data, its kind is static.
`schedule.gamma(t, params)` is pure and jit/vmap-able in both the time t ∈ [0, 1] and the
family parameters `params` (a dict of scalars such as {"a": 1.2, "b": 0.5}), so one network
can be trained over a whole family without recompiling.

Notation. γ_i = log(σ_i²/α_i²); ρ_i = log Var(z_0,i); γ̃_i = γ_i − ρ_i = −log SNR_i.

Canonical linear soft-conditioning schedule from effective labels e_i (larger e = noised
earlier = generated later), W = γ̃_noise − γ̃_den, E = e_max − e_min:
    γ̃_i(t) = γ̃_den + (e_i − e_max) + t·(W + E),       γ_i = γ̃_i + ρ_i
computed as γ_i = [γ̃_den − e_max + t(W + E)] + (e_i + ρ_i), so that "unwhitened, a = 1,
variance labels" (e_i = −ρ_i) gives bit-identical γ_i for all i: standard diffusion.
With clipping, γ̃ is clipped to [γ̃_den, γ̃_noise] and component i is active on the window
[(e_max − e_i)/(W + E), (e_max − e_i + W)/(W + E)].

Kinds (`make_schedule` config `name`):
  scalar_linear  γ(t) = γ_min + (γ_max − γ_min)·t for every component (VDM: −13.3, 5)
  cosine         γ(t) = 2 log tan(π/2 · u(t)), u linear between the γ_min and γ_max points
  soft           e = a · l,  l = a label set of the basis (variance, frequency, level, ...)
  soft_mixed     e = a · [(1 − r)·l₁ + r·c·l₂],  c = span(l₁)/span(l₂)   (Fourier (a, r))
  column         pixel columns, sequential: e = c(b)·colpos, clipped, c(b) = bW/(1 − b)
  haar_column    e = a·level + c(b)·colpos (colpos inside each sub-band), clipped
  function       any user function γ(t) → (D,) or scalar (β via jvp like every other kind)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any

GAMMA_DEN = -7.0  # γ̃ at which a component counts as clean (log SNR = 7)
GAMMA_NOISE = 3.0  # γ̃ at which a component counts as noise (log SNR = −3)
VDM_GAMMA_MIN = -13.3
VDM_GAMMA_MAX = 5.0

SCHEDULES = ("scalar_linear", "cosine", "soft", "soft_mixed", "column", "haar_column", "function")
FAMILY_PARAMS = {
    "scalar_linear": (),
    "cosine": (),
    "soft": ("a",),
    "soft_mixed": ("a", "r"),
    "column": ("b",),
    "haar_column": ("a", "b"),
    "function": (),
}


def registered_schedules() -> tuple[str, ...]:
    """Names of every registered schedule family (config.schedule.name values)."""
    return tuple(SCHEDULES)


def family_params(name: str) -> tuple[str, ...]:
    """The family parameter names of schedule `name` (one-line error for an unknown name)."""
    if name not in FAMILY_PARAMS:
        raise ValueError(
            f"unknown config.schedule.name '{name}'; allowed: {', '.join(registered_schedules())}"
        )
    return FAMILY_PARAMS[name]


# ------------------------------------------------------------------ conversions
def b_to_a(b, width=GAMMA_NOISE - GAMMA_DEN):
    """Sequential offset fraction b ∈ [0, 1) → label scale a for labels spanning [0, 1].

    With clipping, the linear schedule with e = a·l, l ∈ [0, 1], has E = a and offset
    fraction b = E/(W + E), hence a = b·W/(1 − b).
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


def linear_soft_gamma(t, e, rho, gamma_den, gamma_noise, clip: bool):
    """The canonical linear schedule γ(t) (SPEC §3) from effective labels e, (D,)."""
    width = gamma_noise - gamma_den
    e_max = jnp.max(e)
    extent = e_max - jnp.min(e)
    common = gamma_den - e_max + t * (width + extent)
    if clip:
        return jnp.clip(common + e, gamma_den, gamma_noise) + rho
    return common + (e + rho)


def windows(e, gamma_den=GAMMA_DEN, gamma_noise=GAMMA_NOISE):
    """(start, end) in t of every component's active window under clipping."""
    e = np.asarray(e, np.float64)
    width = gamma_noise - gamma_den
    total = width + e.max() - e.min()
    start = (e.max() - e) / total
    return start, start + width / total


# ------------------------------------------------------------------ the pytree
@dataclasses.dataclass(frozen=True)
class Schedule:
    """γ(t, params) for one schedule family.

    Data: rho (D,), labels (D,), labels2 (D,), consts (dict of scalars), defaults (dict of
    the family parameters' default values). Static: kind, clip, fn (for kind 'function').
    """

    kind: str
    clip: bool
    fn: Callable | None
    rho: Array
    labels: Array
    labels2: Array
    consts: dict
    defaults: dict

    @property
    def dim(self) -> int:
        return int(self.rho.shape[-1])

    @property
    def param_names(self) -> tuple[str, ...]:
        return FAMILY_PARAMS[self.kind]

    def params(self, **overrides) -> dict:
        """Family parameters: defaults updated by `overrides` (unknown names are errors)."""
        unknown = set(overrides) - set(self.param_names)
        if unknown:
            allowed = ", ".join(self.param_names) or "none"
            raise ValueError(
                f"schedule '{self.kind}' has no parameter(s) {sorted(unknown)}; allowed: {allowed}"
            )
        return {**self.defaults, **{k: jnp.asarray(v, jnp.float32) for k, v in overrides.items()}}

    def effective_labels(self, params: Mapping | None = None) -> Array:
        """e_i for the linear families (larger = noised earlier = generated later)."""
        if params:
            unknown = set(params) - set(self.param_names)
            if unknown:
                raise ValueError(
                    f"schedule '{self.kind}' has no parameter(s) {sorted(unknown)}; "
                    f"allowed: {', '.join(self.param_names)}"
                )
        p = self.defaults if params is None else {**self.defaults, **params}
        c = self.consts
        if self.kind == "soft":
            return p["a"] * self.labels
        if self.kind == "soft_mixed":
            return p["a"] * ((1.0 - p["r"]) * self.labels + p["r"] * c["mix_scale"] * self.labels2)
        if self.kind == "column":
            return b_to_a(p["b"], c["gamma_noise"] - c["gamma_den"]) * self.labels
        if self.kind == "haar_column":
            cb = b_to_a(p["b"], c["gamma_noise"] - c["gamma_den"])
            return p["a"] * self.labels + cb * self.labels2
        raise ValueError(f"schedule '{self.kind}' has no effective labels")

    def gamma(self, t, params: Mapping | None = None) -> Array:
        """γ(t) ∈ R^D for scalar t (vmap for batches)."""
        t = jnp.asarray(t, jnp.float32)
        c = self.consts
        ones = jnp.ones_like(self.rho)
        if self.kind == "scalar_linear":
            return (c["gamma_min"] + (c["gamma_max"] - c["gamma_min"]) * t) * ones
        if self.kind == "cosine":
            u0 = 2.0 / jnp.pi * jnp.arctan(jnp.exp(0.5 * c["gamma_min"]))
            u1 = 2.0 / jnp.pi * jnp.arctan(jnp.exp(0.5 * c["gamma_max"]))
            u = u0 + (u1 - u0) * t
            return 2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * u)) * ones
        if self.kind == "function":
            return jnp.broadcast_to(self.fn(t), self.rho.shape).astype(jnp.float32)
        e = self.effective_labels(params)
        return linear_soft_gamma(t, e, self.rho, c["gamma_den"], c["gamma_noise"], self.clip)

    def gamma_tilde(self, t, params: Mapping | None = None) -> Array:
        """γ̃ = γ − ρ = −log SNR_i(t)."""
        return self.gamma(t, params) - self.rho

    def gamma_and_derivative(self, t, params: Mapping | None = None):
        """(γ(t), dγ/dt) by forward-mode autodiff (never a hand-written derivative)."""
        t = jnp.asarray(t, jnp.float32)
        return jax.jvp(lambda s: self.gamma(s, params), (t,), (jnp.ones_like(t),))


jax.tree_util.register_dataclass(
    Schedule,
    data_fields=["rho", "labels", "labels2", "consts", "defaults"],
    meta_fields=["kind", "clip", "fn"],
)


# ------------------------------------------------------------------ construction
def _label_array(basis, name: str, d: int) -> np.ndarray:
    arr = np.asarray(basis.label(name), np.float32)
    if arr.shape != (d,):
        raise ValueError(f"label array '{name}' has shape {arr.shape}, expected ({d},)")
    return arr


def _as_labels(value, basis, d: int) -> np.ndarray:
    """A label set given by name (looked up in the basis) or as an array of length D."""
    if isinstance(value, str):
        return _label_array(basis, value, d)
    arr = np.asarray(value, np.float32)
    if arr.shape != (d,):
        raise ValueError(f"label array has shape {arr.shape}, expected ({d},) (one per component)")
    return arr


def make_schedule(
    name: str,
    basis=None,
    *,
    dim: int | None = None,
    rho=None,
    labels: str | np.ndarray = "variance",
    labels2: str | np.ndarray = "frequency",
    normalise: bool = False,
    clip: bool | None = None,
    a: float = 1.0,
    b: float = 0.5,
    r: float = 0.0,
    gamma_den: float = GAMMA_DEN,
    gamma_noise: float = GAMMA_NOISE,
    gamma_min: float = VDM_GAMMA_MIN,
    gamma_max: float = VDM_GAMMA_MAX,
    fn: Callable | None = None,
) -> Schedule:
    """Build a schedule of kind `name` for `basis` (ρ and labels come from the basis).

    Without a basis give `dim` (and optionally `rho`, label arrays). `a`, `b`, `r` are the
    defaults of the family parameters; `clip` defaults to True for the sequential kinds
    (column, haar_column) and False otherwise.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule '{name}'; allowed: {', '.join(SCHEDULES)}")
    if basis is not None:
        d = basis.dim
        rho_arr = np.asarray(basis.rho, np.float32)
    else:
        if dim is None:
            raise ValueError("make_schedule needs a basis or dim=")
        d = int(dim)
        rho_arr = np.zeros(d, np.float32)
    if rho is not None:
        rho_arr = np.asarray(rho, np.float32)
        if rho_arr.shape != (d,):
            raise ValueError(f"rho has shape {rho_arr.shape}, expected ({d},)")
    if not gamma_den < gamma_noise:
        raise ValueError(f"need gamma_den < gamma_noise, got {gamma_den} >= {gamma_noise}")
    if not gamma_min < gamma_max:
        raise ValueError(f"need gamma_min < gamma_max, got {gamma_min} >= {gamma_max}")
    if clip is None:
        clip = name in ("column", "haar_column")
    l1 = np.zeros(d, np.float32)
    l2 = np.zeros(d, np.float32)
    consts = dict(
        gamma_den=gamma_den, gamma_noise=gamma_noise, gamma_min=gamma_min, gamma_max=gamma_max
    )
    if name == "soft":
        l1 = _as_labels(labels, basis, d)
    elif name == "soft_mixed":
        l1 = _as_labels(labels, basis, d)
        l2 = _as_labels(labels2, basis, d)
        span1, span2 = float(np.ptp(l1)), float(np.ptp(l2))
        consts["mix_scale"] = span1 / span2 if span2 > 0 else 0.0
    elif name == "column":
        l1 = normalise_labels(_as_labels("column" if basis is not None else labels, basis, d))
    elif name == "haar_column":
        l1 = _as_labels("level" if basis is not None else labels, basis, d)
        l2 = normalise_labels(_as_labels("colpos" if basis is not None else labels2, basis, d))
    elif name == "function":
        if fn is None or not callable(fn):
            raise ValueError("schedule 'function' needs fn=callable(t) -> gamma")
    if normalise and name in ("soft", "soft_mixed"):
        l1 = normalise_labels(l1)
        if name == "soft_mixed":
            l2 = normalise_labels(l2)
            consts["mix_scale"] = 1.0
    if name in ("column", "haar_column") and not 0.0 <= b < 1.0:
        raise ValueError(f"schedule '{name}' needs 0 <= b < 1, got b={b}")
    defaults = {k: jnp.asarray(v, jnp.float32) for k, v in dict(a=a, b=b, r=r).items()
                if k in FAMILY_PARAMS[name]}
    return Schedule(
        kind=name,
        clip=bool(clip),
        fn=fn,
        rho=jnp.asarray(rho_arr),
        labels=jnp.asarray(l1),
        labels2=jnp.asarray(l2),
        consts={k: jnp.asarray(v, jnp.float32) for k, v in consts.items()},
        defaults=defaults,
    )


def schedule_from_config(cfg: Mapping, basis) -> Schedule:
    """`make_schedule` from a config mapping (e.g. `config.schedule`)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name is None:
        raise ValueError(f"config.schedule.name is required; allowed: {', '.join(SCHEDULES)}")
    allowed = set(make_schedule.__kwdefaults__) - {"dim", "rho", "fn"}
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(
            f"unknown config.schedule field(s) {sorted(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return make_schedule(name, basis, **cfg)


def is_standard_diffusion(schedule: Schedule, params: Mapping | None = None) -> bool:
    """True when all components share one γ(t) exactly (white-noise standard diffusion)."""
    g = np.asarray(jax.vmap(lambda t: schedule.gamma(t, params))(jnp.linspace(0.0, 1.0, 11)))
    return bool(np.all(g == g[:, :1]))
