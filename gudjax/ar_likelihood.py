"""Per-block likelihood at the autoregressive limit (docs/maths.md §7, §10.4).

The `autoregressive` schedule noises block k (k = 0 generated first) only on its own
forward-time window [t_s, t_e] = [(K − 1 − k)/K, (K − k)/K]; outside it β_i = 0 for the
block's components. Over block k's window only z_k moves, so the PF-ODE divergence
integrated over the window is

    Δ_k = ∫_{t_s}^{t_e} ∇·f dt = log p_{t_s}(z(t_s)) − log p_{t_e}(z(t_e))
        = log p_{t_s}(z_k | z_rest) − log p_{t_e}(z_k | z_rest)

(z_rest is the same at both ends and its marginal does not change inside the window, so
the difference of the joint densities is the difference of the conditionals). With the
standard-normal prior, which factorises over blocks, the per-block NLL in nats is

    nll_k = −(Δ_k + log N(z_k(1); 0, I)),      Σ_k nll_k = −log p_0(z_0)   EXACTLY,

because the windows tile [0, 1] (Σ_k Δ_k is the full-interval integral) and
log N(z(1); 0, I) = Σ_k log N(z_k(1); 0, I). `ode_block_log_likelihood` integrates the
PF-ODE WINDOW BY WINDOW, restarting the adaptive solver at every window edge (β jumps
there); `block_bits_per_dim` turns the terms into bits per block dimension with the same
conventions as `likelihood.bits_per_dim`. `oracle_block_deltas` is the closed-form answer
for Gaussian data (the oracle's exact marginal at any t), the reference of the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import diffrax
import jax.numpy as jnp
import numpy as np

from gudjax.likelihood import augmented_norm, level_offset, ode_setup
from gudjax.sampling import step_size_controller

Array = Any


def ar_blocks(schedule) -> tuple[np.ndarray, int]:
    """(block index (D,) int, K) of an `autoregressive` schedule, on the host."""
    if not hasattr(schedule, "block") or not hasattr(schedule, "num_blocks"):
        raise ValueError(
            f"per-block likelihood needs an 'autoregressive' schedule, got "
            f"{getattr(schedule, 'name', type(schedule).__name__)!r}"
        )
    return np.asarray(schedule.block).astype(np.int64), int(np.asarray(schedule.num_blocks))


def block_window(k: int, num_blocks: int) -> tuple[float, float]:
    """Forward-time window [t_s, t_e] of block k (k = 0 generated first = noised last)."""
    return (num_blocks - 1 - k) / num_blocks, (num_blocks - k) / num_blocks


def ode_block_log_likelihood(
    score_fn: Callable[[Array, Array], Array],
    gamma_fn: Callable[[Array], Array],
    z0: Array,
    *,
    blocks,
    num_blocks: int,
    divergence: str = "exact",
    rng: Array | None = None,
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 8192,
    rademacher=None,
) -> dict:
    """The PF-ODE log-likelihood of z0 (B, D) split into K block terms (module docstring).

    `blocks` (D,) int and `num_blocks` = K describe the schedule's windows (`ar_blocks`);
    they must be concrete (host values): the K window solves are unrolled. Every window is
    a fresh adaptive solve (diffrax, rtol/atol, `likelihood.augmented_norm`) from t_s to t_e
    started at the previous window's end state. Hutchinson probes are drawn exactly as in
    `likelihood.ode_log_likelihood` (same rng ⇒ same probes), so the two can be compared.
    Returns a dict of
        delta        (B, K)  Δ_k, the divergence integral over block k's window
        logp_prior   (B, K)  log N(z_k(1); 0, I) of block k's components
        nll          (B, K)  −(Δ_k + logp_prior_k), nats; sums over k to −log p_0(z0)
        logp         (B,)    log p_0(z0) = −Σ_k nll_k
        z_edges      (K+1, B, D) the state at t = 0, 1/K, …, 1
        nfe          ()      vector-field evaluations over all windows
    """
    z0, field, solver_obj, evals = ode_setup(
        score_fn, gamma_fn, z0, divergence=divergence, rng=rng, num_probes=num_probes,
        solver=solver, rademacher=rademacher,
    )
    blocks = np.asarray(blocks).astype(np.int64)
    k_count = int(num_blocks)
    if blocks.shape != (z0.shape[-1],) or blocks.min() < 0 or blocks.max() >= k_count:
        raise ValueError(f"blocks must be (D,) = ({z0.shape[-1]},) ints in [0, {k_count})")
    controller = step_size_controller(rtol, atol, None, norm=augmented_norm)
    # windows in forward-time order: w = 0 is block K − 1 (noised first, generated last)
    z, edges, deltas, nfe = z0, [z0], [None] * k_count, 0
    for w in range(k_count):
        k = k_count - 1 - w
        t_s, t_e = block_window(k, k_count)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            solver_obj,
            t0=t_s,
            t1=t_e,
            dt0=None,
            y0=(z, jnp.zeros(z0.shape[:1], z0.dtype)),
            stepsize_controller=controller,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=max_steps,
        )
        z = sol.ys[0][-1]
        deltas[k] = sol.ys[1][-1]
        edges.append(z)
        nfe = nfe + sol.stats["num_steps"] * evals
    delta = jnp.stack(deltas, axis=1)
    onehot = jnp.asarray(blocks[None, :] == np.arange(k_count)[:, None], z.dtype)  # (K, D)
    dims = jnp.sum(onehot, axis=1)
    logp_prior = -0.5 * jnp.square(z) @ onehot.T - 0.5 * dims * math.log(2.0 * math.pi)
    nll = -(delta + logp_prior)
    return dict(
        delta=delta,
        logp_prior=logp_prior,
        nll=nll,
        logp=-jnp.sum(nll, axis=1),
        z_edges=jnp.stack(edges),
        nfe=nfe,
    )


def block_bits_per_dim(nll_nats, blocks, num_blocks: int, log_scale, *, levels: int = 256,
                       dequantized: bool = True) -> np.ndarray:
    """Bits per block dimension (B, K) from per-block NLLs in nats (B, K).

    As `likelihood.bits_per_dim`, per block: −log p(x_k | …) = nll_k + Σ_{i∈k} log s_i and
    bpd_k = that / (D_k ln 2) + log₂(L/2). The dimension-weighted mean Σ_k D_k bpd_k / D
    equals the total bits/dim of the same log p_0 (`weighted_total`). `log_scale` (D,) is
    log s_i (`log(basis.scale)`).
    """
    blocks = np.asarray(blocks).astype(np.int64)
    nll = np.asarray(nll_nats, np.float64)
    log_scale = np.asarray(log_scale, np.float64)
    dims = np.bincount(blocks, minlength=int(num_blocks)).astype(np.float64)
    lss = np.bincount(blocks, weights=log_scale, minlength=int(num_blocks))
    bpd = (nll + lss) / (dims * math.log(2.0))
    return bpd + level_offset(levels) if dequantized else bpd


def weighted_total(bpd_blocks, blocks, num_blocks: int) -> np.ndarray:
    """Σ_k D_k bpd_k / D: the total bits/dim from per-block bits/dim, (B, K) → (B,)."""
    dims = np.bincount(np.asarray(blocks).astype(np.int64), minlength=int(num_blocks))
    return np.asarray(bpd_blocks, np.float64) @ dims / float(dims.sum())


def _gauss_logpdf(r, cov) -> np.ndarray:
    """log N(r; 0, cov) for r (B, n), float64."""
    chol = np.linalg.cholesky(cov)
    w = np.linalg.solve(chol, r.T)
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (np.sum(w * w, axis=0) + logdet + r.shape[1] * math.log(2.0 * math.pi))


def gaussian_conditional_logp(m, K, gamma, z, idx) -> np.ndarray:
    """log p_t(z_idx | z_rest) of the noised Gaussian N(α ⊙ m, diag(α) K diag(α) + diag(σ²))
    at γ (D,), for z (B, D), in float64 on the host: log p_t(z) − log p_t(z_rest)."""
    gamma = np.asarray(gamma, np.float64)
    alpha = np.sqrt(1.0 / (1.0 + np.exp(gamma)))
    sigma2 = 1.0 / (1.0 + np.exp(-gamma))
    K = np.asarray(K, np.float64)
    cov = alpha[:, None] * K * alpha[None, :] + np.diag(sigma2)
    r = np.asarray(z, np.float64) - alpha * np.asarray(m, np.float64)
    rest = np.setdiff1d(np.arange(len(gamma)), idx)
    joint = _gauss_logpdf(r, cov)
    if len(rest) == 0:
        return joint
    return joint - _gauss_logpdf(r[:, rest], cov[np.ix_(rest, rest)])


def oracle_block_deltas(oracle, gamma_fn, z_edges, blocks, num_blocks: int) -> np.ndarray:
    """Closed-form Δ_k = log p_{t_s}(z_k | z_rest) − log p_{t_e}(z_k | z_rest) (B, K) of the
    Gaussian oracle (its m, K) at the window edges of block k, with z at the edges from
    `ode_block_log_likelihood`'s `z_edges` (the rest is the same at both ends)."""
    blocks = np.asarray(blocks).astype(np.int64)
    k_count = int(num_blocks)
    z_edges = np.asarray(z_edges, np.float64)
    out = np.zeros((z_edges.shape[1], k_count))
    for k in range(k_count):
        t_s, t_e = block_window(k, k_count)
        w = k_count - 1 - k  # z_edges[w] is the state at t_s, z_edges[w + 1] at t_e
        idx = np.flatnonzero(blocks == k)
        g_s = np.asarray(gamma_fn(jnp.float32(t_s)), np.float64)
        g_e = np.asarray(gamma_fn(jnp.float32(t_e)), np.float64)
        out[:, k] = gaussian_conditional_logp(oracle.m, oracle.K, g_s, z_edges[w], idx) - (
            gaussian_conditional_logp(oracle.m, oracle.K, g_e, z_edges[w + 1], idx)
        )
    return out
