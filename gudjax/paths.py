"""Random monotone per-component paths between the common end points (docs/maths.md §4.1).

Training over "any path" (`config.train.paths = "any"`): each example b draws, for every path
unit u (a conditioning group, or a single component), a window [s_bu, e_bu] ⊂ [0, 1],

    ℓ ~ U(ℓ_min, 1),   s ~ U(0, 1 − ℓ),   e = s + ℓ,

and every component i of unit u(i) moves linearly in γ̃ across its unit's window:

    γ̃_bi(t) = γ̃_den + (T_i − γ̃_den) · clip((t − s)/(e − s), 0, 1),      γ_bi = γ̃_bi + ρ_i
    dγ_bi/dt = (T_i − γ̃_den)/(e − s)  for s < t < e,   0 outside.

γ̃_den is the schedule's common start level and T_i = max(γ̃_noise, γ_end − min(ρ_i, 0)) its
terminal targets (docs/maths.md §3.6): every path starts where every clipped member of the
linear families (and the autoregressive limit) starts, γ̃_bi(0) = γ̃_den, and ends where they
end, γ̃_bi(1) = T_i. All windows [0, 1] give the clipped standard path (all units in step);
staggered overlapping windows are soft members; disjoint windows are the autoregressive limit.

Pure functions over arrays; the training step (`gudjax.step`) draws with the global batch shape.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gudjax import process

Array = Any

#: config.train.paths values: "family" (members of config.family) or "any" (this module).
PATHS = ("family", "any")
#: config.train.path_units values: one window per conditioning group or per component.
PATH_UNITS = ("groups", "components")


class PathWindows(NamedTuple):
    """Per-example, per-unit forward-time windows, each (B, U): start s and end e, 0 ≤ s < e ≤ 1."""

    start: Array
    end: Array


class AnyPaths(NamedTuple):
    """The static options of any-path training (hashable: a field of the jitted step).

    min_length: ℓ_min ∈ (0, 1], the shortest window; p_family: probability that an example
    takes a member of the configured family instead; per_component: one window per component
    (True) or per conditioning group (False).
    """

    min_length: float
    p_family: float
    per_component: bool


def draw_windows(rng: Array, n: int, num_units: int, min_length: float) -> PathWindows:
    """n × num_units windows: ℓ ~ U(ℓ_min, 1), s ~ U(0, 1 − ℓ), e = min(s + ℓ, 1)."""
    k_len, k_start = jax.random.split(rng)
    length = jax.random.uniform(k_len, (n, num_units), minval=min_length, maxval=1.0)
    start = jax.random.uniform(k_start, (n, num_units)) * (1.0 - length)
    return PathWindows(start=start, end=jnp.minimum(start + length, 1.0))


def path_gamma_tilde(
    t: Array, windows: PathWindows, units: Array, gamma_den: Array, targets: Array
) -> tuple[Array, Array]:
    """(γ̃, dγ̃/dt), each (B, D), of the drawn paths at times t (B,).

    windows (B, U); units (D,) int: the unit of every component; gamma_den scalar; targets (D,).
    """
    start = windows.start[:, units]  # (B, D)
    end = windows.end[:, units]
    t = jnp.asarray(t, jnp.float32)[:, None]
    length = end - start
    u = jnp.clip((t - start) / length, 0.0, 1.0)
    rise = targets - gamma_den
    gamma_tilde = jnp.where(u >= 1.0, targets, gamma_den + rise * u)  # exactly T_i at the end
    inside = (t > start) & (t < end)
    dgamma = jnp.where(inside, rise / length, 0.0)
    return gamma_tilde, dgamma


def path_state(schedule, t: Array, windows: PathWindows, units: Array) -> process.NoiseState:
    """Noising states (B, D) of the drawn paths: γ = γ̃ + ρ, β = σ² dγ/dt (closed form)."""
    gamma_tilde, dgamma = path_gamma_tilde(
        t, windows, units, schedule.gamma_den, schedule.terminal_targets()
    )
    return process.state_from_gamma(gamma_tilde + schedule.rho, dgamma)


def has_common_end_points(schedule) -> bool:
    """True for schedules whose members all start at γ̃_den and end at T_i (clipped linear
    families, the autoregressive limit): the end points any-path training connects."""
    return (
        bool(getattr(schedule, "clip", False))
        and hasattr(schedule, "terminal_targets")
        and hasattr(schedule, "gamma_den")
    )


def mix_states(use_first: Array, first: process.NoiseState, second: process.NoiseState):
    """Per example b: `first` where use_first[b], else `second` (each field (B, D))."""
    return process.NoiseState(
        *(jnp.where(use_first[:, None], a, b) for a, b in zip(first, second, strict=True))
    )
