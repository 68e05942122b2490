"""Per-block likelihood at the autoregressive limit (docs/maths.md §10.4) against the Gaussian
oracle: each window's divergence integral is the closed-form conditional log-density
difference, and the block terms sum to the ordinary full-interval NLL."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gudjax import ar_likelihood, bases, process, schedules
from gudjax.likelihood import bits_per_dim, ode_log_likelihood
from gudjax.oracle import GaussianOracle, random_gaussian
from gudjax.score_model import oracle_model

SHAPE = (4, 4, 1)
D = 16
N = 4


def _case(kind):
    """(basis, schedule, oracle, z0): Gaussian data in a small unwhitened Haar basis (one
    block per level) or a whitened PCA basis (4 equal blocks by variance rank)."""
    mu_x, C = random_gaussian(3, SHAPE)
    if kind == "haar_unwhitened":
        U = np.asarray(bases.make_basis("haar", SHAPE, levels=2).matrix(), np.float64)
        basis = bases.make_basis("haar", SHAPE, levels=2, variance=np.diag(U @ C @ U.T))
        sched = schedules.make_schedule("autoregressive", basis, labels="level")
    else:
        g = np.random.default_rng(0)
        x = g.multivariate_normal(mu_x, C, size=400).reshape(-1, *SHAPE)
        basis = bases.fit_basis("pca", [x], whiten=True)
        sched = schedules.make_schedule("autoregressive", basis, labels="variance", num_blocks=4)
    orc = GaussianOracle.from_data(basis, mu_x, C)
    x0 = np.random.default_rng(1).multivariate_normal(mu_x, C, size=N).reshape(N, *SHAPE)
    return basis, sched, orc, basis.encode(jnp.asarray(x0, jnp.float32))


@pytest.mark.parametrize("kind", ["haar_unwhitened", "pca_whitened"])
def test_windowed_terms_equal_the_gaussian_conditionals(kind):
    basis, sched, orc, z0 = _case(kind)
    blocks, k_count = ar_likelihood.ar_blocks(sched)
    assert k_count >= 3
    model = oracle_model(orc, basis, sched)
    gamma_fn, score_fn = model.gamma_fn(), model.score_fn()

    # at most one block has β_i > 0 at any time, every block moves somewhere (a grid
    # that misses the window edges themselves, where β has a one-sided value only)
    ts = jnp.linspace(0.0, 1.0, 2004)
    beta = np.asarray(jax.vmap(lambda t: process.noise_state(sched, t).beta)(ts))
    moving = np.stack([(beta[:, blocks == k] > 0).any(axis=1) for k in range(k_count)], 1)
    assert moving.sum(axis=1).max() == 1 and moving.any(axis=0).all()

    out = jax.jit(lambda z: ar_likelihood.ode_block_log_likelihood(
        score_fn, gamma_fn, z, blocks=blocks, num_blocks=k_count, divergence="exact",
        rtol=1e-6, atol=1e-6))(z0)
    exact = ar_likelihood.oracle_block_deltas(orc, gamma_fn, out["z_edges"], blocks, k_count)
    dims = np.bincount(blocks, minlength=k_count)
    err_bpd = np.abs(np.asarray(out["delta"], np.float64) - exact) / (dims * math.log(2.0))
    assert err_bpd.max() < 1e-3, err_bpd

    # the block NLLs sum exactly to −log p_0; the per-block bits/dim, dimension-weighted,
    # equal the total from one ordinary integration with jump_ts at the window edges
    nll = np.asarray(out["nll"], np.float64)
    np.testing.assert_allclose(nll.sum(1), -np.asarray(out["logp"], np.float64), rtol=1e-6)
    full = jax.jit(lambda z: ode_log_likelihood(
        score_fn, gamma_fn, z, divergence="exact", rtol=1e-6, atol=1e-6,
        jump_ts=sched.kinks()))(z0)
    log_scale = np.log(np.asarray(basis.scale, np.float64))
    bpd_k = ar_likelihood.block_bits_per_dim(nll, blocks, k_count, log_scale, levels=17)
    total = ar_likelihood.weighted_total(bpd_k, blocks, k_count)
    ref = np.asarray(bits_per_dim(np.asarray(full["logp"], np.float64),
                                  float(np.sum(log_scale)), D, levels=17))
    assert np.abs(total - ref).max() < 1e-3
    # and the windowed total is the exact Gaussian log-density of z0 at t = 0 (with the
    # standard-normal prior's leftover signal: compare the divergence parts only)
    exact_logp0 = orc.log_prob_np(np.asarray(z0), np.asarray(gamma_fn(0.0)))
    exact_logp1 = orc.log_prob_np(np.asarray(out["z_edges"][-1]), np.asarray(gamma_fn(1.0)))
    np.testing.assert_allclose(np.asarray(out["delta"]).sum(1), exact_logp0 - exact_logp1,
                               atol=1e-3 * D)


def test_hutchinson_probes_match_the_full_integration_and_bad_inputs_fail():
    basis, sched, orc, z0 = _case("haar_unwhitened")
    blocks, k_count = ar_likelihood.ar_blocks(sched)
    model = oracle_model(orc, basis, sched)
    rng = jax.random.key(0)
    out = jax.jit(lambda z: ar_likelihood.ode_block_log_likelihood(
        model.score_fn(), model.gamma_fn(), z, blocks=blocks, num_blocks=k_count,
        divergence="hutchinson", rng=rng, num_probes=2, rtol=1e-5, atol=1e-5))(z0)
    full = jax.jit(lambda z: ode_log_likelihood(
        model.score_fn(), model.gamma_fn(), z, divergence="hutchinson", rng=rng, num_probes=2,
        rtol=1e-5, atol=1e-5, jump_ts=sched.kinks()))(z0)
    # same probes: the two differ by solver tolerance only (not by probe noise)
    diff = np.abs(np.asarray(out["delta"]).sum(1) - np.asarray(full["delta"])) / (D * math.log(2))
    assert diff.max() < 1e-3
    with pytest.raises(ValueError, match="autoregressive"):
        ar_likelihood.ar_blocks(schedules.make_schedule("soft", basis, labels="level"))
    with pytest.raises(ValueError, match="blocks must be"):
        ar_likelihood.ode_block_log_likelihood(model.score_fn(), model.gamma_fn(), z0,
                                               blocks=blocks[:3], num_blocks=k_count)
