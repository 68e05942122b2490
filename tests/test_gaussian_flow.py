"""The sampler whose linear part is the Gaussian flow of the full data covariance
(gudjax.gaussian_flow): exact for Gaussian data at few steps, stable where the diagonal frame
diverges, frozen components untouched, conditional generation, one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench_samplers as bs
from experiments import oracle_check as oc
from gudjax import gaussian_flow, sampling, solvers


def _setup(name):
    basis, schedule, oracle, cov = bs.oracle_setup(name)
    z_only = oracle.z_only()
    return basis, schedule, z_only, cov, oracle.sigma_points(schedule.gamma(1.0))


def _cov_err(basis, z, cov):
    x = np.asarray(basis.decode(z), np.float64).reshape(z.shape[0], -1)
    return oc.cov_rel_error(x, cov, population=True)


@pytest.mark.parametrize("order", [1, 2])
def test_exact_at_five_steps_with_the_data_covariance(order):
    """With the oracle's own (m, K) the residual is zero: the near-sequential column schedule,
    where Heun is off by 0.95 at 4 calls and the diagonal frame diverges, comes out within the
    Runge–Kutta and float32 error in 5 network calls."""
    basis, schedule, z_only, cov, points = _setup("near_sequential")
    gamma_fn = schedule.gamma
    ts = solvers.make_time_grid(gamma_fn, 5, "uniform")
    flow = gaussian_flow.gaussian_flow(gamma_fn, ts, np.asarray(z_only.K), np.asarray(z_only.m))
    z = jax.jit(lambda z: gaussian_flow.sample(z_only.score_fn(gamma_fn), gamma_fn, z, flow,
                                               order=order))(points)
    assert _cov_err(basis, z, cov) < 0.005


def test_estimated_moments_beat_heun_and_plain_dpmpp_on_the_column_schedule():
    """With (m, K) from the 4000 samples the bases are fitted to (a residual that is not zero),
    10 calls are far more accurate than Heun and the plain DPM-Solver++(2M) at 10."""
    basis, schedule, z_only, cov, points = _setup("near_sequential")
    gamma_fn = schedule.gamma
    mean, K = bs.fit_moments("near_sequential")
    ts = solvers.make_time_grid(gamma_fn, 10, "uniform")
    flow = gaussian_flow.gaussian_flow(gamma_fn, ts, K, mean)
    score = z_only.score_fn(gamma_fn)
    err = _cov_err(basis, jax.jit(lambda z: gaussian_flow.sample(score, gamma_fn, z, flow))(
        points), cov)
    plain = _cov_err(basis, jax.jit(lambda z: solvers.run(
        "dpmpp_2m", jax.random.key(0), score, gamma_fn, z, 10))(points), cov)
    heun = _cov_err(basis, jax.jit(lambda z: solvers.run(
        "ode", jax.random.key(0), score, gamma_fn, z, 5))(points), cov)
    assert err < 0.05 and err < plain / 10 and err < heun / 10


def test_frozen_components_bit_for_bit_and_known_kept():
    d = 6
    frozen = jnp.arange(d) < 3

    def gamma_fn(t):
        return jnp.where(frozen, -2.0, -7.0 + 12.0 * t) * jnp.ones(d)

    rng = np.random.default_rng(0)
    a = rng.normal(size=(d, d))
    K = a @ a.T / d + 0.1 * np.eye(d)
    ts = solvers.make_time_grid(gamma_fn, 4, "uniform")
    flow = gaussian_flow.gaussian_flow(gamma_fn, ts, K, substeps=16)
    z1 = jax.random.normal(jax.random.key(0), (4, d)) * 3.0
    score = lambda z, t: -z / (1.0 + t) + 0.3 * jnp.roll(z, 1, axis=-1)  # noqa: E731
    out = jax.jit(lambda z: gaussian_flow.sample(score, gamma_fn, z, flow))(z1)
    assert np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_array_equal(np.asarray(out)[:, :3], np.asarray(z1)[:, :3])
    assert not np.allclose(np.asarray(out)[:, 3:], np.asarray(z1)[:, 3:])
    # conditional generation by replacement: the known components come back exactly
    mask = jnp.arange(d) % 2 == 0
    z0 = jnp.full((4, d), 0.7)
    out = gaussian_flow.sample(score, gamma_fn, z1, flow, rng=jax.random.key(2),
                               known=sampling.Known(mask=mask, z0=z0))
    np.testing.assert_array_equal(np.asarray(out)[:, ::2], np.float32(0.7))


def test_bad_inputs_are_one_line_errors():
    gamma_fn = lambda t: jnp.full((3,), -5.0 + 10.0 * t)  # noqa: E731
    ts = solvers.make_time_grid(gamma_fn, 2, "uniform")
    for bad, match in (
        (np.ones((3, 2)), "cov must be"),
        (np.diag([1.0, -1.0, 1.0]), "not positive semi-definite"),
        (np.full((3, 3), np.nan), "non-finite"),
    ):
        with pytest.raises(ValueError, match=match) as e:
            gaussian_flow.gaussian_flow(gamma_fn, ts, bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="decreasing grid"):
        gaussian_flow.gaussian_flow(gamma_fn, ts[::-1], np.eye(3))
    flow = gaussian_flow.gaussian_flow(gamma_fn, ts, np.eye(3), substeps=4)
    with pytest.raises(ValueError, match="flow is for D = 3"):
        gaussian_flow.sample(lambda z, t: -z, gamma_fn, jnp.zeros((2, 4)), flow)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        gaussian_flow.sample(lambda z, t: -z, gamma_fn, jnp.zeros((2, 3)), flow, order=3)
    assert bs.parse_sampler("dpmpp_2m_cov") == ("dpmpp_2m_cov", "auto")
    with pytest.raises(ValueError, match="unknown --samplers entry 'dpmpp_3m_cov'"):
        bs.parse_sampler("dpmpp_3m_cov")


def test_generate_runs_the_full_covariance_sampler_over_all_devices(monkeypatch):
    """`generation.generate` with solver 'dpmpp_2m_cov' on 8 devices gives the images of
    `gaussian_flow.sample` from the same z_1 on one; without moments, a one-line error; the
    step maps are built once for repeated calls."""
    from gudjax import generation, runtime
    from gudjax.score_model import oracle_model

    built = []
    grid_flow = gaussian_flow.grid_flow
    monkeypatch.setattr(generation, "_FLOWS", {})
    monkeypatch.setattr(gaussian_flow, "grid_flow",
                        lambda *a, **k: built.append(a[1]) or grid_flow(*a, **k))

    basis, schedule, oracle, _ = bs.oracle_setup("near_sequential")
    mean, K = np.asarray(oracle.z_only().m), np.asarray(oracle.z_only().K)
    model = oracle_model(oracle, basis, schedule)
    rng, num, steps = jax.random.PRNGKey(3), 16, 4
    with pytest.raises(ValueError, match=r"needs the data's mean and covariance.*with_moments"):
        generation.generate(model, num, rng=rng, solver="dpmpp_2m_cov", steps=steps)
    model = model.with_moments(mean, K)
    assert runtime.num_devices(runtime.batch_mesh()) == 8
    images = generation.generate(model, num, rng=rng, solver="dpmpp_2m_cov", steps=steps)
    k1, _ = jax.random.split(jax.random.fold_in(rng, 0))
    z1 = jax.random.normal(k1, (num, basis.dim), jnp.float32)
    flow = gaussian_flow.grid_flow(model.gamma_fn(), steps, "auto", mean, K)
    z = gaussian_flow.sample(model.score_fn(), model.gamma_fn(), z1, flow, order=2)
    want = np.clip(np.asarray(basis.decode(z)), -1.0, 1.0)
    np.testing.assert_allclose(images, want, atol=2e-5)
    again = generation.generate(model, num, rng=rng, solver="dpmpp_2m_cov", steps=steps)
    np.testing.assert_array_equal(again, images)
    generation.generate(model, 8, rng=rng, solver="ddim_cov", steps=3)
    assert built == [steps, steps, 3]  # generate once, the reference above once, then 3
    assert generation.nfe("dpmpp_2m_cov", steps) == steps
    assert generation.default_time_grid("ddim_cov") == "auto"


def test_moments_are_stored_in_the_workdir_and_large_bases_refused(tmp_path, monkeypatch,
                                                                   caplog):
    """`experiment.sampling_model`: moments once per workdir (a damaged file is recomputed),
    the model unchanged for the other samplers, D above MAX_DIM refused before any data pass."""
    from types import SimpleNamespace

    from gudjax import experiment

    calls = []
    monkeypatch.setattr(experiment, "component_moments",
                        lambda data, basis: calls.append(1) or (np.ones(3), 2 * np.eye(3)))
    basis, config = SimpleNamespace(dim=3), SimpleNamespace(data=None)
    model = SimpleNamespace(basis=basis, with_moments=lambda m, c: (m, c))
    assert experiment.sampling_model(model, config, str(tmp_path), "dpmpp_2m_g") is model
    mean, cov = experiment.sampling_model(model, config, str(tmp_path), "ddim_cov")
    assert calls == [1] and np.array_equal(mean, np.ones(3)) and np.array_equal(cov, 2 * np.eye(3))
    experiment.sampling_model(model, config, str(tmp_path), "dpmpp_2m_cov")
    assert calls == [1]  # read back from data_moments.npz
    (tmp_path / experiment.MOMENTS_FILE).write_bytes(b"not an npz")
    experiment.sampling_model(model, config, str(tmp_path), "dpmpp_2m_cov")
    assert calls == [1, 1] and "recomputing" in caplog.text
    big = SimpleNamespace(basis=SimpleNamespace(dim=gaussian_flow.MAX_DIM + 1))
    with pytest.raises(ValueError, match=r"allows D <= .*use dpmpp_2m_g") as e:
        experiment.sampling_model(big, config, str(tmp_path), "dpmpp_2m_cov")
    assert "\n" not in str(e.value) and calls == [1, 1]


def test_singular_data_covariance_is_accepted():
    """A component that never varies (a digit's border pixel) and a repeated component make
    the sample covariance singular, with round-off eigenvalues just below 0: accepted, and
    the step maps are finite."""
    x = np.random.default_rng(0).normal(size=(500, 4))
    x = np.concatenate([x, x[:, :1], np.zeros((500, 1))], axis=1)  # D = 6, rank 4
    K = np.cov(x, rowvar=False) - 1e-12 * np.eye(6)  # round-off: smallest eigenvalue < 0
    assert np.linalg.eigvalsh(K)[0] < 0
    gamma_fn = lambda t: (-6.0 + 12.0 * t) * jnp.ones(6)
    flow = gaussian_flow.grid_flow(gamma_fn, 3, "uniform", x.mean(0), K)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in flow)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        gaussian_flow.grid_flow(gamma_fn, 3, "uniform", x.mean(0), K - 0.01 * np.eye(6))
