"""The forward noising process and the ε-prediction objective (docs/maths.md §2, §4).

Per component, variance preserving:
    z_t = α_t ⊙ z_0 + σ_t ⊙ ε,   α² = sigmoid(−γ),  σ² = sigmoid(γ),  β = σ² · dγ/dt
Score ↔ ε:  ∇_z log p_t(z) = −ε̂ / σ.
Loss:  mean over batch and components of w_i(t)·(ε̂_i − ε_i)², with
    "unweighted": w = 1;   "elbo": w_i = ½ dγ_i/dt (continuous-time VDM bound per component).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = Any
WEIGHTINGS = ("unweighted", "elbo")


class NoiseState(NamedTuple):
    """γ, α, σ, β of every component at one time, each (..., D)."""

    gamma: Array
    alpha: Array
    sigma: Array
    beta: Array


def state_from_gamma(gamma: Array, dgamma: Array) -> NoiseState:
    """α = sqrt(sigmoid(−γ)), σ = sqrt(sigmoid(γ)), β = σ² dγ/dt."""
    sigma2 = jax.nn.sigmoid(gamma)
    return NoiseState(
        gamma=gamma,
        alpha=jnp.sqrt(jax.nn.sigmoid(-gamma)),
        sigma=jnp.sqrt(sigma2),
        beta=sigma2 * dgamma,
    )


def noise_state(schedule, t, params: Mapping | None = None) -> NoiseState:
    """Noising state of `schedule` at scalar time t (vmap for batches)."""
    gamma, dgamma = schedule.gamma_and_derivative(t, params)
    return state_from_gamma(gamma, dgamma)


def gamma_fn_state(gamma_fn: Callable[[Array], Array], t) -> NoiseState:
    """Noising state for any γ(t) function (β from jax.jvp)."""
    t = jnp.asarray(t, jnp.float32)
    gamma, dgamma = jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),))
    return state_from_gamma(gamma, dgamma)


def forward_sample(z0: Array, state: NoiseState, eps: Array) -> Array:
    """z_t = α ⊙ z_0 + σ ⊙ ε."""
    return state.alpha * z0 + state.sigma * eps


def eps_to_score(eps: Array, sigma: Array) -> Array:
    """∇_z log p_t = −ε / σ."""
    return -eps / sigma


def stratified_times(rng: Array, n: int) -> Array:
    """n low-discrepancy times in [0, 1): frac(u + i/n) for one uniform u, i = 0..n−1
    (exactly one time in every stratum [k/n, (k+1)/n))."""
    u = jax.random.uniform(rng, ())
    return jnp.mod(u + jnp.arange(n, dtype=jnp.float32) / n, 1.0)


def sample_family_params(rng: Array, ranges: Mapping[str, tuple[float, float]], n: int) -> dict:
    """Per-example family parameters, each uniform in its (low, high) range, shape (n,)."""
    keys = jax.random.split(rng, max(len(ranges), 1))
    return {
        name: jax.random.uniform(k, (n,), minval=lo, maxval=hi)
        for k, (name, (lo, hi)) in zip(keys, sorted(ranges.items()), strict=False)
    }


def batch_noise_state(schedule, t: Array, params: Mapping | None = None) -> NoiseState:
    """Noising states for a batch of times t (B,) and per-example params {name: (B,)}."""
    if params:
        return jax.vmap(lambda ti, pi: noise_state(schedule, ti, pi))(t, dict(params))
    return jax.vmap(lambda ti: noise_state(schedule, ti, None))(t)


def eps_loss(
    eps_hat: Array,
    eps: Array,
    state: NoiseState,
    weighting: str = "unweighted",
) -> Array:
    """Per-example loss, (B,): mean over components of w_i(t)·(ε̂_i − ε_i)².

    For "elbo" the weight ½ dγ/dt is recovered as β/σ² from the noising state.
    """
    sq = jnp.square(eps_hat - eps)
    if weighting == "unweighted":
        return jnp.mean(sq, axis=-1)
    if weighting == "elbo":
        dgamma = state.beta / jnp.square(state.sigma)
        return jnp.mean(0.5 * dgamma * sq, axis=-1)
    raise ValueError(f"unknown loss weighting '{weighting}'; allowed: {', '.join(WEIGHTINGS)}")


def loss_given_noise(
    eps_fn: Callable[[Array, NoiseState, Array], Array],
    schedule,
    z0: Array,
    t: Array,
    eps: Array,
    *,
    params: Mapping | None = None,
    weighting: str = "unweighted",
    to_output: Callable[[Array], Array] | None = None,
    state: NoiseState | None = None,
) -> Array:
    """Per-example ε-prediction loss, (B,), for given times t (B,) and noise ε (B, D).

        z_t = α_t ⊙ z0 + σ_t ⊙ ε,   ε̂ = eps_fn(z_t, state, t),
        loss_b = mean_i w_i(t_b)·(ε̂_i − ε_i)²   ("unweighted": w = 1; "elbo": w = ½ dγ/dt).

    `params` are per-example family parameters {name: (B,)} (None: the schedule's defaults).
    `state`: the noising states (B, D) to use instead of the schedule's at t (any-path
    training, `gudjax.paths`; "elbo" then weights by that state's own dγ/dt = β/σ²).
    `to_output`: an orthonormal map of the component vector (e.g. `basis.to_image`) in
    whose space `eps_fn` returns ε̂; the target is then `to_output(ε)` (no gradient) and the
    loss is the mean over that output's entries. With U orthonormal this equals the
    component-space loss and saves mapping the network output back (docs/maths.md §4).
    Only the unweighted loss can be taken there (the ELBO weights are per component).
    The randomness comes in from the caller: `diffusion_loss` draws it for a batch, the
    training step draws it with the global batch shape.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting '{weighting}'; allowed: {', '.join(WEIGHTINGS)}")
    if state is None:
        state = batch_noise_state(schedule, t, params)
    z_t = forward_sample(z0, state, eps)
    eps_hat = eps_fn(z_t, state, t)
    if to_output is None:
        return eps_loss(eps_hat, eps, state, weighting=weighting)
    if weighting != "unweighted":
        raise ValueError(
            f"loss weighting '{weighting}' weights each component; take it in component space "
            "(to_output=None)"
        )
    target = jax.lax.stop_gradient(to_output(eps))
    return jnp.mean(jnp.square(eps_hat - target), axis=tuple(range(1, eps_hat.ndim)))


def diffusion_loss(
    eps_fn: Callable[[Array, NoiseState, Array], Array],
    schedule,
    z0: Array,
    rng: Array,
    *,
    params: Mapping | None = None,
    weighting: str = "unweighted",
) -> tuple[Array, dict]:
    """ε-prediction loss for a batch z0 (B, D): stratified t, ε ~ N(0, I), `loss_given_noise`.

    `eps_fn(z_t, state, t) → ε̂` (B, D). Returns (per-example loss (B,), aux dict).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting '{weighting}'; allowed: {', '.join(WEIGHTINGS)}")
    rng_t, rng_eps = jax.random.split(rng)
    t = stratified_times(rng_t, z0.shape[0])
    eps = jax.random.normal(rng_eps, z0.shape, z0.dtype)
    loss = loss_given_noise(eps_fn, schedule, z0, t, eps, params=params, weighting=weighting)
    return loss, {"t": t}


def group_gamma_stats(gamma_tilde: Array, groups: Array, num_groups: int) -> Array:
    """Per conditioning group g: (mean, min, max) of γ̃ over its components.

    gamma_tilde (B, D), groups (D,) int in [0, num_groups) → (B, G, 3). These are the
    network's γ tokens (docs/maths.md §5).
    """

    def one(g):
        count = jax.ops.segment_sum(jnp.ones_like(g), groups, num_segments=num_groups)
        mean = jax.ops.segment_sum(g, groups, num_segments=num_groups) / count
        lo = jax.ops.segment_min(g, groups, num_segments=num_groups)
        hi = jax.ops.segment_max(g, groups, num_segments=num_groups)
        return jnp.stack([mean, lo, hi], axis=-1)

    return jax.vmap(one)(gamma_tilde)
