"""The Gaussian skip of the score network (docs/maths.md §5.1): with a zero network output
the model is the exact score of Gaussian data with the basis variances, in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits_pca
from gudjax import bases, process, schedules, score_model, step
from gudjax.models import create_model


def _setup(skip: bool, whiten: bool = False):
    c = digits_pca.get_config("runlocal")
    m = c.model
    m.ch, m.ch_mult, m.num_res_blocks = 8, (1, 2), 1
    m.attn_resolutions, m.cross_attn_resolutions = (4,), (4,)
    m.token_dim, m.num_heads, m.dropout = 16, 2, 0.0
    m.gaussian_skip = skip
    # Anisotropic variances 1e-4 … 1e2: a PCA basis of a Gaussian with that spectrum.
    rng = np.random.default_rng(0)
    d = 64
    var = np.logspace(2, -4, d)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(4096, d)) * np.sqrt(var)) @ q.T
    basis = bases.fit_basis("pca", [x.reshape(-1, 8, 8, 1).astype(np.float32)], whiten=whiten)
    sched = schedules.make_schedule("soft", basis, labels="variance", a=0.6)
    graphdef, params = create_model(
        m, image_shape=basis.shape, num_groups=basis.num_groups, rng=jax.random.PRNGKey(0)
    )
    return basis, sched, graphdef, params


@pytest.mark.parametrize("whiten", [False, True])
def test_untrained_skip_network_is_the_diagonal_gaussian_score(whiten):
    basis, sched, graphdef, params = _setup(True, whiten)
    model = score_model.network_model(graphdef, params, basis, sched)
    z = jax.random.normal(jax.random.PRNGKey(1), (3, basis.dim)) * 3.0
    var = np.exp(np.asarray(basis.rho))
    assert var.max() / var.min() > 1e3 or whiten
    score = jax.jit(lambda z, t: model.score_fn()(z, t))
    for t in (0.05, 0.5, 0.97):
        got = np.asarray(score(z, t))
        s = process.noise_state(sched, t)
        alpha2, sigma2 = np.asarray(s.alpha) ** 2, np.asarray(s.sigma) ** 2
        want = -np.asarray(z) / (alpha2 * var + sigma2)  # ∇ log N(z; 0, α²v + σ²)
        # Float32 basis transforms leak ~1e-7 of the largest entry into the others.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_without_skip_the_untrained_network_has_zero_score():
    basis, sched, graphdef, params = _setup(False)
    model = score_model.network_model(graphdef, params, basis, sched)
    z = jax.random.normal(jax.random.PRNGKey(1), (3, basis.dim))
    score = jax.jit(lambda z: model.score_fn()(z, 0.5))
    np.testing.assert_array_equal(np.asarray(score(z)), 0.0)


def test_gaussian_eps_is_the_posterior_mean_of_the_noise():
    """E[ε | z_t] by Monte Carlo on Gaussian data equals gaussian_eps (the closed form)."""
    basis, sched, _, _ = _setup(True)
    s = process.noise_state(sched, 0.8)
    n = 200_000
    k0, k1 = jax.random.split(jax.random.PRNGKey(2))
    var = jnp.exp(sched.rho)
    z0 = jax.random.normal(k0, (n, basis.dim)) * jnp.sqrt(var)
    eps = jax.random.normal(k1, (n, basis.dim))
    zt = process.forward_sample(z0, s, eps)
    # Regression slope of ε on z_t, per component, against the closed form's.
    slope = jnp.sum(eps * zt, 0) / jnp.sum(zt * zt, 0)
    closed = step.gaussian_eps(sched, s, jnp.ones((1, basis.dim)))[0]
    np.testing.assert_allclose(np.asarray(slope), np.asarray(closed), atol=0.01)


def test_loss_of_the_untrained_skip_network_is_the_gaussian_optimum():
    """The unweighted ε-loss at init equals the mean of α²v/(α²v + σ²) in expectation."""
    basis, sched, graphdef, params = _setup(True)
    n = 4096
    var = jnp.exp(sched.rho)
    z0 = jax.random.normal(jax.random.PRNGKey(3), (n, basis.dim)) * jnp.sqrt(var)
    t = jnp.full((n,), 0.7)
    eps = jax.random.normal(jax.random.PRNGKey(4), (n, basis.dim))

    def eps_fn(z_t, state, t):
        return step.network_eps(graphdef, params, basis, sched, z_t, state, t)

    loss = jax.jit(
        lambda z0, t, eps: process.loss_given_noise(eps_fn, sched, z0, t, eps)
    )(z0, t, eps)
    s = process.noise_state(sched, 0.7)
    a2v = s.alpha**2 * var
    want = float(jnp.mean(a2v / (a2v + s.sigma**2)))
    np.testing.assert_allclose(float(jnp.mean(loss)), want, rtol=0.03)


def test_bad_gaussian_skip_value_is_one_line_error():
    c = digits_pca.get_config("runlocal")
    del c.model["gaussian_skip"]  # a hand-written or JSON config can hold any type
    c.model.gaussian_skip = "yes"
    with pytest.raises(ValueError, match="gaussian_skip must be True or False"):
        create_model(c.model, image_shape=(8, 8, 1), num_groups=4, rng=jax.random.PRNGKey(0))


def test_a_stored_config_without_the_field_builds_a_network_without_skip():
    c = digits_pca.get_config("runlocal")
    del c.model["gaussian_skip"]
    graphdef, params = create_model(
        c.model, image_shape=(8, 8, 1), num_groups=4, rng=jax.random.PRNGKey(0)
    )
    from gudjax.models import apply_model

    x = jnp.zeros((1, 8, 8, 1))
    out = jax.jit(lambda p: apply_model(graphdef, p, x, gamma_groups=jnp.zeros((1, 4, 3)),
                                        skip=lambda: jnp.ones_like(x)))(params)
    np.testing.assert_array_equal(np.asarray(out), 0.0)
