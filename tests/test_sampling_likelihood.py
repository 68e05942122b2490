"""Samplers and likelihood on closed-form cases (docs/maths.md §6, §7).

Standard normal data keeps N(0, I) invariant under every schedule (score s(z) = −z), so the
PF-ODE is the identity map and the reverse SDE leaves N(0, I) invariant; replacement keeps the
known components exact and, with a sequential schedule, samples the Gaussian conditional;
`bits_per_dim` is checked against a hand computation; bad inputs give one-line errors.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gudjax import schedules
from gudjax.likelihood import bits_per_dim, ode_log_likelihood, standard_normal_logp
from gudjax.oracle import GaussianOracle
from gudjax.sampling import (
    Known,
    ode_sample,
    ode_sample_adaptive,
    prior_sample,
    schedule_kinks,
    sde_sample,
)

D = 6


def std_normal_score(z, t):
    return -z


def scalar_gamma(t):
    return schedules.make_schedule("scalar_linear", dim=D).gamma(t)


def small_oracle(seed: int = 0) -> GaussianOracle:
    g = np.random.default_rng(seed)
    a = g.normal(size=(D, D))
    K = a @ a.T / D + 0.2 * np.eye(D)
    m = 0.5 * g.normal(size=D)
    return GaussianOracle(
        jnp.asarray(m, jnp.float32), jnp.asarray(K, jnp.float32), jnp.float32(0.0)
    )


# ------------------------------------------------------------------ standard normal data
def test_prior_sample():
    z = prior_sample(jax.random.key(0), (1000, D))
    assert z.shape == (1000, D) and z.dtype == jnp.float32
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1.0) < 0.05


def test_ode_is_identity_for_standard_normal_data():
    """s = −z ⇒ f = −½β(z + s) = 0: Heun and the adaptive solver return z1 itself."""
    z1 = prior_sample(jax.random.key(1), (16, D))
    z0 = jax.jit(lambda z: ode_sample(std_normal_score, scalar_gamma, z, 20))(z1)
    np.testing.assert_allclose(z0, z1, atol=1e-6)
    z0a, nfe = jax.jit(lambda z: ode_sample_adaptive(std_normal_score, scalar_gamma, z))(z1)
    np.testing.assert_allclose(z0a, z1, atol=1e-6)
    assert int(nfe) > 0


def test_sde_keeps_standard_normal_invariant():
    n = 20000
    z1 = prior_sample(jax.random.key(2), (n, D))
    z0 = jax.jit(lambda r, z: sde_sample(r, std_normal_score, scalar_gamma, z, 100))(
        jax.random.key(3), z1
    )
    z0 = np.asarray(z0, np.float64)
    assert np.all(np.isfinite(z0))
    np.testing.assert_allclose(z0.mean(0), 0.0, atol=0.04)
    np.testing.assert_allclose(np.cov(z0, rowvar=False), np.eye(D), atol=0.05)
    # ... and it actually moved the samples (the SDE is not the identity)
    assert float(np.mean(np.abs(z0 - np.asarray(z1)))) > 0.5


def test_likelihood_of_standard_normal_is_exact():
    z0 = prior_sample(jax.random.key(4), (8, D))
    for div, rng in (("exact", None), ("hutchinson", jax.random.key(5))):
        out = ode_log_likelihood(std_normal_score, scalar_gamma, z0, divergence=div, rng=rng)
        np.testing.assert_allclose(out["delta"], 0.0, atol=1e-5)
        np.testing.assert_allclose(out["logp"], standard_normal_logp(z0), rtol=1e-6)
        assert out["logp"].shape == (8,) and out["logp_prior"].shape == (8,)


def test_zero_beta_leaves_z_unchanged():
    """A constant γ has β = 0 everywhere: nothing may divide by β, and nothing moves."""

    def const_gamma(t):
        return jnp.full((D,), -5.0) + 0.0 * t

    def wild_score(z, t):
        return 1e6 * z  # must be multiplied by β = 0, never divided

    z1 = prior_sample(jax.random.key(6), (8, D))
    np.testing.assert_array_equal(ode_sample(wild_score, const_gamma, z1, 5), z1)
    np.testing.assert_array_equal(sde_sample(jax.random.key(7), wild_score, const_gamma, z1, 5), z1)


def test_schedule_kinks_match_windows():
    sched = schedules.make_schedule(
        "soft", dim=D, labels=np.arange(D, dtype=np.float32), a=2.0, clip=True
    )
    w = sched.windows()
    np.testing.assert_allclose(schedule_kinks(sched),
                               np.concatenate([w.start, w.settle, [w.t_star]]), atol=1e-6)
    # unclipped: only t*, where the path changes speed (the end of the generation phase)
    free = schedules.make_schedule("soft", dim=D, labels=np.arange(D) * 1.0)
    np.testing.assert_allclose(schedule_kinks(free), [free.windows().t_star], atol=1e-7)
    assert schedule_kinks(schedules.make_schedule("scalar_linear", dim=D)) is None


# ------------------------------------------------------------------ conditional generation
def _sequential_schedule():
    """Known block (label 0) generated strictly before the rest (label 1), windows disjoint.

    γ̃_noise = 10 makes p_1 ≈ N(0, I) for every component: the PF-ODE cannot correct a
    wrong start, so with the default γ̃_noise = 3 (SNR e⁻³ at t = 1) its replacement samples
    keep an O(α(1)) bias, while the SDE forgets it.
    """
    labels = np.array([0, 0, 1, 1, 1, 1], np.float32)
    return schedules.make_schedule(
        "soft", dim=D, labels=labels, a=25.0, clip=True, gamma_den=-10.0, gamma_noise=10.0
    )


def test_replacement_keeps_known_exact_and_samples_the_conditional():
    oracle = small_oracle()
    sched = _sequential_schedule()
    gamma_fn = lambda t: sched.gamma(t)
    score_fn = oracle.score_fn(gamma_fn)
    n = 8000
    known_mask = np.array([True, True, False, False, False, False])
    z0_known = np.zeros((n, D), np.float32)
    z0_known[:, :2] = [1.0, -0.5]
    z0_known[:, 2:] = 123.0  # ignored: not known
    known = Known(jnp.asarray(known_mask), jnp.asarray(z0_known))
    z1 = oracle.sample(jax.random.key(8), gamma_fn(1.0), n)
    run = jax.jit(
        lambda z: (
            sde_sample(jax.random.key(9), score_fn, gamma_fn, z, 300, known=known),
            ode_sample(score_fn, gamma_fn, z, 100, known=known, rng=jax.random.key(10)),
        )
    )
    mean0, cov0 = (np.asarray(a, np.float64) for a in oracle.marginal(gamma_fn(0.0)))
    k, u = known_mask, ~known_mask
    cond_mean = mean0[u] + cov0[np.ix_(u, k)] @ np.linalg.solve(
        cov0[np.ix_(k, k)], z0_known[0, k] - mean0[k]
    )
    cond_cov = cov0[np.ix_(u, u)] - cov0[np.ix_(u, k)] @ np.linalg.solve(
        cov0[np.ix_(k, k)], cov0[np.ix_(k, u)]
    )
    assert np.max(np.abs(cond_mean - mean0[u])) > 0.3  # conditioning matters here
    for z in run(z1):
        z = np.asarray(z, np.float64)
        np.testing.assert_array_equal(z[:, k], z0_known[:, k])  # exactly the given values
        np.testing.assert_allclose(z[:, u].mean(0), cond_mean, atol=0.06)
        err = np.linalg.norm(np.cov(z[:, u], rowvar=False) - cond_cov) / np.linalg.norm(cond_cov)
        assert err < 0.08


def test_replacement_per_example_mask():
    """A (B, D) mask: each example keeps its own known set exactly."""
    oracle = small_oracle(1)
    gamma_fn = scalar_gamma
    b = 4
    mask = np.zeros((b, D), bool)
    for i in range(b):
        mask[i, i] = True
    z0 = np.arange(b * D, dtype=np.float32).reshape(b, D) / 10.0
    z1 = prior_sample(jax.random.key(11), (b, D))
    known = Known(jnp.asarray(mask), jnp.asarray(z0))
    out_sde = sde_sample(
        jax.random.key(12), oracle.score_fn(gamma_fn), gamma_fn, z1, 20, known=known
    )
    out_ode = ode_sample(
        oracle.score_fn(gamma_fn), gamma_fn, z1, 10, known=known, rng=jax.random.key(13)
    )
    for out in (out_sde, out_ode):
        out = np.asarray(out)
        np.testing.assert_array_equal(out[mask], z0[mask])
        assert np.all(np.isfinite(out)) and not np.allclose(out[~mask], np.asarray(z1)[~mask])


# ------------------------------------------------------------------ bits per dimension
def test_bits_per_dim_by_hand():
    """Standard normal in z with s = 1 (log-scale sum 0) at known values z."""
    z = jnp.array([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]])
    logp = standard_normal_logp(z)
    by_hand_logp = np.array(
        [-1.5 * math.log(2 * math.pi), -0.5 * 6.0 - 1.5 * math.log(2 * math.pi)]
    )
    np.testing.assert_allclose(logp, by_hand_logp, rtol=1e-6)
    # bpd = −log p / (D ln 2) + 7; for z = 0: ½ log2(2π) + 7 = 8.3257...
    bpd = bits_per_dim(logp, 0.0, 3)
    np.testing.assert_allclose(bpd[0], 0.5 * math.log2(2 * math.pi) + 7.0, rtol=1e-6)
    np.testing.assert_allclose(
        bpd[1], (3.0 + 1.5 * math.log(2 * math.pi)) / (3 * math.log(2)) + 7.0, rtol=1e-6
    )
    np.testing.assert_allclose(bits_per_dim(logp, 0.0, 3, dequantized=False), bpd - 7.0, rtol=1e-6)
    # scales s_i: log p(x) = log p(z) − Σ log s_i, e.g. s = 1/2 everywhere
    lss = 3 * math.log(0.5)
    np.testing.assert_allclose(
        bits_per_dim(logp, lss, 3), (-(by_hand_logp - lss)) / (3 * math.log(2)) + 7.0, rtol=1e-6
    )


def test_bits_per_dim_takes_a_basis():
    from gudjax.bases import make_basis

    basis = make_basis("pixel", (2, 2, 1), variance=np.full(4, 0.25), whiten=True)  # s = 0.5
    logp = jnp.array([-3.0])
    np.testing.assert_allclose(
        bits_per_dim(logp, basis, basis.dim), bits_per_dim(logp, 4 * math.log(0.5), 4), rtol=1e-6
    )


# ------------------------------------------------------------------ bad inputs
def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_known_mask_shape():
    z1 = jnp.zeros((4, D))
    known = Known(jnp.ones((D + 1,), bool), jnp.zeros((4, D)))
    with pytest.raises(ValueError) as e:
        sde_sample(jax.random.key(0), std_normal_score, scalar_gamma, z1, 3, known=known)
    assert "known.mask" in _one_line(e) and f"({D},)" in str(e.value)
    with pytest.raises(ValueError) as e:
        ode_sample(
            std_normal_score,
            scalar_gamma,
            z1,
            3,
            known=Known(jnp.ones((3, D)), z1),
            rng=jax.random.key(0),
        )
    assert "known.mask" in _one_line(e)
    with pytest.raises(ValueError) as e:
        ode_sample(
            std_normal_score,
            scalar_gamma,
            z1,
            3,
            known=Known(jnp.ones((D,)), z1[:2]),
            rng=jax.random.key(0),
        )
    assert "known.z0" in _one_line(e)
    with pytest.raises(ValueError) as e:
        ode_sample(std_normal_score, scalar_gamma, z1, 3, known=Known(jnp.ones((D,)), z1))
    assert "rng" in _one_line(e)


def test_unknown_divergence_and_solver():
    z0 = jnp.zeros((2, D))
    with pytest.raises(ValueError) as e:
        ode_log_likelihood(std_normal_score, scalar_gamma, z0, divergence="skilling")
    assert "exact" in _one_line(e) and "hutchinson" in str(e.value)
    with pytest.raises(ValueError) as e:
        ode_log_likelihood(std_normal_score, scalar_gamma, z0, solver="rk4")
    assert "tsit5" in _one_line(e) and "rk4" in str(e.value)
    with pytest.raises(ValueError) as e:
        ode_sample_adaptive(std_normal_score, scalar_gamma, z0, solver="rk4")
    assert "tsit5" in _one_line(e)
    with pytest.raises(ValueError) as e:
        ode_log_likelihood(std_normal_score, scalar_gamma, z0, divergence="hutchinson")
    assert "rng" in _one_line(e)


def test_bad_steps_and_shapes():
    with pytest.raises(ValueError) as e:
        ode_sample(std_normal_score, scalar_gamma, jnp.zeros((2, D)), 0)
    assert "num_steps" in _one_line(e)
    with pytest.raises(ValueError) as e:
        sde_sample(jax.random.key(0), std_normal_score, scalar_gamma, jnp.zeros((D,)), 3)
    assert "(B, D)" in _one_line(e)
    with pytest.raises(ValueError) as e:
        ode_sample(std_normal_score, scalar_gamma, jnp.zeros((2, D)), 3, t_end=1.0)
    assert "t_end" in _one_line(e)


def test_to_images_decodes_and_clips():
    from gudjax.bases import make_basis
    from gudjax.sampling import to_images

    basis = make_basis(
        "pixel", (2, 2, 1), mean=np.full((2, 2, 1), 0.5), variance=np.full(4, 4.0), whiten=True
    )
    z = jnp.array([[0.0, 0.1, -1.0, 2.0]])  # x = 2 z + 0.5
    np.testing.assert_allclose(
        to_images(basis, z, clip=False).reshape(-1), [0.5, 0.7, -1.5, 4.5], rtol=1e-6
    )
    np.testing.assert_allclose(to_images(basis, z).reshape(-1), [0.5, 0.7, -1.0, 1.0], rtol=1e-6)
    assert to_images(basis, z).shape == (1, 2, 2, 1)
