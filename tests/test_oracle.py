"""The Gaussian oracle (docs/maths.md §8): every basis × prior × schedule row (every registered
schedule family among them, through its own example on the Haar basis; the command also runs
those on pixels), the product's own start from N(0, I), plus the oracle itself.

The table is computed once per session by exactly `experiments.oracle_check.run_rows` (preset
TEST: the same 20000 samples as the full check, fewer steps; the exact-covariance Heun column
on every row, Euler–Maruyama on the first row of each prior in each schedule group), so the
test and the command cannot diverge; each row is then its own parameterised test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from experiments import oracle_check
from experiments.oracle_check import COV_THRESHOLD, NLL_THRESHOLD, TEST
from gudjax import bases, schedules
from gudjax.likelihood import ode_log_likelihood
from gudjax.oracle import GaussianOracle, random_gaussian

ROWS = oracle_check.row_specs(example_bases=oracle_check.TEST_EXAMPLE_BASES)
SHAPE = (8, 8, 1)


def _oracle(name: str, whiten: bool, shape=SHAPE):
    mu_x, C = oracle_check.gaussian(tuple(shape))
    basis = oracle_check.fitted_basis(name, tuple(shape)).with_prior(whiten)
    return basis, GaussianOracle.from_data(basis, mu_x, C), mu_x, C


# ------------------------------------------------------------------ the table
@pytest.fixture(scope="module")
def table() -> dict:
    return {res["row"]: res for res in oracle_check.run_rows(ROWS, TEST)}


@pytest.mark.slow  # the table: a few minutes of CPU
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_oracle_row(row, table):
    res = table[row.name]
    msg = oracle_check.HEADER + "\n" + oracle_check.format_row(res)
    assert res["nll_err"] < NLL_THRESHOLD, msg
    assert res["ode_cov_err"] < COV_THRESHOLD and res["ode_mean_err"] < 0.05, msg
    if res["sde_cov_err"] is not None:
        assert res["sde_cov_err"] < COV_THRESHOLD and res["sde_mean_err"] < 0.05, msg
    assert res["standard_diffusion"] is not False, msg
    assert res["passed"], msg


def test_euler_maruyama_ran_on_every_schedule_kind_and_prior(table):
    """The SDE column is filled on at least one row per (schedule, prior, shape)."""
    with_sde = {(r.schedule, r.whiten, r.shape) for r in ROWS
                if table[r.name]["sde_cov_err"] is not None}
    assert with_sde == {(r.schedule, r.whiten, r.shape) for r in ROWS}


@pytest.fixture(scope="module")
def prior_table() -> dict:
    rows = [*oracle_check.PRIOR_ROWS, oracle_check.PRIOR_CONTROL]
    return {spec.label: oracle_check.run_prior_row(name, spec, TEST) for name, spec in rows}


@pytest.mark.parametrize("row", oracle_check.PRIOR_ROWS, ids=lambda r: f"{r[0]}-{r[1].label}")
def test_product_start_agrees_up_to_the_reported_prior_term(row, prior_table):
    """Unwhitened, variances 1e-6 … 1: N(0, I) samples and the N(0, I)-prior NLL agree with
    the exact answers up to the prior term, which is small (< 0.01 bits/dim)."""
    res = prior_table[row[1].label]
    msg = oracle_check.PRIOR_HEADER + "\n" + oracle_check.format_prior_row(res)
    assert res["worst_sigma2_at_1"] > 0.99 and res["prior_term_bpd"] < 0.01, msg
    assert abs(res["nll_n01_minus_exact"]) <= res["prior_term_nats_per_dim"] + NLL_THRESHOLD, msg
    assert res["worst_log_var_err"] < oracle_check.VAR_THRESHOLD, msg
    assert res["sde_cov_err"] < COV_THRESHOLD, msg
    assert res["passed"], msg


def test_window_only_end_points_fail_the_product_start(prior_table):
    """The control: end points set on γ̃ alone leave tiny pixels at σ²(1) ≈ 1e-4; started from
    N(0, I) they keep their unit noise (the speckle of column generation), and the row fails."""
    res = prior_table[oracle_check.PRIOR_CONTROL[1].label]
    assert res["worst_sigma2_at_1"] < 1e-3 and res["prior_term_bpd"] > 0.1
    assert res["worst_log_var_err"] > 1.0 and res["sde_cov_err"] > 1.0
    assert not res["passed"]


def test_row_list_covers_every_basis_prior_and_schedule():
    names = {(r.basis, r.whiten, r.schedule) for r in ROWS if r.shape == SHAPE}
    for name in bases.registered_bases():
        for whiten in (False, True):
            for spec in oracle_check.SCHEDULE_SPECS:
                if spec.example and name not in oracle_check.TEST_EXAMPLE_BASES:
                    continue
                if spec.only_basis in (None, name):
                    assert (name, whiten, spec.label) in names
    assert any(r.shape == (8, 8, 3) for r in ROWS)
    # every registered schedule family has a row (its own example when not listed by hand)
    assert set(schedules.registered_schedules()) <= {
        oracle_check.SPEC_BY_LABEL[r.schedule].name for r in ROWS
    }


@pytest.mark.parametrize("name", bases.registered_bases())
def test_standard_diffusion_identity(name):
    """Unwhitened, a = 1, variance labels: one shared γ(t), bit for bit (docs/maths.md §3)."""
    assert oracle_check.standard_diffusion_identity(name)
    # the check can fail: the whitened prior with the same labels is not standard diffusion
    basis = oracle_check.fitted_basis(name, SHAPE).with_prior(True)
    assert not schedules.is_standard_diffusion(schedules.make_schedule("soft", basis, a=1.0))


# ------------------------------------------------------------------ the oracle itself
@pytest.mark.parametrize("name", bases.registered_bases())
def test_from_data_matches_the_basis_encoding(name):
    """m = encode(μ_x) and K = Cov(encode(x)), computed by pushing C's factor through encode."""
    basis, oracle, mu_x, C = _oracle(name, whiten=True)
    L = np.linalg.cholesky(C)
    imgs = (mu_x[None, :] + L.T).reshape(-1, *SHAPE)  # μ_x + L e_j, one per row
    e = np.asarray(basis.encode(jnp.asarray(imgs, jnp.float32)), np.float64)
    m = np.asarray(basis.encode(jnp.asarray(mu_x.reshape(SHAPE), jnp.float32)), np.float64)
    np.testing.assert_allclose(oracle.m, m, atol=1e-4)
    K = (e - m).T @ (e - m)
    np.testing.assert_allclose(oracle.K, K, atol=1e-4 * np.abs(K).max())
    # and back: Uᵀ S K S U = C
    U = np.asarray(basis.matrix(), np.float64)
    s = np.asarray(basis.scale, np.float64)
    np.testing.assert_allclose(
        U.T @ (s[:, None] * np.asarray(oracle.K, np.float64) * s) @ U, C, atol=1e-5
    )


@pytest.mark.parametrize("whiten", [False, True])
def test_marginal_at_gamma0_and_logp_x0(whiten):
    """Pixel basis: p_0(x) = N(μ + α⊙(μ_x − μ), diag(α) C diag(α)·s-scaled + diag(s² σ²))."""
    basis, oracle, mu_x, C = _oracle("pixel", whiten)
    sched = schedules.make_schedule("soft", basis, a=3.0, clip=True)
    gamma0 = np.asarray(sched.gamma(0.0), np.float64)
    alpha = np.sqrt(1.0 / (1.0 + np.exp(gamma0)))
    sigma2 = 1.0 / (1.0 + np.exp(-gamma0))
    s = np.asarray(basis.scale, np.float64)
    mu = np.asarray(basis.mean, np.float64).reshape(-1)
    mean_x = mu + alpha * (mu_x - mu)
    cov_x = alpha[:, None] * C * alpha[None, :] + np.diag(s**2 * sigma2)
    x = np.random.default_rng(0).multivariate_normal(mu_x, C, size=5).astype(np.float32)
    ref = stats.multivariate_normal(mean_x, cov_x).logpdf(x.astype(np.float64))
    got = oracle.logp_x0(x.reshape(-1, *SHAPE), lambda t: sched.gamma(t))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)
    # marginal(γ(0)) is that Gaussian in z; γ → −∞ recovers the data (m, K)
    mean_z, cov_z = oracle.marginal(jnp.asarray(gamma0, jnp.float32))
    np.testing.assert_allclose(mean_z, alpha * np.asarray(oracle.m), atol=1e-5)
    mean_c, cov_c = oracle.marginal(jnp.full((basis.dim,), -40.0))
    np.testing.assert_allclose(mean_c, oracle.m, atol=1e-6)
    np.testing.assert_allclose(cov_c, oracle.K, atol=1e-6 * float(jnp.max(jnp.abs(oracle.K))))
    del cov_z


def test_sample_matches_marginal_and_score_is_grad_log_prob():
    basis, oracle, _, _ = _oracle("dct", whiten=False)
    sched = schedules.make_schedule("soft", basis, a=1.0)
    gamma = sched.gamma(0.4)
    n = 40000
    z = np.asarray(oracle.sample(jax.random.key(0), gamma, n), np.float64)
    mean, cov = (np.asarray(a, np.float64) for a in oracle.marginal(gamma))
    floor = oracle_check.mc_floor(cov, n)
    assert np.linalg.norm(np.cov(z, rowvar=False) - cov) / np.linalg.norm(cov) < 3 * floor
    assert np.linalg.norm(z.mean(0) - mean) < 4 * math.sqrt(np.trace(cov) / n)
    # score = ∇ log_prob; float32 log_prob = float64 reference
    zq = jnp.asarray(z[:3], jnp.float32)
    grad = jax.vmap(jax.grad(lambda v: oracle.log_prob(v[None], gamma)[0]))(zq)
    np.testing.assert_allclose(oracle.score(zq, gamma), grad, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(oracle.log_prob(zq, gamma), oracle.log_prob_np(zq, gamma), rtol=1e-5)
    # the score at t via gamma_fn, and the scoring helper for the samplers
    gamma_fn = lambda t: sched.gamma(t)
    np.testing.assert_allclose(
        oracle.score_fn(gamma_fn)(zq, 0.4), oracle.score(zq, gamma), rtol=1e-6
    )
    np.testing.assert_allclose(oracle.score(zq, gamma_fn, 0.4), oracle.score(zq, gamma), rtol=1e-6)


def test_sigma_points_and_sequential_cholesky():
    basis, oracle, _, _ = _oracle("haar", whiten=True)
    gamma = schedules.make_schedule("soft", basis, a=2.0).gamma(0.7)
    pts = np.asarray(oracle.sigma_points(gamma), np.float64)
    mean, cov = (np.asarray(a, np.float64) for a in oracle.marginal(gamma))
    assert pts.shape == (2 * basis.dim, basis.dim)
    np.testing.assert_allclose(pts.mean(0), mean, atol=1e-5)
    np.testing.assert_allclose(np.cov(pts, rowvar=False, bias=True), cov, atol=1e-4)
    # the vmap-safe Cholesky: batched = one by one, and differentiable
    from gudjax.oracle import cholesky

    covs = jnp.stack([oracle.marginal(gamma + s)[1] for s in (0.0, 1.0, -1.0)])
    np.testing.assert_allclose(jax.vmap(cholesky)(covs), jnp.linalg.cholesky(covs), atol=1e-5)
    g1 = jax.grad(lambda c: cholesky(c).sum())(covs[0])
    g2 = jax.grad(lambda c: jnp.linalg.cholesky(c).sum())(covs[0])
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-5)


def test_hutchinson_agrees_with_exact_within_its_standard_error():
    basis, oracle, mu_x, C = _oracle("pixel", whiten=True)
    sched = schedules.make_schedule("soft", basis, a=1.0)
    gamma_fn = lambda t: sched.gamma(t)
    z_oracle = oracle.z_only()
    n = 48
    x = np.random.default_rng(3).multivariate_normal(mu_x, C, size=n).reshape(-1, *SHAPE)
    z0 = basis.encode(jnp.asarray(x, jnp.float32))

    @jax.jit
    def run(z0, rng):
        kw = dict(prior_logp=z_oracle.prior_logp(gamma_fn))
        score = z_oracle.score_fn(gamma_fn)
        exact = ode_log_likelihood(score, gamma_fn, z0, **kw)["logp"]
        h1 = ode_log_likelihood(score, gamma_fn, z0, divergence="hutchinson", rng=rng, **kw)["logp"]
        h8 = ode_log_likelihood(
            score, gamma_fn, z0, divergence="hutchinson", rng=rng, num_probes=8, **kw
        )["logp"]
        return exact, h1, h8

    exact, h1, h8 = (np.asarray(a, np.float64) for a in run(z0, jax.random.key(7)))
    ref = oracle.logp_x0(x, gamma_fn) + float(np.sum(np.log(np.asarray(basis.scale, np.float64))))
    assert np.max(np.abs(exact - ref)) / basis.dim < 1e-3
    for h, probes in ((h1, 1), (h8, 8)):
        d = h - exact
        se = d.std(ddof=1) / math.sqrt(n)
        assert d.std() > 1e-3, "the estimate should be random"
        assert abs(d.mean()) < 3.5 * se, (probes, d.mean(), se)
    # more probes, smaller spread (≈ 1/√8)
    assert (h8 - exact).std() < 0.6 * (h1 - exact).std()


def test_random_gaussian_is_image_like():
    mu_x, C = random_gaussian(0, (8, 8, 1))
    assert mu_x.shape == (64,) and C.shape == (64, 64)
    np.testing.assert_allclose(C, C.T)
    evals = np.linalg.eigvalsh(C)
    assert evals.min() > 1e-4 and evals.max() / evals.min() < 1e5
    std = np.sqrt(np.diag(C))
    assert 0.3 <= std.min() and std.max() <= 0.5
    assert np.abs(mu_x).max() <= 0.5
    corr = C / np.outer(std, std)
    assert corr[0, 1] > 0.5 and corr[0, 8] > 0.5  # neighbours (right, below) strongly correlated
    assert np.trace(C) / np.linalg.norm(C) < 2.5  # decaying spectrum: small Monte-Carlo error
    mu2, C2 = random_gaussian(0, (8, 8, 1))
    np.testing.assert_array_equal(C, C2)
    mu3, C3 = random_gaussian(jax.random.key(1), (8, 8, 3))
    assert mu3.shape == (192,) and C3.shape == (192, 192)
    assert np.linalg.eigvalsh(C3).min() > 1e-4
