"""Forward process and ε-prediction objective (docs/maths.md §2, §4), checked against closed
forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gudjax import process, schedules
from gudjax.schedules import make_schedule

D = 16
# jitted entry points (eager JAX compiles every primitive separately, which is slower here)
noise_state = jax.jit(process.noise_state)
batch_noise_state = jax.jit(process.batch_noise_state)


def soft_schedule(**kw):
    """A soft schedule with distinct γ_i (unwhitened-like ρ and a spread of labels)."""
    rho = np.linspace(-3.0, 1.0, D).astype(np.float32)
    labels = np.linspace(0.0, 4.0, D).astype(np.float32)
    return make_schedule("soft", dim=D, rho=rho, labels=labels, a=0.7, **kw)


def test_forward_sample_marginal_matches_alpha_z0_and_sigma2():
    sched = soft_schedule()
    z0 = jnp.asarray(np.random.default_rng(0).normal(size=D) * 2.0, jnp.float32)
    n = 40000
    for t in (0.3, 0.5, 0.7):  # (by t = 0.9 every component is near its terminal level)
        st = noise_state(sched, jnp.float32(t))
        eps = jax.random.normal(jax.random.key(int(t * 100)), (n, D))
        zt = np.asarray(jax.jit(process.forward_sample)(z0, st, eps), np.float64)
        alpha, sigma = np.asarray(st.alpha, np.float64), np.asarray(st.sigma, np.float64)
        assert np.ptp(sigma) > 0.3  # the components really are at different noise levels
        np.testing.assert_allclose(zt.mean(0), alpha * np.asarray(z0), atol=5 * sigma.max()
                                   / np.sqrt(n))
        np.testing.assert_allclose(zt.var(0), sigma**2, rtol=5 * np.sqrt(2 / n), atol=1e-7)


def test_alpha_sigma_beta_from_gamma():
    gamma = jnp.linspace(-25.0, 25.0, 101)
    dgamma = jnp.linspace(0.5, 3.0, 101)
    st = process.state_from_gamma(gamma, dgamma)
    np.testing.assert_allclose(st.alpha**2 + st.sigma**2, 1.0, atol=1e-6)
    # γ = log(σ²/α²)
    inner = np.abs(np.asarray(gamma)) < 12
    np.testing.assert_allclose(np.log(st.sigma**2 / st.alpha**2)[inner], gamma[inner],
                               atol=1e-3)
    np.testing.assert_allclose(st.beta, jax.nn.sigmoid(gamma) * dgamma, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(st.alpha))) and np.all(np.asarray(st.sigma) > 0)
    # any γ(t) function: β from jvp, equal to the 'function' schedule kind
    fn = lambda t: -8.0 + 11.0 * t**2 + jnp.arange(D) * 0.1 * t
    st_fn = process.gamma_fn_state(fn, 0.3)
    st_sched = process.noise_state(make_schedule("function", dim=D, fn=fn), 0.3)
    for a, b in zip(st_fn, st_sched, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(st_fn.beta, jax.nn.sigmoid(fn(0.3)) * (22.0 * 0.3 +
                               jnp.arange(D) * 0.1), rtol=1e-5)


def test_eps_score_conversion_is_an_inverse_pair():
    rng = np.random.default_rng(1)
    eps = jnp.asarray(rng.normal(size=(4, D)), jnp.float32)
    sigma = jnp.asarray(rng.uniform(0.01, 1.0, size=D), jnp.float32)
    score = process.eps_to_score(eps, sigma)
    np.testing.assert_allclose(score, -eps / sigma, rtol=1e-6)
    back = -score * sigma  # ε from the score
    np.testing.assert_allclose(back, eps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(process.eps_to_score(back, sigma), score, rtol=1e-5)
    # Gaussian check: for z_t ~ N(0, 1) (z0 ~ N(0, I)) the score −z equals −E[ε|z]/σ, E[ε|z] = σz
    z = eps
    np.testing.assert_allclose(process.eps_to_score(sigma * z, sigma), -z, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 7, 256])
def test_stratified_times_one_per_stratum(n):
    times = jax.jit(process.stratified_times, static_argnums=1)  # jit-able with a fixed n
    for seed in range(8):
        t = np.asarray(times(jax.random.key(seed), n))
        assert t.shape == (n,) and t.dtype == np.float32
        assert np.all((t >= 0.0) & (t < 1.0))
        np.testing.assert_array_equal(np.sort(np.floor(t * n).astype(int)), np.arange(n))


def test_sample_family_params_ranges():
    p = process.sample_family_params(jax.random.key(0), {"a": (0.4, 1.6), "b": (0.1, 0.2)}, 500)
    assert set(p) == {"a", "b"} and p["a"].shape == (500,)
    assert 0.4 <= float(p["a"].min()) and float(p["a"].max()) <= 1.6
    assert 0.1 <= float(p["b"].min()) and float(p["b"].max()) <= 0.2
    assert float(np.std(p["a"])) > 0.2  # spread over the range, not a constant
    assert not np.allclose(p["a"], (p["b"] - 0.1) * 12 + 0.4)  # independent keys


def test_eps_loss_weightings():
    sched = soft_schedule(clip=True)
    rng = np.random.default_rng(2)
    b = 8
    ts = jnp.asarray(rng.uniform(0, 1, b), jnp.float32)
    st = batch_noise_state(sched, ts)
    eps = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
    eps_hat = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
    sq = np.asarray((eps_hat - eps) ** 2, np.float64)
    # unweighted: plain MSE per example (and the default)
    np.testing.assert_allclose(process.eps_loss(eps_hat, eps, st), sq.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(process.eps_loss(eps_hat, eps, st, weighting="unweighted"),
                               sq.mean(-1), rtol=1e-6)
    # elbo: ½ dγ/dt-weighted MSE, dγ/dt computed here independently by jax.jvp of γ
    dgamma_fn = jax.jit(jax.vmap(lambda t: jax.jvp(sched.gamma, (t,), (jnp.ones_like(t),))[1]))
    dgamma = np.asarray(dgamma_fn(ts))
    want = (0.5 * dgamma * sq).mean(-1)
    got = process.eps_loss(eps_hat, eps, st, weighting="elbo")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert np.any(dgamma == 0)  # clipped: some components are outside their window
    with pytest.raises(ValueError) as e:
        process.eps_loss(eps_hat, eps, st, weighting="vlb")
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in process.WEIGHTINGS)


@jax.jit
def gaussian_losses(sched, z0, rng, params):
    """diffusion_loss with the optimal predictor E[ε|z_t] = σ z_t (z0 ~ N(0, I)) and ε̂ = 0."""
    optimal = lambda z, st, t: st.sigma * z
    zero = lambda z, st, t: jnp.zeros_like(z)
    loss_opt, aux = process.diffusion_loss(optimal, sched, z0, rng, params=params)
    loss_zero, aux0 = process.diffusion_loss(zero, sched, z0, rng, params=params)
    loss_elbo, _ = process.diffusion_loss(optimal, sched, z0, rng, params=params,
                                          weighting="elbo")
    st = process.batch_noise_state(sched, aux["t"], params)
    alpha2 = jnp.mean(st.alpha**2, axis=-1)
    return loss_opt, loss_zero, loss_elbo, alpha2, aux["t"], aux0["t"]


@pytest.mark.parametrize("kind", ["scalar_linear", "soft"])
def test_diffusion_loss_on_gaussian_data(kind):
    """z0 ~ N(0, I) ⇒ z_t ~ N(0, I) and E[ε|z_t] = σ z_t; its expected loss is α² per component
    (1 − σ²), while ε̂ = 0 costs 1. Per example the loss must be ≈ mean_i α_i(t)²."""
    b, d = 256, 512
    if kind == "scalar_linear":
        sched, params = make_schedule("scalar_linear", dim=d), None
    else:
        sched = make_schedule("soft", dim=d, labels=np.linspace(0, 3, d), a=1.0)
        params = {"a": jnp.linspace(0.0, 2.0, b)}  # per-example family parameters
    z0 = jax.random.normal(jax.random.key(0), (b, d))
    out = gaussian_losses(sched, z0, jax.random.key(1), params)
    loss_opt, loss_zero, loss_elbo, alpha2, t, t0 = (np.asarray(v, np.float64) for v in out)
    np.testing.assert_array_equal(t, t0)  # same rng → same t and ε
    np.testing.assert_array_equal(np.sort(np.floor(t * b)), np.arange(b))  # stratified
    assert loss_opt.shape == (b,)
    # per example: loss = mean_i α_i² χ²₁ ⇒ standard deviation ≈ α² √(2/d); allow 5 of them
    assert np.all(np.abs(loss_opt - alpha2) <= 0.01 + 5 * np.sqrt(2 / d) * alpha2)
    np.testing.assert_allclose(loss_zero, 1.0, atol=5 * np.sqrt(2 / d))
    assert loss_opt.mean() < loss_zero.mean()
    assert np.all(loss_opt <= loss_zero + 0.05)
    np.testing.assert_allclose(loss_opt.mean(), alpha2.mean(), rtol=0.03)
    # the ELBO weighting runs too and is finite and non-negative
    assert np.all(np.isfinite(loss_elbo)) and np.all(loss_elbo >= 0)
    with pytest.raises(ValueError):
        process.diffusion_loss(lambda z, st, t: z, sched, z0, jax.random.key(1),
                               weighting="bogus")


@jax.jit
def given_noise_losses(sched, z0, t, eps, q, params):
    """loss_given_noise in component space and through an orthonormal map q (as basis.to_image
    in training), for the optimal predictor E[ε|z_t] = σ z_t and for ε̂ = 0."""
    optimal = lambda z, st, t: st.sigma * z
    to_out = lambda v: v @ q.T
    loss = functools.partial(process.loss_given_noise, params=params)
    return (
        loss(optimal, sched, z0, t, eps),
        loss(lambda z, st, t: to_out(st.sigma * z), sched, z0, t, eps, to_output=to_out),
        loss(lambda z, st, t: jnp.zeros_like(z), sched, z0, t, eps, to_output=to_out),
        loss(optimal, sched, z0, t, eps, weighting="elbo"),
    )


def test_loss_given_noise_closed_form_and_output_space():
    """With ε and t given, the loss is a closed form: z_t = α z0 + σ ε and ε̂ = σ z_t give
    ε̂ − ε = σα z0 − α² ε per component; the unweighted loss is its mean square, the ELBO
    loss weights it by ½ dγ/dt. Through an orthonormal map the unweighted loss is the same;
    ε̂ = 0 in the mapped space costs mean ε² (the map keeps norms)."""
    b = 6
    rng = np.random.default_rng(3)
    sched = soft_schedule()
    params = {"a": jnp.linspace(0.2, 1.8, b)}
    z0 = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
    eps = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
    t = jnp.asarray(rng.uniform(0.05, 0.95, b), jnp.float32)
    q = jnp.asarray(np.linalg.qr(rng.normal(size=(D, D)))[0], jnp.float32)
    got, mapped, zero, elbo = (np.asarray(v, np.float64)
                               for v in given_noise_losses(sched, z0, t, eps, q, params))
    st = batch_noise_state(sched, t, params)
    a, s = np.asarray(st.alpha, np.float64), np.asarray(st.sigma, np.float64)
    diff = s * a * np.asarray(z0) - a**2 * np.asarray(eps)
    np.testing.assert_allclose(got, (diff**2).mean(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mapped, got, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(zero, (np.asarray(eps, np.float64) ** 2).mean(-1), rtol=1e-5)
    dgamma = np.asarray(st.beta, np.float64) / s**2
    np.testing.assert_allclose(elbo, (0.5 * dgamma * diff**2).mean(-1), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="component space"):
        process.loss_given_noise(lambda z, st, t: z, sched, z0, t, eps, params=params,
                                 weighting="elbo", to_output=lambda v: v)
    # diffusion_loss is this loss with its own draws of t and ε
    rng_t, rng_eps = jax.random.split(jax.random.key(4))
    t2 = process.stratified_times(rng_t, b)
    eps2 = jax.random.normal(rng_eps, z0.shape, z0.dtype)
    optimal = lambda z, st, t: st.sigma * z
    drawn, aux = process.diffusion_loss(optimal, sched, z0, jax.random.key(4), params=params)
    np.testing.assert_array_equal(aux["t"], t2)
    np.testing.assert_allclose(
        drawn, process.loss_given_noise(optimal, sched, z0, t2, eps2, params=params), rtol=1e-6
    )


def test_batch_noise_state_matches_per_example_state():
    sched = make_schedule("haar_column", dim=D, level=np.repeat(np.arange(4.0), 4),
                          colpos=np.tile(np.linspace(0, 1, 4), 4))
    ts = jnp.linspace(0.1, 0.9, 5)
    params = {"a": jnp.linspace(0.0, 2.0, 5), "b": jnp.linspace(0.1, 0.7, 5)}
    st = batch_noise_state(sched, ts, params)
    for i in range(5):
        one = noise_state(sched, ts[i], {k: v[i] for k, v in params.items()})
        for a, b in zip(st, one, strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)
    no_params = batch_noise_state(sched, ts)
    assert no_params.gamma.shape == (5, D)
    assert schedules.family_params("haar_column") == ("a", "b")
