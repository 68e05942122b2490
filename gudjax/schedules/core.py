"""The schedule contract: a frozen pytree γ(t, params) ∈ R^D, a registry, and end points.

Notation (docs/maths.md §2–§3). γ_i = log(σ_i²/α_i²) is the PROCESS value of component i;
ρ_i = log Var(z_0,i) (0 with the variance-matched prior); γ̃_i = γ_i − ρ_i = −log SNR_i is the
TRUE value. A schedule family is a frozen dataclass subclass of `Schedule` registered with
`@register_schedule("name")`; its arrays (ρ, labels, target levels) are pytree data and its
structure (e.g. whether it clips) is static, so `gamma(t, params)` is jit/vmap-able in both t
and the family parameters `params` (a dict of scalars such as {"a": 1.2}) without recompiling.

End points (docs/maths.md §3, "End points"), for every family, basis and prior:
  t = 0: every component's true log-SNR is high,   γ̃_i(0) ≤ γ̃_den  (default −7);
  t = 1: the state is the prior N(0, I): σ_i²(1) = sigmoid(γ_i(1)) ≈ 1 and the prior term
         KL(q(z_1 | z_0) ‖ N(0, I)) is small.
`endpoint_report` measures both; `check_endpoints` refuses (one line) a schedule whose terminal
state is not the prior. `schedule_from_config` runs the check on every schedule it builds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

Array = Any
log = logging.getLogger("gudjax")

GAMMA_DEN = -7.0  # γ̃ at which a component counts as clean (log SNR = 7)
GAMMA_NOISE = 3.0  # γ̃ at which a component's generation window ends (log SNR = −3)
#: Terminal level at t = 1, on BOTH the process γ and the true γ̃ (docs/maths.md §3): σ² ≥
#: sigmoid(5) ≈ 0.9933, prior term ≲ 0.005 bits/dim per component.
GAMMA_END = 5.0
VDM_GAMMA_MIN = -13.3
VDM_GAMMA_MAX = 5.0
#: `check_endpoints` refuses a schedule with σ_i²(1) below this for some component.
MIN_TERMINAL_SIGMA2 = 0.9

_REGISTRY: dict[str, type[Schedule]] = {}


# ------------------------------------------------------------------ registry
def register_schedule(name: str):
    """Class decorator: registers a `Schedule` subclass under `name` (duplicates are errors).

    The class must be a dataclass; its fields listed in `static_fields` are static (part of
    the compiled structure), every other field is pytree data.
    """

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(
                f"schedule '{name}' is already registered by {_REGISTRY[name].__module__}"
            )
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"schedule '{name}': {cls.__name__} must be a dataclass")
        cls.name = name
        fields = [f.name for f in dataclasses.fields(cls)]
        static = [f for f in fields if f in cls.static_fields]
        jax.tree_util.register_dataclass(
            cls, data_fields=[f for f in fields if f not in static], meta_fields=static
        )
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered_schedules() -> tuple[str, ...]:
    """Names of every registered schedule family (config.schedule.name values)."""
    return tuple(sorted(_REGISTRY))


def get_family(name: str) -> type[Schedule]:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown schedule '{name}'; allowed: {', '.join(registered_schedules())}"
        )
    return _REGISTRY[name]


def family_params(name: str) -> tuple[str, ...]:
    """The family parameter names of schedule `name` (one-line error for an unknown name)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown config.schedule.name '{name}'; allowed: {', '.join(registered_schedules())}"
        )
    return _REGISTRY[name].param_names


# ------------------------------------------------------------------ the base class
@dataclasses.dataclass(frozen=True)
class Schedule:
    """γ(t, params) ∈ R^D for one schedule family (subclass it and register the subclass).

    Every family has `rho` (D,) and `defaults` (family parameter name → scalar). A subclass
    defines `param_names`, `options` (the keyword arguments `build` accepts, i.e. the allowed
    config.schedule fields besides `name`), `build(...)`, `_gamma(t, params)` and optionally
    `kinks(params)` (times where β jumps) and `example(basis, dim)` (a representative member
    that the tests and the oracle table run for every registered family).
    """

    rho: Array
    defaults: dict

    name: ClassVar[str] = "?"
    param_names: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()
    static_fields: ClassVar[tuple[str, ...]] = ()
    #: Generates image columns left to right (what image extension by a sliding window needs).
    left_to_right: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return self.name

    @property
    def dim(self) -> int:
        return int(self.rho.shape[-1])

    # -- family parameters
    def _check_param_names(self, names: Iterable[str]) -> None:
        unknown = set(names) - set(self.param_names)
        if unknown:
            allowed = ", ".join(self.param_names) or "none"
            raise ValueError(
                f"schedule '{self.name}' has no parameter(s) {sorted(unknown)}; allowed: {allowed}"
            )

    def params(self, **overrides) -> dict:
        """Family parameters: defaults updated by `overrides` (unknown names are errors)."""
        self._check_param_names(overrides)
        return {**self.defaults, **{k: jnp.asarray(v, jnp.float32) for k, v in overrides.items()}}

    def _resolve(self, params: Mapping | None) -> dict:
        if params:
            self._check_param_names(params)
            return {**self.defaults, **params}
        return dict(self.defaults)

    # -- γ and its derivative
    def _gamma(self, t, p: dict) -> Array:
        raise NotImplementedError

    def gamma(self, t, params: Mapping | None = None) -> Array:
        """Process γ(t) ∈ R^D for scalar t (vmap for batches)."""
        return self._gamma(jnp.asarray(t, jnp.float32), self._resolve(params))

    def gamma_tilde(self, t, params: Mapping | None = None) -> Array:
        """γ̃ = γ − ρ = −log SNR_i(t)."""
        return self.gamma(t, params) - self.rho

    def gamma_and_derivative(self, t, params: Mapping | None = None):
        """(γ(t), dγ/dt) by forward-mode autodiff (never a hand-written derivative)."""
        t = jnp.asarray(t, jnp.float32)
        return jax.jvp(lambda s: self.gamma(s, params), (t,), (jnp.ones_like(t),))

    def kinks(self, params: Mapping | None = None) -> Array | None:
        """Times where β jumps (for the adaptive solvers' `jump_ts`), or None if β is smooth."""
        return None

    def effective_labels(self, params: Mapping | None = None) -> Array:
        raise ValueError(
            f"schedule '{self.name}' has no effective labels (only the linear families built "
            "from ordering labels do)"
        )

    # -- construction
    @classmethod
    def build(cls, *, basis, dim: int, rho: np.ndarray, **options) -> Schedule:
        raise NotImplementedError

    @classmethod
    def example(cls, basis=None, dim: int | None = None) -> Schedule:
        """A representative member (the tests and the oracle table run one per family)."""
        return make_schedule(cls.name, basis, dim=dim)


def f32(value) -> Array:
    return jnp.asarray(value, jnp.float32)


def terminal_targets(rho, gamma_noise, gamma_end) -> Array:
    """T_i = max(γ̃_noise, γ_end − min(ρ_i, 0)): the true γ̃_i a member must reach at t = 1 so
    that both γ̃_i(1) and γ_i(1) = γ̃_i(1) + ρ_i reach γ_end (docs/maths.md §3.6)."""
    return jnp.maximum(gamma_noise, gamma_end - jnp.minimum(rho, 0.0))


# ------------------------------------------------------------------ construction
def _label_array(basis, value, d: int, what: str = "labels") -> np.ndarray:
    """A label set given by name (looked up in the basis) or as an array of length D."""
    if isinstance(value, str):
        if basis is None:
            raise ValueError(f"{what}={value!r} names a basis label set but no basis was given")
        arr = np.asarray(basis.label(value), np.float32)
    else:
        arr = np.asarray(value, np.float32)
    if arr.shape != (d,):
        raise ValueError(
            f"{what} has shape {arr.shape}, expected ({d},) (one per component)"
        )
    return arr


def make_schedule(name: str, basis=None, *, dim: int | None = None, rho=None, **options):
    """Build a member of family `name` for `basis` (ρ and label sets come from the basis).

    Without a basis give `dim` (and optionally `rho` and label arrays). `options` are the
    family's own keyword arguments (`get_family(name).options`); unknown ones are errors.
    """
    cls = get_family(name)
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
    unknown = set(options) - set(cls.options)
    if unknown:
        raise ValueError(
            f"schedule '{name}' has no option(s) {sorted(unknown)}; allowed: "
            f"{', '.join(cls.options) or 'none'}"
        )
    return cls.build(basis=basis, dim=d, rho=rho_arr, **options)


def schedule_from_config(cfg: Mapping, basis, *, family: Mapping | None = None) -> Schedule:
    """`make_schedule` from a config mapping (e.g. `config.schedule`), end points checked.

    `family` ({param: (low, high)}, e.g. config.family): the end-point check runs at the
    defaults and at every corner of these ranges.
    """
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name is None:
        raise ValueError(
            f"config.schedule.name is required; allowed: {', '.join(registered_schedules())}"
        )
    cls = get_family(name)
    unknown = set(cfg) - set(cls.options)
    if unknown:
        raise ValueError(
            f"unknown config.schedule field(s) {sorted(unknown)} for schedule '{name}'; "
            f"allowed: {', '.join(cls.options) or 'none'}"
        )
    schedule = make_schedule(name, basis, **cfg)
    check_endpoints(schedule, family_corners(schedule, family), where="config.schedule")
    return schedule


def family_corners(schedule: Schedule, family: Mapping | None) -> list[dict | None]:
    """The default member plus every corner of the family ranges {param: (low, high)}."""
    points: list[dict | None] = [None]
    ranges = {k: tuple(float(v) for v in r) for k, r in dict(family or {}).items()}
    if ranges:
        import itertools

        names = sorted(ranges)
        for combo in itertools.product(*(ranges[n] for n in names)):
            points.append({n: f32(v) for n, v in zip(names, combo, strict=True)})
    return points


def is_standard_diffusion(schedule: Schedule, params: Mapping | None = None) -> bool:
    """True when all components share one γ(t) exactly (white-noise standard diffusion)."""
    g = np.asarray(jax.vmap(lambda t: schedule.gamma(t, params))(jnp.linspace(0.0, 1.0, 11)))
    return bool(np.all(g == g[:, :1]))


# ------------------------------------------------------------------ end points
def prior_kl(gamma1, rho) -> np.ndarray:
    """KL(q(z_1 | z_0) ‖ N(0, I)) per component, averaged over z_0 with E z_0 = 0, Var = e^ρ:
    ½(α² e^ρ + σ² − 1 − log σ²) with α², σ² at γ(1), in nats, float64 (D,)."""
    g = np.asarray(gamma1, np.float64)
    log_sigma2 = -np.logaddexp(0.0, -g)  # log sigmoid(γ)
    alpha2 = np.exp(-np.logaddexp(0.0, g))  # sigmoid(−γ)
    return 0.5 * (alpha2 * np.exp(np.asarray(rho, np.float64)) - alpha2 - log_sigma2)


def endpoint_report(schedule: Schedule, params: Mapping | None = None) -> dict:
    """How well a member meets the end points (docs/maths.md §3).

    Returns worst_sigma2_at_1 (min_i σ_i²(1)) and its component, num_below (components with
    σ_i²(1) < MIN_TERMINAL_SIGMA2), prior_bpd (the prior term Σ_i KL_i / (D ln 2), with
    Var z_0,i = e^{ρ_i}), max_gamma_tilde_at_0 (= −min log SNR_i(0)) and min_log_snr_at_0.
    """
    g1 = np.asarray(schedule.gamma(1.0, params), np.float64)
    gt0 = np.asarray(schedule.gamma_tilde(0.0, params), np.float64)
    rho = np.asarray(schedule.rho, np.float64)
    sigma2 = 1.0 / (1.0 + np.exp(-g1))
    worst = int(np.argmin(sigma2))
    return {
        "worst_sigma2_at_1": float(sigma2[worst]),
        "worst_component": worst,
        "num_below": int(np.sum(sigma2 < MIN_TERMINAL_SIGMA2)),
        "prior_bpd": float(np.sum(prior_kl(g1, rho)) / (len(g1) * math.log(2.0))),
        "max_gamma_tilde_at_0": float(np.max(gt0)),
        "min_log_snr_at_0": float(-np.max(gt0)),
    }


def _fmt_params(params: Mapping | None) -> str:
    if not params:
        return "defaults"
    return ", ".join(f"{k}={float(v):g}" for k, v in sorted(params.items()))


def check_endpoints(
    schedule: Schedule, points: Iterable[Mapping | None] = (None,), *, where: str = "schedule"
) -> dict:
    """Refuse (one-line ValueError) a schedule whose terminal state is not the prior.

    Logs the worst σ_i²(1), the prior term and the smallest true log-SNR at t = 0 over
    `points` (family members); returns the report of the worst member.
    """
    worst = None
    for p in points:
        rep = endpoint_report(schedule, p)
        rep["params"] = _fmt_params(p)
        if rep["num_below"]:
            raise ValueError(
                f"{where} '{schedule.name}' ({rep['params']}) does not reach the N(0, I) prior at "
                f"t = 1: {rep['num_below']} of {schedule.dim} components end with sigma^2(1) < "
                f"{MIN_TERMINAL_SIGMA2} (worst {rep['worst_sigma2_at_1']:.2e}, component "
                f"{rep['worst_component']}); raise the schedule's terminal level (gamma_end or "
                "gamma_max) or use a linear family, which reaches gamma_end in every basis"
            )
        if worst is None or rep["worst_sigma2_at_1"] < worst["worst_sigma2_at_1"]:
            worst = rep
    if worst is not None:
        log.info(
            "schedule '%s' end points: worst sigma^2(1) = %.4f, prior term %.4f bits/dim, "
            "min true log-SNR(0) = %.2f (worst member: %s)",
            schedule.name,
            worst["worst_sigma2_at_1"],
            worst["prior_bpd"],
            worst["min_log_snr_at_0"],
            worst["params"],
        )
    return worst or {}
