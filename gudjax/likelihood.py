"""Exact log-likelihoods through the probability-flow ODE (docs/maths.md §7).

The PF-ODE dz/dt = f(z, t) = −½ β ⊙ (z + s(z, t)) is a deterministic flow from the data
(t = 0) to the prior (t = 1). Along a trajectory the instantaneous change of variables gives
d log p_t(z(t))/dt = −∇·f, hence
    log p_0(z_0) = log p_1(z_1) + ∫_0^1 ∇·f(z(t), t) dt,
    ∇·f = −½ Σ_i β_i (1 + ∂s_i/∂z_i).
The augmented state (z (B, D), Δ (B,)) is integrated from t = 0 to 1 with an adaptive diffrax
solver, entirely in-graph. The divergence term Σ_i β_i ∂s_i/∂z_i is
  'exact':      the Jacobian diagonal from D forward-mode products (jax.linearize once per
                evaluation, then vmap of the linear map over the D unit vectors). Cost D score
                Jacobian-vector products per evaluation: small D only. Assumes the score acts
                per example (no coupling across the batch), as every score network here does.
  'hutchinson': E_v[(β ⊙ v)ᵀ (∂s/∂z) v] with Rademacher probes v (num_probes, B, D), drawn
                once from `rng` and held fixed along the trajectory (so the integrand is a
                smooth function of t and the estimate of log p is unbiased).
Then for images (|det U| = 1, z = c / s):
    log p(x) = log p(z_0) − Σ_i log s_i,
    bpd = −log p(x) / (D ln 2) + log₂(L/2)   (data with L levels in [−1, 1], `bits_per_dim`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from gudjax.process import gamma_fn_state
from gudjax.sampling import ADAPTIVE_SOLVERS, _adaptive_solver, step_size_controller

Array = Any
DIVERGENCES = ("exact", "hutchinson")


def standard_normal_logp(z: Array) -> Array:
    """log N(z; 0, I) = −½ Σ_i z_i² − (D/2) log 2π, for z (B, D) → (B,)."""
    z = jnp.asarray(z)
    d = z.shape[-1]
    return -0.5 * jnp.sum(jnp.square(z), axis=-1) - 0.5 * d * math.log(2.0 * math.pi)


def _rms(x: Array) -> Array:
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def augmented_norm(err) -> Array:
    """Step-error norm of the augmented state (z, Δ): max(RMS over z, RMS over Δ).

    diffrax's default RMS over all B·(D + 1) entries would let the B entries of Δ (the
    quantity we want) carry an error √(D + 1) times the tolerance; taking the max holds
    Δ to the tolerance on its own.
    """
    z_err, delta_err = err
    return jnp.maximum(_rms(z_err), _rms(delta_err))


def divergence_fn(score_fn, gamma_fn, *, divergence: str = "exact", probes: Array | None = None):
    """The augmented vector field (t, (z, Δ)) ↦ (f(z, t), ∇·f(z, t)) for diffrax.

    f = −½ β ⊙ (z + s) (B, D); ∇·f = −½ Σ_i β_i (1 + ∂s_i/∂z_i) (B,), Hutchinson:
    ∂s_i/∂z_i → mean over probes of v_i (∂s/∂z · v)_i (unbiased since E[v vᵀ] = I).
    `probes` (P, B, D) are required for 'hutchinson'.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence '{divergence}'; allowed: {', '.join(DIVERGENCES)}")

    def field(t, y, args):
        z, _ = y
        state = gamma_fn_state(gamma_fn, t)
        beta = state.beta
        s, jvp = jax.linearize(lambda zz: score_fn(zz, t), z)
        dz = (-0.5 * beta * (z + s)).astype(z.dtype)
        # Σ_i β_i (1 + ∂s_i/∂z_i), combined per component before summing (no cancellation
        # between two large sums where the score's Jacobian is large).
        if divergence == "exact":
            d = z.shape[-1]
            eye = jnp.eye(d, dtype=z.dtype)
            # cols[i] = (∂s/∂z) e_i for every example, (D, B, D); diagonal → (B, D)
            cols = jax.vmap(lambda e: jvp(jnp.broadcast_to(e, z.shape)))(eye)
            diag = jnp.diagonal(cols, axis1=0, axis2=2)
            total = jnp.sum(beta * (1.0 + diag), axis=-1)
        else:
            jv = jax.vmap(jvp)(probes)  # (P, B, D)
            total = jnp.mean(jnp.sum(beta * (1.0 + probes * jv), axis=-1), axis=0)
        return dz, (-0.5 * total).astype(z.dtype)

    return field


def ode_setup(score_fn, gamma_fn, z0, *, divergence, rng, num_probes, solver, rademacher):
    """Checked inputs of a PF-ODE likelihood solve: (z0 (B, D), the augmented field
    (`divergence_fn`, Hutchinson probes drawn once from `rng`), the diffrax solver, vector-field
    evaluations per step). One-line errors for an unknown divergence or solver, a z0 that is
    not (B, D), and Hutchinson without rng or with num_probes < 1."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence '{divergence}'; allowed: {', '.join(DIVERGENCES)}")
    if solver not in ADAPTIVE_SOLVERS:
        raise ValueError(f"unknown ODE solver '{solver}'; allowed: {', '.join(ADAPTIVE_SOLVERS)}")
    z0 = jnp.asarray(z0)
    if z0.ndim != 2:
        raise ValueError(f"z0 must have shape (B, D), got {tuple(z0.shape)}")
    probes = None
    if divergence == "hutchinson":
        if rng is None:
            raise ValueError("divergence='hutchinson' needs rng= for the Rademacher probes")
        if not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"num_probes must be a positive int, got {num_probes!r}")
        draw = jax.random.rademacher if rademacher is None else rademacher
        probes = draw(rng, (num_probes, *z0.shape), z0.dtype)
    solver_obj, evals = _adaptive_solver(solver)
    field = divergence_fn(score_fn, gamma_fn, divergence=divergence, probes=probes)
    return z0, field, solver_obj, evals


def ode_log_likelihood(
    score_fn: Callable[[Array, Array], Array],
    gamma_fn: Callable[[Array], Array],
    z0: Array,
    *,
    prior_logp: Callable[[Array], Array] | None = None,
    divergence: str = "exact",
    rng: Array | None = None,
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 8192,
    jump_ts: Array | None = None,
    rademacher=None,
) -> dict:
    """log p_0(z0) for z0 (B, D) by the instantaneous change of variables along the PF-ODE.

    Integrates (z, Δ) from t = 0 to 1 (diffrax, adaptive PID control with rtol/atol):
        dz/dt = −½ β ⊙ (z + s),    dΔ/dt = ∇·f = −½ Σ_i β_i (1 + ∂s_i/∂z_i),   Δ(0) = 0,
    and returns a dict of
        logp        (B,)  log p_0(z0) = prior_logp(z1) + Δ(1)
        logp_prior  (B,)  prior_logp(z1), default log N(z1; 0, I) (`standard_normal_logp`)
        delta       (B,)  Δ(1) = ∫_0^1 ∇·f dt
        z1          (B, D) the end point of the flow
        nfe         ()    vector-field evaluations (steps × evaluations per step; each is one
                          linearized score call plus D ('exact') or num_probes JVPs)
    `divergence` ∈ {'exact', 'hutchinson'}; Hutchinson needs `rng` (Rademacher probes, fixed
    along the trajectory; num_probes of them are averaged). Step-size control uses
    `augmented_norm` (Δ held to the tolerance on its own). `jump_ts`: times where β jumps,
    e.g. `sampling.schedule_kinks(schedule, params)` for clipped schedules; without them
    Tsit5 at rtol = atol = 1e-5 loses ~1e-3 nats/dim on clipped schedules, with them ~1e-4.
    `rademacher(key, shape, dtype)` draws the probes (default `jax.random.rademacher`; the
    per-device NLL passes `runtime.global_draw` so probes do not depend on the devices).
    """
    z0, field, solver_obj, evals = ode_setup(
        score_fn, gamma_fn, z0, divergence=divergence, rng=rng, num_probes=num_probes,
        solver=solver, rademacher=rademacher,
    )
    prior_logp = standard_normal_logp if prior_logp is None else prior_logp
    y0 = (z0, jnp.zeros(z0.shape[:1], z0.dtype))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver_obj,
        t0=0.0,
        t1=1.0,
        dt0=None,
        y0=y0,
        stepsize_controller=step_size_controller(rtol, atol, jump_ts, norm=augmented_norm),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    z1 = sol.ys[0][-1]
    delta = sol.ys[1][-1]
    logp_prior = prior_logp(z1)
    return dict(
        logp=logp_prior + delta,
        logp_prior=logp_prior,
        delta=delta,
        z1=z1,
        nfe=sol.stats["num_steps"] * evals,
    )


def bits_per_dim(
    logp_z: Array,
    basis_or_log_scale_sum,
    dim: int,
    *,
    dequantized: bool = True,
    levels: int = 256,
):
    """Bits per dimension of images from log p(z0), (B,) → (B,) (docs/maths.md §7.3).

        log p(x) = log p(z0) − Σ_i log s_i              (x = Uᵀ(s ⊙ z) + μ, |det U| = 1)
        bpd      = −log p(x) / (D ln 2) + log₂(L/2)     (dequantized=True)

    Why log₂(L/2): level l ∈ {0..L−1} is mapped to x = 2(l + u)/L − 1 ∈ [−1, 1] with
    u ~ U[0, 1) (uniform dequantisation), so one bin has width 2/L in x. A density over x
    becomes a density over the dequantised level scale [0, L) by dividing by the Jacobian
    (L/2) per dimension. The bpd is therefore −log p(x)/(D ln 2) + log₂(L/2) (+ 7 for 8-bit
    data), an upper bound on the discrete negative log-likelihood in bits (Jensen over u).
    With dequantized=False the offset is left out. This is the one definition of bits/dim:
    the PF-ODE, the bound and the closed-form baselines all call it (the baselines with
    log p(x) directly and a zero log-scale sum).

    `basis_or_log_scale_sum` is a `Basis` (its `log_scale_sum`) or the number Σ_i log s_i.
    """
    lss = getattr(basis_or_log_scale_sum, "log_scale_sum", basis_or_log_scale_sum)
    # host numbers (the closed-form baselines) stay float64 numpy; jax values stay jax
    xp = jnp if isinstance(logp_z, jax.Array) or isinstance(lss, jax.Array) else np
    logp_x = xp.asarray(logp_z) - xp.asarray(lss)
    bpd = -logp_x / (dim * math.log(2.0))
    return bpd + level_offset(levels) if dequantized else bpd


def level_offset(levels: int = 256) -> float:
    """log₂(L/2): the bits/dim offset between a density in x ∈ [−1, 1] and one over the
    dequantised level scale of data with L levels (7 for L = 256)."""
    if not 2 <= int(levels) <= 256:
        raise ValueError(f"levels={levels!r} must be an integer in [2, 256]")
    return math.log2(int(levels) / 2.0)
