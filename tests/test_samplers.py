"""Few-step samplers (gudjax.solvers): frozen components, time grids, oracle accuracy,
conditional generation and selection through generation.generate."""

import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gudjax import generation, sampling, schedules, solvers
from gudjax.oracle import GaussianOracle, random_gaussian

PLAIN = ("ddim", "ddim_sde", "dpmpp_2m", "heun")


def _run(solver, score_fn, gamma_fn, z1, steps, **kw):
    kw.setdefault("data_var", jnp.ones(z1.shape[-1]))
    return solvers.run(solver, jax.random.key(1), score_fn, gamma_fn, z1, steps, **kw)


def _std_score(z, t):
    return -z


@pytest.mark.parametrize("solver", list(solvers.SAMPLERS))
def test_frozen_components_bit_for_bit(solver):
    """Components whose γ does not change over the steps come out exactly unchanged."""
    d = 6
    frozen = jnp.arange(d) < 3

    def gamma_fn(t):
        moving = -7.0 + 12.0 * t
        return jnp.where(frozen, -2.0, moving) * jnp.ones(d)

    z1 = jax.random.normal(jax.random.key(0), (4, d)) * 3.0
    score = lambda z, t: -z / (1.0 + t) + 0.3 * jnp.roll(z, 1, axis=-1)
    out = jax.jit(lambda z: _run(solver, score, gamma_fn, z, 5))(z1)
    assert np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_array_equal(np.asarray(out[:, :3]), np.asarray(z1[:, :3]))
    assert not np.allclose(np.asarray(out[:, 3:]), np.asarray(z1[:, 3:]))


@pytest.mark.parametrize("kind", solvers.TIME_GRIDS)
def test_time_grids(kind):
    sch = schedules.make_schedule("column", None, dim=16, labels=np.linspace(0, 1, 16), b=0.8)
    ts = np.asarray(solvers.make_time_grid(lambda t: sch.gamma(t), 10, kind))
    assert ts.shape == (11,) and ts[0] == 1.0 and ts[-1] == 0.0
    assert np.all(np.diff(ts) < 0)
    with pytest.raises(ValueError, match="time_grid"):
        solvers.make_time_grid(lambda t: sch.gamma(t), 10, "nope")


def test_auto_grid_is_lambda_up_to_eight_steps_then_uniform():
    sch = schedules.make_schedule("column", None, dim=16, labels=np.linspace(0, 1, 16), b=0.8)
    gamma_fn = lambda t: sch.gamma(t)
    grid = lambda n, kind: np.asarray(solvers.make_time_grid(gamma_fn, n, kind))
    n = solvers.AUTO_LAMBDA_MAX_STEPS
    np.testing.assert_array_equal(grid(n, "auto"), grid(n, "lambda"))
    np.testing.assert_array_equal(grid(n + 1, "auto"), grid(n + 1, "uniform"))
    assert not np.allclose(grid(n, "lambda"), grid(n, "uniform"))


def test_arc_grid_puts_no_steps_where_nothing_moves():
    """γ constant on [0.5, 1]: the arc-length grid spends every step below t = 0.5."""
    gamma_fn = lambda t: jnp.minimum(t, 0.5) * jnp.linspace(1.0, 4.0, 5)
    ts = np.asarray(solvers.make_time_grid(gamma_fn, 8, "arc"))
    assert np.all(ts[1:] <= 0.5 + 1e-3)


@pytest.fixture(scope="module")
def oracle_setup():
    from gudjax import bases

    shape = (4, 4, 1)
    mu, cov = random_gaussian(0, shape)
    x = np.random.default_rng(0).multivariate_normal(mu, cov, 2000).reshape(-1, *shape)
    basis = bases.fit_basis("pca", [x.astype(np.float32)], whiten=True)
    sch = schedules.make_schedule("soft", basis, labels="variance", a=1.0)
    oracle = GaussianOracle.from_data(basis, mu, cov)
    return basis, sch, oracle, cov


def _oracle_err(oracle_setup, solver, steps):
    """Sigma points through a deterministic sampler: exact output covariance (no Monte Carlo)."""
    basis, sch, oracle, cov = oracle_setup
    gamma_fn = lambda t: sch.gamma(t)
    score_fn = oracle.z_only().score_fn(gamma_fn)
    z1 = oracle.sigma_points(gamma_fn(1.0))
    z = _run(solver, score_fn, gamma_fn, z1, steps, data_var=jnp.exp(sch.rho))
    x = np.asarray(basis.decode(z), np.float64).reshape(z.shape[0], -1)
    return np.linalg.norm(np.cov(x, rowvar=False, bias=True) - cov) / np.linalg.norm(cov)


@pytest.mark.parametrize("solver,steps,tol", [("dpmpp_2m_g", 10, 0.005), ("heun_g", 5, 0.01)])
def test_oracle_covariance_few_steps(oracle_setup, solver, steps, tol):
    err = _oracle_err(oracle_setup, solver, steps)
    assert err < tol, err


@pytest.mark.parametrize("solver,order", [("ddim", 1), ("dpmpp_2m", 2), ("heun", 2)])
def test_plain_samplers_converge(oracle_setup, solver, order):
    """Plain frames on whitened data: the error falls with the steps at their order."""
    e1, e2 = _oracle_err(oracle_setup, solver, 8), _oracle_err(oracle_setup, solver, 32)
    assert e2 < e1 / (2.0 if order == 1 else 3.0), (e1, e2)


@pytest.mark.parametrize("solver", PLAIN)
def test_known_components_are_returned_exactly(solver):
    d = 5
    gamma_fn = lambda t: (-7.0 + 12.0 * t) * jnp.ones(d)
    z1 = jax.random.normal(jax.random.key(0), (3, d))
    mask = jnp.arange(d) < 2
    z0 = jnp.full((3, d), 0.7)
    out = _run(solver, _std_score, gamma_fn, z1, 4, known=sampling.Known(mask, z0))
    np.testing.assert_array_equal(np.asarray(out[:, :2]), np.float32(0.7))


def test_generate_selects_new_solvers(oracle_setup):
    from gudjax.score_model import oracle_model

    basis, sch, oracle, _ = oracle_setup
    model = oracle_model(oracle, basis, sch)
    for solver in ("dpmpp_2m", "heun_g", "ddim_sde"):
        x = generation.generate(model, 4, rng=jax.random.key(0), solver=solver, steps=3,
                                batch_size=4, time_grid="arc")
        assert x.shape == (4, 4, 4, 1) and np.all(np.isfinite(x))
    with pytest.raises(ValueError, match="config.sample.solver"):
        generation.check_solver("rk9")
    with pytest.raises(ValueError, match="time_grid"):
        generation.generate(model, 4, rng=jax.random.key(0), solver="ddim", time_grid="x")


def test_bench_samplers_tiny(tmp_path):
    import json

    from experiments import bench_samplers

    path = tmp_path / "b.json"
    bench_samplers.main(["--json", str(path), "--nfes", "4", "--samplers", "sde,dpmpp_2m_g",
                         "--schedules", "standard", "--n-mc", "400"])
    rows = json.loads(path.read_text())["rows"]
    assert {r["sampler"] for r in rows} == {"sde", "dpmpp_2m_g"}
    for r in rows:
        assert {"sampler", "nfe", "schedule", "oracle_cov_err", "floor"} <= set(r)
        assert r["nfe"] <= 4
    det = next(r for r in rows if r["sampler"] == "dpmpp_2m_g")
    assert det["floor"] == 0.0 and det["oracle_cov_err"] < 0.05


def test_bench_samplers_time_grid_per_sampler(tmp_path):
    """'name@grid' entries pick the time grid per sampler; the row records it."""
    import json

    from experiments import bench_samplers

    assert bench_samplers.parse_sampler("dpmpp_2m_g@arc") == ("dpmpp_2m_g", "arc")
    assert bench_samplers.parse_sampler("heun", "lambda") == ("heun", "lambda")
    assert bench_samplers.parse_sampler("heun") == ("heun", solvers.default_time_grid("heun"))
    with pytest.raises(ValueError, match="--samplers"):
        bench_samplers.parse_sampler("rk9@arc")
    with pytest.raises(ValueError, match="time grid"):
        bench_samplers.parse_sampler("ddim@nope")
    path = tmp_path / "b.json"
    bench_samplers.main(["--json", str(path), "--nfes", "3", "--samplers",
                         "ddim_g@arc,ddim_g", "--schedules", "standard", "--time-grid", "lambda"])
    rows = json.loads(path.read_text())["rows"]
    assert [(r["sampler"], r["time_grid"]) for r in rows] == [("ddim_g", "arc"),
                                                              ("ddim_g", "lambda")]


def test_fd_summary_and_plot(tmp_path):
    """The fewest NFE within 5% of Euler–Maruyama@200's FD, per sampler (and grid)."""
    from experiments import bench_samplers as bs

    rows = [dict(sampler="sde", time_grid="uniform", nfe=n, fd=f)
            for n, f in ((10, 50.0), (100, 21.0), (200, 20.0))]
    rows += [dict(sampler="dpmpp_2m_g", time_grid="uniform", nfe=n, fd=f)
             for n, f in ((5, 30.0), (10, 20.9), (20, 19.0))]
    rows += [dict(sampler="dpmpp_2m_g", time_grid="arc", nfe=5, fd=40.0)]
    s = bs.fd_summary(rows)
    assert s["reference"]["fd"] == 20.0 and s["bar"] == pytest.approx(21.0)
    assert s["nfe_within"] == {"sde": 100, "dpmpp_2m_g": 10, "dpmpp_2m_g@arc": None}
    assert bs.fd_summary(rows[3:]) == {}  # no reference, no summary
    bs.plot_fd(rows, str(tmp_path / "fd.png"), s)
    assert (tmp_path / "fd.png").stat().st_size > 0


def test_fd_rows_resume_from_saved_samples(tmp_path, monkeypatch):
    """A point whose samples are on disk is not sampled again; its FD is recomputed from
    the file (same value), so a stopped FD run resumes point by point."""
    from experiments import bench_samplers as bs
    from gudjax import evaluate, frechet

    calls = []

    def fake_generate(model, num, *, rng, solver, steps, batch_size, time_grid):
        calls.append((solver, steps, time_grid))
        gen = np.random.default_rng([steps, int(np.asarray(rng).sum())])  # PRNGKey(k) = [0, k]
        return gen.uniform(-1, 1, (num, 8, 8, 1)).astype(np.float32)

    feats = lambda imgs: np.asarray(imgs).reshape(len(imgs), -1)[:, :6]
    info = {"extractor": feats, "ref_mean": np.zeros(6), "ref_cov": np.eye(6) * 0.3}
    cfg = ml_collections.ConfigDict({"schedule": {"name": "soft"}, "data": {"name": "x"}})
    monkeypatch.setattr(bs, "load_model", lambda w, c: (cfg, None, 7))
    monkeypatch.setattr(evaluate, "eval_settings", lambda c: {})
    monkeypatch.setattr(frechet, "fd_setup", lambda c, s, w: {"fd": info})
    monkeypatch.setattr(generation, "generate", fake_generate)
    first = bs.fd_rows(str(tmp_path), "x", (5, 10), 32, samplers=["ddim"], log=lambda m: None)
    assert len(calls) == 2 and not any(r["reused"] for r in first)
    assert sorted(os.listdir(tmp_path / "bench_samplers")) == ["ddim@uniform_nfe10.npz",
                                                                "ddim@uniform_nfe5.npz"]
    again = bs.fd_rows(str(tmp_path), "x", (5, 10, 20), 32, samplers=["ddim"],
                       log=lambda m: None)
    assert len(calls) == 3 and calls[-1][1] == 20  # only the new point is sampled
    assert [r["reused"] for r in again] == [True, True, False]
    assert [r["fd"] for r in again[:2]] == [r["fd"] for r in first]
    # a file with another sample count is not reused
    bs.fd_rows(str(tmp_path), "x", (5,), 16, samplers=["ddim"], log=lambda m: None)
    assert len(calls) == 4
    # seeds: seed 0 is the file above, seeds 1 and 2 are new files; FD = mean ± SE
    three = bs.fd_rows(str(tmp_path), "x", (10,), 32, samplers=["ddim"], seeds=3,
                       log=lambda m: None)
    assert len(calls) == 6 and [c[1] for c in calls[-2:]] == [10, 10]
    assert (tmp_path / "bench_samplers" / "ddim@uniform_nfe10_seed2.npz").exists()
    r = three[0]
    assert r["fd_seeds"][0] == first[1]["fd"] and not r["reused"]
    assert r["fd"] == pytest.approx(np.mean(r["fd_seeds"]))
    assert r["fd_se"] == pytest.approx(np.std(r["fd_seeds"], ddof=1) / np.sqrt(3))
    # the full-covariance samplers: the data moments computed once and stored in the
    # workdir, the model given them, one network call per step, samples saved and reused
    from gudjax import experiment

    moment_calls, models = [], []
    basis = SimpleNamespace(dim=4)
    model = SimpleNamespace(basis=basis, with_moments=lambda m, c: ("with moments", m.shape))
    monkeypatch.setattr(bs, "load_model", lambda w, c: (cfg, model, 7))
    monkeypatch.setattr(experiment, "component_moments", lambda d, b: moment_calls.append(b)
                        or (np.zeros(4), np.eye(4)))
    monkeypatch.setattr(generation, "generate", lambda m, *a, **k: models.append(m)
                        or fake_generate(m, *a, **k))
    cov = bs.fd_rows(str(tmp_path), "x", (4, 10), 32, samplers=["dpmpp_2m_cov"],
                     log=lambda m: None)
    assert moment_calls == [basis] and [r["nfe"] for r in cov] == [4, 10]
    assert calls[-2:] == [("dpmpp_2m_cov", 4, "auto"), ("dpmpp_2m_cov", 10, "auto")]
    assert models == [("with moments", (4,))] * 2
    assert (tmp_path / "data_moments.npz").exists()
    assert (tmp_path / "bench_samplers" / "dpmpp_2m_cov@auto_nfe10.npz").exists()
    again = bs.fd_rows(str(tmp_path), "x", (10, 20), 32, samplers=["dpmpp_2m_cov"],
                       log=lambda m: None)
    assert again[0]["reused"] and again[0]["fd"] == cov[1]["fd"] and not again[1]["reused"]
    assert moment_calls == [basis] and len(models) == 3  # moments read back from the file


def test_load_model_reads_the_workdirs_own_config(tmp_path, monkeypatch):
    """Without --config, the bench loads the config the workdir was trained with."""
    from experiments import bench_samplers as bs
    from gudjax import experiment, run, score_model

    seen = {}
    monkeypatch.setattr(experiment, "read_config_json",
                        lambda path: seen.setdefault("path", path) and {"schedule": {"a": 1.5}})
    trained = (0, 0, 0, {"ema_params": 0}, 9)  # basis, schedule, graphdef, state, step
    monkeypatch.setattr(run, "load_trained", lambda config, w: trained)
    monkeypatch.setattr(score_model, "network_model", lambda *a: "model")
    from gudjax import sweeps
    monkeypatch.setattr(sweeps, "family_member", lambda c: {})
    config, model, step = bs.load_model(str(tmp_path))
    assert seen["path"] == str(tmp_path / "config.json") and step == 9 and model == "model"
    assert config.schedule.a == 1.5
