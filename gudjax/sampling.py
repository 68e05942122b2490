"""Reverse-time samplers (docs/maths.md §6): reverse SDE and probability-flow ODE, t: 1 → 0.

Per component i (all operations element-wise over the D components; z has shape (B, D)):
    forward        dz = −½ β ⊙ z dt + √β dW,          β_i = σ_i² · dγ_i/dt  (jax.jvp of γ)
    reverse SDE    dz = [−½ β ⊙ z − β ⊙ s] dt + √β dW̄,   s = ∇_z log p_t(z) = −ε̂/σ
    PF-ODE         dz/dt = −½ β ⊙ (z + s)
A score function is `score_fn(z (B, D), t scalar) → (B, D)` for one fixed schedule member;
a gamma function is `gamma_fn(t scalar) → (D,)`, e.g. `lambda t: schedule.gamma(t, params)`.

Samplers:
  `sde_sample`           Euler–Maruyama, fixed number of steps (the last step is noise-free),
  `ode_sample`           Heun (explicit trapezoid, 2nd order), fixed number of steps,
  `ode_sample_adaptive`  diffrax with an adaptive PID step size controller.
The fixed-step samplers run in one `lax.scan` on the uniform grid t_k = 1 − k (1 − t_end)/N,
k = 0..N; everything stays in-graph (jit-able, no host round trips).

Nothing here divides by β: clipped schedules have β_i = 0 outside component i's window and
the update of that component is then exactly zero. β ⊙ s stays bounded where σ is tiny
(β ∝ σ² while s ∝ 1/σ² at worst), so float32 is fine for the oracle's small-variance
unwhitened components (γ down to ≈ −20).

Conditional generation by replacement (`Known`): the known components (a mask in component
space) are overwritten after every step (and once at t = 1) with the forward-noised truth
at their own noise level, z_i ← α_i(t) z0_i + σ_i(t) ε_i: a fresh ε every step for the SDE,
one fixed ε per trajectory for the ODE (so the known part follows a smooth path). The
returned z0 holds the exact known values. With a sequential schedule (known components
generated first) the unknown ones are then sampled from the Gaussian conditional; with
overlapping windows replacement is only approximate. The PF-ODE also cannot correct a wrong
start: with γ̃_noise = 3 (SNR e⁻³ at t = 1) p_1 is not N(0, I) and not independent of the known
part, so ODE replacement keeps an O(α(1)) bias that the SDE forgets; prefer the SDE there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from gudjax.process import forward_sample, gamma_fn_state

Array = Any
ScoreFn = Callable[[Array, Array], Array]
GammaFn = Callable[[Array], Array]

#: diffrax solvers by name → (class, vector-field evaluations per step).
#: Tsit5/Dopri5 are FSAL 7-stage methods (6 new evaluations per step), Bosh3 FSAL 4-stage.
ADAPTIVE_SOLVERS = {
    "tsit5": ("Tsit5", 6),
    "dopri5": ("Dopri5", 6),
    "dopri8": ("Dopri8", 13),
    "bosh3": ("Bosh3", 3),
    "heun": ("Heun", 2),
}


class Known(NamedTuple):
    """Known components for conditional generation by replacement.

    mask: (D,) or (B, D), bool or float (nonzero = known), in component (z) space.
    z0:   (B, D) the clean known values (entries where mask is 0 are ignored).
    """

    mask: Array
    z0: Array


def prior_sample(rng: Array, shape, dtype=jnp.float32) -> Array:
    """z_1 ~ N(0, I) of the given shape (e.g. (B, D))."""
    return jax.random.normal(rng, tuple(shape), dtype)


def to_images(basis, z0: Array, *, clip: bool = True) -> Array:
    """Final images x = Uᵀ(s ⊙ z0) + μ (docs/maths.md §6), clipped to [−1, 1]:
    (B, D) → (B, H, W, C)."""
    x = basis.decode(z0)
    return jnp.clip(x, -1.0, 1.0) if clip else x


def time_grid(num_steps: int, t_end: float = 0.0) -> Array:
    """The N + 1 times 1 = t_0 > t_1 > … > t_N = t_end, uniform, float32."""
    return jnp.linspace(1.0, t_end, num_steps + 1, dtype=jnp.float32)


# ---------------------------------------------------------------------------- helpers
def _check_steps(num_steps) -> int:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (static), got {num_steps!r}")
    return num_steps


def _check_t_end(t_end) -> None:
    if isinstance(t_end, (int, float)) and not 0.0 <= t_end < 1.0:
        raise ValueError(f"t_end must lie in [0, 1), got {t_end}")


def _prepare_known(known: Known | None, z: Array):
    """(bool mask broadcastable to z, z0) or (None, None); one-line errors on bad shapes."""
    if known is None:
        return None, None
    if not isinstance(known, Known):
        raise ValueError(f"known must be sampling.Known(mask, z0), got {type(known).__name__}")
    mask = jnp.asarray(known.mask)
    z0 = jnp.asarray(known.z0, z.dtype)
    b, d = z.shape
    if mask.shape not in ((d,), (b, d)):
        raise ValueError(
            f"known.mask has shape {tuple(mask.shape)}; allowed: ({d},) or ({b}, {d}) "
            "(component space)"
        )
    if z0.shape != z.shape:
        raise ValueError(f"known.z0 has shape {tuple(z0.shape)}, expected {tuple(z.shape)} like z1")
    mask = jnp.broadcast_to(mask != 0, z.shape)
    return mask, z0


def _grid(ts, num_steps: int, t_end) -> Array:
    """The uniform grid, or the given one (N + 1,) checked for its shape."""
    if ts is None:
        return time_grid(num_steps, t_end)
    ts = jnp.asarray(ts, jnp.float32)
    if ts.shape != (num_steps + 1,):
        raise ValueError(f"ts has shape {tuple(ts.shape)}, expected ({num_steps + 1},)")
    return ts


def _check_z(z1: Array) -> Array:
    z1 = jnp.asarray(z1)
    if z1.ndim != 2:
        raise ValueError(f"z1 must have shape (B, D), got {tuple(z1.shape)}")
    return z1


def _replace(z, mask, z0, gamma_fn, t, eps):
    """Overwrite the known components with α(t) ⊙ z0 + σ(t) ⊙ ε."""
    state = gamma_fn_state(gamma_fn, t)
    return jnp.where(mask, forward_sample(z0, state, eps).astype(z.dtype), z)


def pf_ode_drift(score_fn: ScoreFn, gamma_fn: GammaFn, z: Array, t) -> Array:
    """f(z, t) = −½ β(t) ⊙ (z + s(z, t)), (B, D)."""
    state = gamma_fn_state(gamma_fn, t)
    return (-0.5 * state.beta * (z + score_fn(z, t))).astype(z.dtype)


# ---------------------------------------------------------------------------- samplers
def sde_sample(
    rng: Array,
    score_fn: ScoreFn,
    gamma_fn: GammaFn,
    z1: Array,
    num_steps: int,
    *,
    t_end: float = 0.0,
    known: Known | None = None,
    normal=None,
    ts: Array | None = None,
) -> Array:
    """Euler–Maruyama on the reverse SDE from t = 1 to t_end; returns z at t_end, (B, D).

    Step from t to t' = t − h (h = (1 − t_end)/N > 0), with β, s evaluated at t:
        z' = z + h · β ⊙ (½ z + s(z, t)) + √(β h) ⊙ ξ,   ξ ~ N(0, I)
    and no noise on the last step (the usual "denoised" final step). `num_steps` is static.
    `normal(key, shape, dtype)` draws the Gaussian noise (default `jax.random.normal`; the
    per-device samplers pass `runtime.global_draw` so noise does not depend on the devices).
    `ts` (N + 1,) decreasing from 1 to t_end replaces the uniform grid (`solvers.make_time_grid`).
    """
    normal = jax.random.normal if normal is None else normal
    z1 = _check_z(z1)
    num_steps = _check_steps(num_steps)
    _check_t_end(t_end)
    mask, z0k = _prepare_known(known, z1)
    ts = _grid(ts, num_steps, t_end)
    rng_init, rng_steps = jax.random.split(rng)
    keys = jax.random.split(rng_steps, num_steps)
    last = jnp.arange(num_steps) == num_steps - 1
    z = z1
    if mask is not None:
        z = _replace(z, mask, z0k, gamma_fn, ts[0], normal(rng_init, z.shape, z.dtype))

    def step(z, xs):
        t, t_next, key, is_last = xs
        h = t - t_next
        state = gamma_fn_state(gamma_fn, t)
        k_noise, k_known = jax.random.split(key)
        drift = state.beta * (0.5 * z + score_fn(z, t))
        noise_scale = jnp.where(is_last, 0.0, jnp.sqrt(jnp.maximum(state.beta, 0.0) * h))
        xi = normal(k_noise, z.shape, z.dtype)
        z = (z + h * drift + noise_scale * xi).astype(z1.dtype)
        if mask is not None:
            eps = normal(k_known, z.shape, z.dtype)
            z = _replace(z, mask, z0k, gamma_fn, t_next, eps)
        return z, None

    z, _ = jax.lax.scan(step, z, (ts[:-1], ts[1:], keys, last))
    if mask is not None:
        z = jnp.where(mask, z0k, z)
    return z


def ode_sample(
    score_fn: ScoreFn,
    gamma_fn: GammaFn,
    z1: Array,
    num_steps: int,
    *,
    t_end: float = 0.0,
    known: Known | None = None,
    rng: Array | None = None,
    normal=None,
    ts: Array | None = None,
) -> Array:
    """Heun's method on the PF-ODE dz/dt = f(z, t) = −½ β ⊙ (z + s) from t = 1 to t_end.

    Step from t to t' = t + Δ (Δ = −(1 − t_end)/N < 0), two score evaluations per step:
        d₁ = f(z, t),   ẑ = z + Δ d₁,   d₂ = f(ẑ, t'),   z' = z + Δ (d₁ + d₂)/2.
    With `known`, `rng` draws the one fixed ε per trajectory; the predictor ẑ also gets the
    known components at t' before d₂ is evaluated. Deterministic without `known`.
    `normal(key, shape, dtype)` draws ε (default `jax.random.normal`, see `sde_sample`).
    `ts` (N + 1,) replaces the uniform grid (as in `sde_sample`).
    """
    normal = jax.random.normal if normal is None else normal
    z1 = _check_z(z1)
    num_steps = _check_steps(num_steps)
    _check_t_end(t_end)
    mask, z0k = _prepare_known(known, z1)
    ts = _grid(ts, num_steps, t_end)
    z = z1
    eps = None
    if mask is not None:
        if rng is None:
            raise ValueError("ode_sample with known= needs rng= (the fixed replacement noise)")
        eps = normal(rng, z.shape, z.dtype)
        z = _replace(z, mask, z0k, gamma_fn, ts[0], eps)

    def step(z, xs):
        t, t_next = xs
        dt = t_next - t
        d1 = pf_ode_drift(score_fn, gamma_fn, z, t)
        z_pred = z + dt * d1
        if mask is not None:
            z_pred = _replace(z_pred, mask, z0k, gamma_fn, t_next, eps)
        d2 = pf_ode_drift(score_fn, gamma_fn, z_pred, t_next)
        z = z + dt * 0.5 * (d1 + d2)
        if mask is not None:
            z = _replace(z, mask, z0k, gamma_fn, t_next, eps)
        return z, None

    z, _ = jax.lax.scan(step, z, (ts[:-1], ts[1:]))
    if mask is not None:
        z = jnp.where(mask, z0k, z)
    return z


def schedule_kinks(schedule, params=None) -> Array | None:
    """Times where β jumps (`schedule.kinks`), e.g. the window edges of a clipped linear
    schedule (docs/maths.md §3), or None where β is smooth. Pass the result as `jump_ts` to
    the adaptive solvers: the step size controller then steps exactly onto every
    discontinuity and the high-order solver stays accurate on the smooth pieces (without it,
    Tsit5 at rtol 1e-5 loses ~1e-3 nats/dim on clipped schedules). Traced (jit-able).
    """
    return schedule.kinks(params)


def step_size_controller(rtol: float, atol: float, jump_ts: Array | None = None, norm=None):
    """diffrax PID controller (rtol, atol), wrapped to step onto `jump_ts` when given."""
    kwargs = {} if norm is None else {"norm": norm}
    pid = diffrax.PIDController(rtol=rtol, atol=atol, **kwargs)
    if jump_ts is None:
        return pid
    return diffrax.ClipStepSizeController(pid, jump_ts=jnp.asarray(jump_ts, jnp.float32))


def _adaptive_solver(solver: str):
    """(diffrax solver instance, evaluations per step) for a solver name."""
    if solver not in ADAPTIVE_SOLVERS:
        raise ValueError(f"unknown ODE solver '{solver}'; allowed: {', '.join(ADAPTIVE_SOLVERS)}")
    cls_name, evals = ADAPTIVE_SOLVERS[solver]
    return getattr(diffrax, cls_name)(), evals


def ode_sample_adaptive(
    score_fn: ScoreFn,
    gamma_fn: GammaFn,
    z1: Array,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_end: float = 0.0,
    solver: str = "tsit5",
    max_steps: int = 4096,
    jump_ts: Array | None = None,
) -> tuple[Array, Array]:
    """PF-ODE from t = 1 to t_end with a diffrax adaptive solver (PID step size control).

    Returns (z at t_end (B, D), num_function_evals): the number of vector-field evaluations,
    counted as (accepted + rejected steps) × evaluations per step of the solver (one
    evaluation = one batched score call). The whole batch shares one step size sequence.
    `solver` ∈ ADAPTIVE_SOLVERS; `jump_ts` are times where β jumps (see `schedule_kinks`).
    Raises (at run time, from diffrax) if `max_steps` is exceeded.
    """
    z1 = _check_z(z1)
    _check_t_end(t_end)
    solver_obj, evals = _adaptive_solver(solver)
    term = diffrax.ODETerm(lambda t, z, args: pf_ode_drift(score_fn, gamma_fn, z, t))
    sol = diffrax.diffeqsolve(
        term,
        solver_obj,
        t0=1.0,
        t1=t_end,
        dt0=None,
        y0=z1,
        stepsize_controller=step_size_controller(rtol, atol, jump_ts),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    return sol.ys[-1], sol.stats["num_steps"] * evals
