"""Native quantisation, the baselines, the variational bound and its terms, matched end
points: closed forms and the Gaussian oracle (docs/maths.md §7, §10)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from gudjax import baselines, bases, bound, input_pipeline, likelihood, nll, schedules
from gudjax.oracle import GaussianOracle, random_gaussian
from gudjax.score_model import oracle_model


def test_digit_levels_round_trip():
    v = np.arange(17)
    k = np.rint(v * 255.0 / 16.0).astype(np.uint8)  # how the digits are stored
    np.testing.assert_array_equal(input_pipeline.to_levels(k, 17), v)
    x = input_pipeline.to_model_input(k, levels=17)
    np.testing.assert_allclose(x, 2 * (v + 0.5) / 17 - 1, atol=1e-6)
    np.testing.assert_array_equal(input_pipeline.to_uint8(x, 17), k)
    xu = input_pipeline.to_model_input(
        k, levels=17, dequantize="uniform", rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(input_pipeline.to_uint8(xu, 17), k)
    with pytest.raises(ValueError, match="levels=1 must be an integer in"):
        input_pipeline.to_model_input(k, levels=1)


def test_bits_per_dim_offset_is_log2_half_levels():
    logp = np.array([-3.0, 1.0])
    for levels in (17, 256):
        np.testing.assert_allclose(
            likelihood.bits_per_dim(logp, 0.0, 4, levels=levels),
            -logp / (4 * math.log(2)) + math.log2(levels / 2),
            rtol=1e-12,
        )


def _stored(levels, n=400, shape=(3, 3, 1), seed=0):
    g = np.random.default_rng(seed)
    lv = np.clip(np.rint(g.normal(levels / 2, levels / 5, size=(n, *shape))), 0, levels - 1)
    return np.rint(lv * 255.0 / (levels - 1)).astype(np.uint8)


@pytest.mark.parametrize("levels", [17, 256])
def test_gaussian_baseline_closed_form_equals_pf_ode(levels):
    """The Gaussian baseline at L levels through the PF-ODE with the oracle's exact score
    and exact p_1 equals its closed form (p_0, and p_data up to the σ(0) noise)."""
    u8 = _stored(levels)
    fit = baselines.fit_gaussian([u8[:300]], levels=levels)
    assert fit.floor == pytest.approx((2 / levels) ** 2 / 12)
    x = nll.dequantize_uniform(u8[300:306], seed=1, levels=levels)
    basis = bases.fit_basis("pixel", [input_pipeline.to_model_input(u8[:300], levels=levels)])
    schedule = schedules.make_schedule("soft", basis, labels="column", a=1.0)
    orc = baselines.gaussian_oracle(fit, basis)
    ode = nll.nll_bpd(
        oracle_model(orc, basis, schedule, {"a": 1.0}), x, divergence="exact", levels=levels
    )
    lp0 = orc.logp_x0(x, lambda t: schedule.gamma(t, {"a": jnp.float32(1.0)}))
    p0 = likelihood.bits_per_dim(lp0, 0.0, 9, levels=levels)
    np.testing.assert_allclose(ode["bpd"], p0, atol=3e-4)
    np.testing.assert_allclose(ode["bpd"], fit.bpd(x), atol=3e-2)  # + the σ(0) noise


def test_categorical_baseline_by_hand():
    u8 = _stored(17, n=50, shape=(1, 2, 1))
    fit = baselines.fit_categorical([u8[:20], u8[20:40]], levels=17)
    lv = input_pipeline.to_levels(u8, 17).reshape(50, 2).astype(int)
    by_hand = []
    for img in lv[40:]:
        bits = 0.0
        for j in range(2):
            count = np.sum(lv[:40, j] == img[j])
            bits -= math.log2((count + 0.5) / (40 + 17 / 2))
        by_hand.append(bits / 2)
    np.testing.assert_allclose(fit.bpd(u8[40:]), by_hand, rtol=1e-10)
    np.testing.assert_allclose(np.exp(fit.log_probs).sum(-1), 1.0, rtol=1e-12)


def _oracle_setup():
    shape = (4, 4, 1)
    mu, C = random_gaussian(0, shape)
    g = np.random.default_rng(1)
    X = g.multivariate_normal(mu, C, size=256).reshape(256, *shape).astype(np.float32)
    basis = bases.fit_basis("haar", [X], whiten=True, levels=2)
    return X, basis, GaussianOracle.from_data(basis, mu, C)


def test_bound_with_exact_score_is_nll_plus_the_stated_gaps():
    """MC bound − PF-ODE NLL (exact p_1 prior = −log q_0) = decoder gap + prior gap, and the
    quadrature of the diffusion integrand equals its end-point closed form."""
    X, basis, orc = _oracle_setup()
    sched = schedules.make_schedule("soft", basis, labels="level", a=1.0)
    model = oracle_model(orc, basis, sched, {"a": 1.0})
    x = np.repeat(X[:4], 32, axis=0)
    out = bound.bound_terms(model, x, num_t=64, batch_size=128)
    ode = nll.nll_bpd(model, x[::32], divergence="exact")
    gf = model.gamma_fn()
    g0, g1 = gf(jnp.float32(0.0)), gf(jnp.float32(1.0))
    z = np.asarray(basis.encode(jnp.asarray(X[:4])), np.float64)
    gaps = bound.oracle_gaps(orc, g0, g1, z)
    expect = (gaps["decoder"] + gaps["prior"]) / (16 * math.log(2))
    got = out["bpd"].reshape(4, 32)
    diff = got.mean(1) - ode["bpd"]
    se = got.std(1, ddof=1) / math.sqrt(32)
    assert np.all(np.abs(diff - expect) < 4 * se + 1e-3), (diff, expect, se)
    terms = out["terms"]
    np.testing.assert_allclose(sum(terms.values()), out["bpd"], rtol=1e-12)
    quad = bound.oracle_diffusion_quadrature(orc, gf, z, kinks=model.jump_ts())
    np.testing.assert_allclose(quad, bound.oracle_diffusion_endpoints(orc, g0, g1, z), rtol=1e-5)


def test_matched_endpoints_make_the_oracle_bound_path_invariant():
    X, basis, orc = _oracle_setup()
    z = np.asarray(basis.encode(jnp.asarray(X[:16])), np.float64)

    def spread(sched_list):
        vals = []
        for sched, fam in sched_list:
            f = {k: jnp.float32(v) for k, v in fam.items()} or None
            gf = lambda t, s=sched, f=f: s.gamma(t, f)  # noqa: E731
            vals.append(bound.oracle_bound_bpd(orc, gf, z, kinks=sched.kinks(f)).mean())
        return max(vals) - min(vals)

    clip = schedules.make_schedule("soft", basis, labels="level", a=1.0, clip=True)
    other = schedules.make_schedule("soft", basis, labels="variance", a=1.0, clip=True)
    soft = schedules.make_schedule("soft", basis, labels="level", a=1.0, clip=False)
    grid = [0.0, 0.5, 1.0, 2.0]
    matched = [(clip, {"a": a}) for a in grid] + [(other, {"a": 1.5})]
    assert spread(matched) < 1e-3
    assert spread([(soft, {"a": a}) for a in grid]) > 1e-3


def test_validation_split_is_carved_from_train(tmp_path):
    cfg = input_pipeline.default_data_config()
    cfg.name, cfg.image_size, cfg.data_dir = "digits", 8, str(tmp_path)
    full = len(input_pipeline.load_split(cfg, "train"))
    cfg.validation_every = 10
    train = input_pipeline.load_split(cfg, "train")
    val = input_pipeline.load_split(cfg, "validation")
    assert len(train) + len(val) == full and len(val) == full // 10
    a = train.read(range(len(train))).reshape(len(train), -1)
    b = val.read(range(len(val))).reshape(len(val), -1)
    assert input_pipeline.levels(cfg) == 17
    assert a.shape[1] == b.shape[1] == 64
    cfg.validation_every = 1
    with pytest.raises(ValueError, match="validation_every=1 must be an integer >= 2"):
        input_pipeline.load_split(cfg, "validation")
