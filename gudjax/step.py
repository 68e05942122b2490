"""The pure, per-device training step and the network-as-score-function glue.

The step is written for ONE device holding a slice of the global batch; gradients and
metrics are averaged with `lax.pmean` over the mesh axis "data". `train.py` maps it over
all devices with `jax.shard_map` on a 1-D mesh.

Randomness: rng = fold_in(root, step). Times, family parameters and noise
are drawn with the GLOBAL batch shape and each device takes its own slice, so an 8-device
step equals the same step on one device with the full batch, and every example gets
different noise. Dropout masks are folded with the device index as well.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from gudjax import paths, process
from gudjax.models import apply_model

Array = Any
AXIS = "data"


# ------------------------------------------------------------------ optimiser and state
def make_optimizer(optim, num_steps: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up (then constant or cosine decay) and global-norm clipping."""
    warmup = int(optim.get("warmup_steps", 0))
    decay = optim.get("decay", "constant")
    if decay == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0, optim.lr, max(warmup, 1), max(num_steps, warmup + 1), end_value=optim.lr * 0.1
        )
    elif decay == "constant":
        lr = optax.linear_schedule(0.0, optim.lr, max(warmup, 1)) if warmup else optim.lr
        if warmup:
            lr = optax.join_schedules([lr, optax.constant_schedule(optim.lr)], [warmup])
    else:
        raise ValueError(f"unknown config.optim.decay '{decay}'; allowed: constant, cosine")
    return optax.chain(
        optax.clip_by_global_norm(optim.grad_clip),
        optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay),
    )


def ema_decay_at(step, ema_decay: float):
    """The EMA decay of the update after `step` steps: min(ema_decay, (1 + step)/(10 + step)).

    The warm-up keeps the initial (random) weights out of the average: with the plain decay
    they would still hold ema_decay^n of it after n steps (0.999: 45% at 800 steps, 5% at
    3000), and short runs would sample from a mix with an untrained network. The cap is
    reached after (10·ema_decay − 1)/(1 − ema_decay) steps (0.999: about 9000)."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(ema_decay), (1.0 + step) / (10.0 + step))


def init_train_state(params, tx) -> dict:
    """{'params', 'ema_params', 'opt_state', 'step'}: everything a checkpoint holds."""
    return {
        "params": params,
        "ema_params": jax.tree.map(jnp.copy, params),
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
    }


# ------------------------------------------------------------------ network glue
def conditioning(basis, schedule, state: process.NoiseState, t: Array) -> dict:
    """Inputs of the network besides the image: γ tokens, γ map and t (docs/maths.md §5)."""
    gamma_tilde = state.gamma - schedule.rho
    return {
        "gamma_groups": process.group_gamma_stats(gamma_tilde, basis.groups, basis.num_groups),
        "gamma_map": gamma_tilde.reshape(gamma_tilde.shape[0], *basis.shape),
        "t": t,
    }


def gaussian_eps(schedule, state: process.NoiseState, z_t: Array) -> Array:
    """E[ε | z_t] per component if z_0,i ~ N(0, e^{ρ_i}) (docs/maths.md §5.1):
    σ_i z_i / (α_i² e^{ρ_i} + σ_i²), the exact ε̂ for Gaussian data with the basis variances."""
    return state.sigma * z_t / (state.alpha**2 * jnp.exp(schedule.rho) + state.sigma**2)


def apply_network(graphdef, params, basis, schedule, z_t, state, t, *, train=False, rng=None):
    """The network's output Uᵀε̂ in image space: it sees the whitened image Uᵀz_t, its
    conditioning, and (if built with gaussian_skip) adds Uᵀ of `gaussian_eps`."""
    cond = conditioning(basis, schedule, state, t)
    return apply_model(
        graphdef, params, basis.to_image(z_t), train=train, rng=rng,
        skip=lambda: basis.to_image(gaussian_eps(schedule, state, z_t)), **cond,
    )


def network_eps(graphdef, params, basis, schedule, z_t, state, t, *, train=False, rng=None):
    """ε̂ in component space (`apply_network` mapped back by U)."""
    return basis.from_image(
        apply_network(graphdef, params, basis, schedule, z_t, state, t, train=train, rng=rng)
    )


def make_score_fn(graphdef, params, basis, schedule, family_params: Mapping | None = None):
    """score_fn(z (B, D), t) = −ε̂/σ for one member of the schedule family (for samplers)."""

    def score_fn(z, t):
        s = process.noise_state(schedule, t, family_params)
        b = z.shape[0]
        state = jax.tree.map(lambda a: jnp.broadcast_to(a, (b, *a.shape)), s)
        tb = jnp.full((b,), t, jnp.float32)
        eps = network_eps(graphdef, params, basis, schedule, z, state, tb)
        return process.eps_to_score(eps, state.sigma)

    return score_fn


# ------------------------------------------------------------------ the step
def _local_slice(x: Array, local: int) -> Array:
    """This device's rows of a globally drawn array (axis 0)."""
    start = lax.axis_index(AXIS) * local
    return lax.dynamic_slice_in_dim(x, start, local, axis=0)


def draw_randomness(rng, *, global_batch: int, local: int, dim: int, family_ranges: dict):
    """This device's (t, family params, ε): drawn with the global batch shape, then sliced."""
    k_t, k_fam, k_eps = jax.random.split(rng, 3)
    t = _local_slice(process.stratified_times(k_t, global_batch), local)
    fam = process.sample_family_params(k_fam, family_ranges, global_batch) if family_ranges else {}
    fam = {k: _local_slice(v, local) for k, v in fam.items()}
    eps = _local_slice(jax.random.normal(k_eps, (global_batch, dim), jnp.float32), local)
    return t, fam, eps


def draw_path_state(rng, basis, schedule, t, fam, *, global_batch: int, any_paths):
    """This device's noising states on random paths between the common end points
    (`gudjax.paths`, docs/maths.md §4.1): windows drawn with the global batch shape, then
    sliced; with probability `any_paths.p_family` an example keeps its family member's state
    at (t, fam) instead."""
    if not paths.has_common_end_points(schedule):
        raise ValueError(
            f"training over any path needs a schedule with common end points (a clipped linear "
            f"family or 'autoregressive'), got '{schedule.kind}'"
        )
    local = t.shape[0]
    k_win, k_mix = jax.random.split(rng)
    if any_paths.per_component:
        units, num_units = jnp.arange(basis.dim), basis.dim
    else:
        units, num_units = basis.groups, basis.num_groups
    windows = paths.draw_windows(k_win, global_batch, num_units, any_paths.min_length)
    windows = paths.PathWindows(*(_local_slice(w, local) for w in windows))
    state = paths.path_state(schedule, t, windows, units)
    if any_paths.p_family > 0.0:
        use_family = jax.random.bernoulli(k_mix, any_paths.p_family, (global_batch,))
        family_state = process.batch_noise_state(schedule, t, fam or None)
        state = paths.mix_states(_local_slice(use_family, local), family_state, state)
    return state


#: Where the unweighted ε-loss is evaluated (the two are equal up to float rounding):
#:   "image":      mean (Uᵀε̂ − Uᵀε)² — the network output as it comes, the target mapped once
#:                 by Uᵀ (no gradient flows through a basis transform);
#:   "components": mean (ε̂ − ε)² with ε̂ = U (network output) — one more transform in the
#:                 forward pass and its transpose in the backward pass.
#: U is orthonormal and both are means over the same D entries, so the losses agree.
#: "elbo" weights are per component, so that weighting always uses "components".
LOSS_SPACES = ("image", "components")


def loss_fn(
    params,
    graphdef,
    basis,
    schedule,
    x,
    rng,
    *,
    family_ranges,
    weighting,
    global_batch,
    loss_space="image",
    any_paths=None,
):
    """This device's mean ε-loss (`process.loss_given_noise`, the loss the closed-form tests
    check), with t, family parameters and ε drawn for the global batch (`draw_randomness`).

    `any_paths` (a `paths.AnyPaths`, or None for the family's members): the noising states
    come from random paths between the common end points (`draw_path_state`)."""
    k_draw, k_drop = jax.random.split(rng)
    t, fam, eps = draw_randomness(
        k_draw,
        global_batch=global_batch,
        local=x.shape[0],
        dim=basis.dim,
        family_ranges=family_ranges,
    )
    state = None
    if any_paths is not None:
        state = draw_path_state(
            jax.random.fold_in(k_draw, 1),
            basis,
            schedule,
            t,
            fam,
            global_batch=global_batch,
            any_paths=any_paths,
        )
    k_drop = jax.random.fold_in(k_drop, lax.axis_index(AXIS))
    if weighting == "unweighted" and loss_space == "image":

        def eps_fn(z_t, state, t):  # the network output as it comes, in image space
            return apply_network(
                graphdef, params, basis, schedule, z_t, state, t, train=True, rng=k_drop
            )

        to_output = basis.to_image
    else:

        def eps_fn(z_t, state, t):
            return network_eps(
                graphdef, params, basis, schedule, z_t, state, t, train=True, rng=k_drop
            )

        to_output = None
    per_example = process.loss_given_noise(
        eps_fn,
        schedule,
        basis.encode(x),
        t,
        eps,
        params=fam or None,
        weighting=weighting,
        to_output=to_output,
        state=state,
    )
    return jnp.mean(per_example)


def train_step(
    state: dict,
    basis,
    schedule,
    x: Array,
    root_rng: Array,
    *,
    graphdef,
    tx: optax.GradientTransformation,
    family_ranges: tuple,
    weighting: str,
    ema_decay: float,
    loss_space: str = "image",
    any_paths=None,
):
    """One optimisation step on this device's slice x (B_local, H, W, C) of the batch.

    Returns the new state (identical on every device) and pmean'd metrics.
    """
    global_batch = x.shape[0] * lax.axis_size(AXIS)
    rng = jax.random.fold_in(root_rng, state["step"])
    grad_fn = jax.value_and_grad(loss_fn)
    loss, grads = grad_fn(
        state["params"],
        graphdef,
        basis,
        schedule,
        x,
        rng,
        family_ranges=dict(family_ranges),
        weighting=weighting,
        global_batch=global_batch,
        loss_space=loss_space,
        any_paths=any_paths,
    )
    grads = lax.pmean(grads, AXIS)
    loss = lax.pmean(loss, AXIS)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    decay = ema_decay_at(state["step"], ema_decay)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema_params"], params)
    new_state = {
        "params": params,
        "ema_params": ema,
        "opt_state": opt_state,
        "step": state["step"] + 1,
    }
    metrics = {
        "loss": loss,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(params),  # non-finite ⇒ never checkpoint these params
    }
    return new_state, metrics


def make_sharded_train_step(
    mesh, *, graphdef, tx, family_ranges, weighting, ema_decay, loss_space="image",
    any_paths=None,
):
    """jit(shard_map(train_step)): state/basis/schedule/rng replicated, batch split on 'data'.

    The state argument is donated. Inputs must already be placed (`replicate`, `shard_batch`).
    `loss_space` ∈ LOSS_SPACES (same loss; "image" saves a basis transform and its transpose).
    `any_paths`: a `paths.AnyPaths` to train over random paths (None: the family's members).
    """
    if loss_space not in LOSS_SPACES:
        raise ValueError(f"unknown loss_space '{loss_space}'; allowed: {', '.join(LOSS_SPACES)}")
    from jax.sharding import PartitionSpec as P

    step = functools.partial(
        train_step,
        graphdef=graphdef,
        tx=tx,
        family_ranges=tuple(sorted((k, tuple(map(float, v))) for k, v in family_ranges.items())),
        weighting=weighting,
        ema_decay=float(ema_decay),
        loss_space=loss_space,
        any_paths=any_paths,
    )
    mapped = jax.shard_map(
        step,
        mesh=mesh,
        in_specs=(P(), P(), P(), P(AXIS), P()),
        out_specs=(P(), P()),
    )
    return jax.jit(mapped, donate_argnums=(0,))
