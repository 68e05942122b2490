"""The continuous-time variational bound and its three terms (docs/maths.md §10.1).

Per image, with z = S⁻¹U(x − μ) the clean components, z_t = α(t) ⊙ z + σ(t) ⊙ ε and the
ε-prediction ε̂ = −σ ⊙ s(z_t, t) of any `ScoreModel`, in nats:

    −log p(z) ≤ recon + diffusion + prior
    recon     = E[−log N(z; z_0/α(0), σ(0)²/α(0)²)] = ½ Σ_i (γ_i(0) + log 2π + 1)
    diffusion = ½ ∫_0^1 Σ_i γ′_i(t) E_ε (ε_i − ε̂_i(z_t, t))² dt
    prior     = KL(N(α(1) ⊙ z, σ(1)²) ‖ N(0, I)) = ½ Σ_i (α_i² z_i² + σ_i² − 1 − log σ_i²)(1)

(reconstruction: a Gaussian decoder that inverts z_0 = α(0)z + σ(0)ε; its expectation is
closed form). −log p(x) = −log p(z) + Σ_i log s_i, and every term goes to bits/dim with
`likelihood.bits_per_dim` (the log₂(L/2) dequantisation offset is put into the
reconstruction term, so the three terms add up to the bound in bits/dim).

The diffusion term is estimated by Monte Carlo (`bound_terms`): K stratified times
t_k = (k + u)/K, u ~ U[0, 1) drawn per batch (shared by its rows), one ε per image and time.
Each image's estimate is unbiased; standard errors are over images.

With the exact score of Gaussian data (the oracle, §8), q(z_{0:1} | z) and the reverse
process are known in closed form, and (Markov property) the diffusion term is exactly

    diffusion(z) = KL(q(z_0|z) ‖ q(z_0)) − KL(q(z_1|z) ‖ q(z_1))           (per image)

which depends on γ(0) and γ(1) only, not on the path between them (the vector I-MMSE
relation): members of a family with matched end points have the same oracle bound.
`oracle_diffusion_quadrature` integrates the closed-form integrand along the path (Gauss–
Legendre between the schedule's kinks); `oracle_diffusion_endpoints` is the right-hand side.
The bound then exceeds the exact −log q_0(z) of the PF-ODE (exact p_1 prior) by

    decoder gap = recon + KL(q(z_0|z) ‖ q(z_0)) + log q_0(z)    (≥ 0 on average)
    prior gap   = KL(q(z_1|z) ‖ N(0, I)) − KL(q(z_1|z) ‖ q(z_1))  (average KL(q(z_1) ‖ N(0, I)))

which is what "the bound equals the exact NLL up to the stated terms" means (`oracle_gaps`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import likelihood
from gudjax.process import gamma_fn_state
from gudjax.score_model import ScoreModel

TERMS = ("reconstruction", "diffusion", "prior")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@functools.partial(jax.jit, static_argnames=("num_t",))
def _terms_batch(model: ScoreModel, z, rng, *, num_t):
    """(recon, diffusion, prior) nats (B,) each, for clean components z (B, D)."""
    gamma_fn = model.gamma_fn()
    score_fn = model.score_fn()
    g0 = gamma_fn(jnp.float32(0.0))
    g1 = gamma_fn(jnp.float32(1.0))
    d = z.shape[-1]
    recon = jnp.full(z.shape[:1], 0.5 * (jnp.sum(g0) + d * (math.log(2.0 * math.pi) + 1.0)))
    a2, s2 = jax.nn.sigmoid(-g1), jax.nn.sigmoid(g1)
    prior = 0.5 * jnp.sum(a2 * z * z + s2 - 1.0 - jnp.log(s2), axis=-1)
    k_u, k_eps = jax.random.split(rng)
    u = jax.random.uniform(k_u, ())

    def one(k):
        t = (k + u) / num_t
        _, dgamma = jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),))
        st = gamma_fn_state(gamma_fn, t)
        eps = jax.random.normal(jax.random.fold_in(k_eps, k), z.shape, z.dtype)
        zt = st.alpha * z + st.sigma * eps
        eps_hat = -st.sigma * score_fn(zt, t)
        return 0.5 * jnp.sum(dgamma * jnp.square(eps - eps_hat), axis=-1)

    diffusion = jnp.mean(jax.lax.map(one, jnp.arange(num_t, dtype=jnp.float32)), axis=0)
    return recon, diffusion, prior


def bound_terms(
    model: ScoreModel, x, *, seed: int = 0, num_t: int = 16, batch_size: int = 64, levels=256
) -> dict:
    """The bound of `model` on dequantised images x (N, H, W, C), per image, in bits/dim.

    Returns {'bpd': (N,), 'terms': {'reconstruction', 'diffusion', 'prior'}: (N,) each}
    (bpd = their sum; the dequantisation offset log₂(L/2) sits in 'reconstruction'). The
    Monte-Carlo draws come from fold_in(PRNGKey(seed), batch index): identical for every
    member evaluated on the same x (common random numbers).
    """
    if int(num_t) < 1:
        raise ValueError(f"num_t={num_t!r} must be a positive integer")
    basis = model.basis
    x = np.asarray(x, np.float32)
    d = basis.dim
    root = jax.random.PRNGKey(seed)
    parts = {k: [] for k in TERMS}
    bs = max(1, min(int(batch_size), len(x)))
    for j, lo in enumerate(range(0, len(x), bs)):
        xb = x[lo : lo + bs]
        n = len(xb)
        if n < bs:  # one compilation: pad with repeats of the first row
            xb = np.concatenate([xb, np.repeat(xb[:1], bs - n, axis=0)])
        z = basis.encode(jnp.asarray(xb))
        out = _terms_batch(model, z, jax.random.fold_in(root, j), num_t=int(num_t))
        for k, v in zip(TERMS, out, strict=True):
            parts[k].append(np.asarray(v, np.float64)[:n])
    nats = {k: np.concatenate(v) for k, v in parts.items()}
    to_bits = 1.0 / (d * math.log(2.0))
    lss = float(basis.log_scale_sum)
    terms = {
        # −log p(x) = −log p(z) + Σ log s: the Jacobian and the level offset go here
        "reconstruction": np.asarray(
            likelihood.bits_per_dim(-nats["reconstruction"], lss, d, levels=levels), np.float64
        ),
        "diffusion": nats["diffusion"] * to_bits,
        "prior": nats["prior"] * to_bits,
    }
    return {"bpd": sum(terms.values()), "terms": terms}


# ------------------------------------------------------------------ the Gaussian oracle
def _marginal_np(oracle, gamma):
    g = np.asarray(gamma, np.float64)
    a = np.sqrt(_sigmoid(-g))
    s2 = _sigmoid(g)
    k = np.asarray(oracle.K, np.float64)
    return a, s2, a[:, None] * k * a[None, :] + np.diag(s2)


def _kl_diag_vs_full(mean_q, var_q, mean_p, cov_p):
    """KL(N(mean_q, diag var_q) ‖ N(mean_p, cov_p)) per row of mean_q (B, D), float64."""
    d = cov_p.shape[0]
    chol = np.linalg.cholesky(cov_p)
    prec = np.linalg.inv(cov_p)
    r = mean_q - mean_p
    quad = np.einsum("bi,ij,bj->b", r, prec, r)
    logdet_p = 2.0 * np.sum(np.log(np.diag(chol)))
    return 0.5 * (np.sum(np.diag(prec) * var_q) + quad - d + logdet_p - np.sum(np.log(var_q)))


def oracle_diffusion_endpoints(oracle, g0, g1, z) -> np.ndarray:
    """KL(q(z_0|z) ‖ q(z_0)) − KL(q(z_1|z) ‖ q(z_1)) nats (B,): the exact diffusion term."""
    z = np.asarray(z, np.float64)
    m = np.asarray(oracle.m, np.float64)
    out = []
    for g in (g0, g1):
        a, s2, cov = _marginal_np(oracle, g)
        out.append(_kl_diag_vs_full(a * z, s2, a * m, cov))
    return out[0] - out[1]


def oracle_diffusion_quadrature(oracle, gamma_fn, z, *, kinks=None, nodes: int = 48):
    """½ ∫ Σ_i γ′_i E_ε(ε_i − ε̂_i)² dt nats (B,) with the exact score, by Gauss–Legendre
    quadrature (`nodes` per segment between the kinks). With ε̂ = diag(σ)P(z_t − α⊙m),
    P = Σ_t⁻¹: ε − ε̂ = Aε − b, A = I − diag(σ)P diag(σ), b = diag(σ)P diag(α)(z − m), so
    E(ε_i − ε̂_i)² = (AAᵀ)_ii + b_i²."""
    z = np.asarray(z, np.float64)
    m = np.asarray(oracle.m, np.float64)
    edges = [0.0, 1.0]
    if kinks is not None:
        edges += [float(k) for k in np.ravel(np.asarray(kinks)) if 0.0 < float(k) < 1.0]
    edges = np.unique(np.asarray(edges))
    xg, wg = np.polynomial.legendre.leggauss(int(nodes))
    grad = jax.jit(lambda t: jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),)))
    total = np.zeros(len(z))
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        for xi, wi in zip(xg, wg, strict=True):
            t = lo + (hi - lo) * (xi + 1.0) / 2.0
            g, dg = (np.asarray(v, np.float64) for v in grad(jnp.float32(t)))
            a, s2, cov = _marginal_np(oracle, g)
            s = np.sqrt(s2)
            prec = np.linalg.inv(cov)
            amat = np.eye(len(s)) - s[:, None] * prec * s[None, :]
            b = ((z - m) * a) @ prec.T * s  # rows: diag(σ) P diag(α)(z − m)
            integrand = 0.5 * (np.sum(dg * np.sum(amat * amat, axis=1)) + (b * b) @ dg)
            total += wi * (hi - lo) / 2.0 * integrand
    return total


def oracle_gaps(oracle, g0, g1, z) -> dict:
    """The two closed-form gaps between the exact-score bound and −log q_0(z), nats (B,)."""
    z = np.asarray(z, np.float64)
    d = z.shape[-1]
    m = np.asarray(oracle.m, np.float64)
    g0 = np.asarray(g0, np.float64)
    recon = 0.5 * (np.sum(g0) + d * (math.log(2.0 * math.pi) + 1.0))
    a0, s20, cov0 = _marginal_np(oracle, g0)
    kl0 = _kl_diag_vs_full(a0 * z, s20, a0 * m, cov0)
    logq0 = oracle.log_prob_np(z, g0)
    a1, s21, cov1 = _marginal_np(oracle, g1)
    kl1 = _kl_diag_vs_full(a1 * z, s21, a1 * m, cov1)
    prior = 0.5 * np.sum(a1**2 * z * z + s21 - 1.0 - np.log(s21), axis=-1)
    return {"decoder": recon + kl0 + logq0, "prior": prior - kl1}


def oracle_bound_bpd(oracle, gamma_fn, z, *, kinks=None, nodes: int = 48) -> np.ndarray:
    """The exact-score bound (B,) in bits/dim of z (offsets omitted: a difference of two of
    these is a difference of bounds): recon + quadrature diffusion + prior KL, / (D ln 2)."""
    z = np.asarray(z, np.float64)
    d = z.shape[-1]
    g0 = np.asarray(gamma_fn(jnp.float32(0.0)), np.float64)
    g1 = np.asarray(gamma_fn(jnp.float32(1.0)), np.float64)
    recon = 0.5 * (np.sum(g0) + d * (math.log(2.0 * math.pi) + 1.0))
    diff = oracle_diffusion_quadrature(oracle, gamma_fn, z, kinks=kinks, nodes=nodes)
    a2, s2 = _sigmoid(-g1), _sigmoid(g1)
    prior = 0.5 * np.sum(a2 * z * z + s2 - 1.0 - np.log(s2), axis=-1)
    return (recon + diff + prior) / (d * math.log(2.0))
