"""Evaluation: NLL through the eval path on the Gaussian oracle, Gaussian baseline, Fréchet
distance, inpainting, image extension, --mode=eval end to end, and one-line errors."""

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import tiny_config

from gudjax import (
    baselines,
    bases,
    conditional,
    evaluate,
    features,
    generation,
    input_pipeline,
    nll,
    run,
    runtime,
    schedules,
    score_model,
    sweeps,
    train,
)
from gudjax import report as eval_report
from gudjax.checkpointing import CheckpointError
from gudjax.oracle import GaussianOracle, random_gaussian


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def _gaussian_setup(kind, whiten, shape=(4, 4, 1), n=256, **opts):
    mu, C = random_gaussian(0, shape)
    g = np.random.default_rng(1)
    X = g.multivariate_normal(mu, C, size=n).reshape(n, *shape).astype(np.float32)
    basis = bases.fit_basis(kind, [X], whiten=whiten, **opts)
    return mu, C, X, basis


# ------------------------------------------------------------------ NLL
@pytest.mark.parametrize(
    "kind, whiten, sched, opts, fam",
    [
        ("haar", True, dict(name="soft", labels="level"), dict(levels=2), {"a": 0.7}),
        ("pixel", False, dict(name="column", b=0.5), {}, {"b": 0.3}),
    ],
)
def test_nll_eval_path_returns_analytic_bpd_on_gaussian_oracle(kind, whiten, sched, opts, fam):
    """nll_bpd with the oracle's exact score (in place of the network) and its exact p_1
    prior gives the closed-form bits/dim of the t = 0 marginal."""
    mu, C, X, basis = _gaussian_setup(kind, whiten, **opts)
    schedule = schedules.schedule_from_config(sched, basis)
    oracle = GaussianOracle.from_data(basis, mu, C)
    model = score_model.oracle_model(oracle, basis, schedule, fam)
    x = X[:6]
    out = nll.nll_bpd(model, x, batch_size=4, divergence="exact", rtol=1e-5, atol=1e-5)
    fam_j = {k: jnp.float32(v) for k, v in fam.items()}
    logp0 = oracle.logp_x0(x, lambda t: schedule.gamma(t, fam_j))
    expected = -logp0 / (basis.dim * math.log(2.0)) + 7.0
    assert out["bpd"].shape == (6,) and len(out["nfe"]) == 2  # 4 + 2 (padded) images
    np.testing.assert_allclose(out["bpd"], expected, atol=2e-4)


def test_hutchinson_nll_is_unbiased_on_oracle():
    mu, C, X, basis = _gaussian_setup("pixel", True)
    schedule = schedules.make_schedule("soft", basis, labels="column", a=1.0)
    oracle = GaussianOracle.from_data(basis, mu, C)
    model = score_model.oracle_model(oracle, basis, schedule, {"a": 1.0})
    x = np.repeat(X[:1], 32, axis=0)
    out = nll.nll_bpd(model, x, batch_size=32, divergence="hutchinson", num_probes=2)
    logp0 = oracle.logp_x0(x[:1], lambda t: schedule.gamma(t, {"a": jnp.float32(1.0)}))
    expected = float(-logp0[0] / (basis.dim * math.log(2.0)) + 7.0)
    mean, sem = nll.mean_sem(out["bpd"])
    assert sem > 0 and abs(mean - expected) < 4 * sem + 1e-4


# ------------------------------------------------------------------ batches over devices
@pytest.fixture(scope="module")
def sharding_case():
    mu, C, X, basis = _gaussian_setup("pixel", True)
    schedule = schedules.make_schedule("soft", basis, labels="column", a=1.0)
    model = score_model.oracle_model(
        GaussianOracle.from_data(basis, mu, C), basis, schedule, {"a": 0.7}
    )
    one = runtime.batch_mesh(jax.local_devices()[:1])
    return model, X, one, runtime.batch_mesh()


def test_sampling_sharded_over_devices_equals_one_device(sharding_case):
    """The reverse SDE (fresh noise every step) on 8 devices = on one device."""
    solver = "sde"
    model, _, one, all_ = sharding_case
    assert all_.devices.size == 8
    # 13 images in batches of 6: every batch padded to 8 rows on 8 devices, not on one
    kw = dict(rng=jax.random.PRNGKey(3), solver=solver, steps=8, batch_size=6)
    a = generation.generate(model, 13, mesh=one, **kw)
    b = generation.generate(model, 13, mesh=all_, **kw)
    assert a.shape == b.shape == (13, 4, 4, 1)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_nll_sharded_over_devices_equals_one_device(sharding_case):
    """Same images, same Hutchinson probes, same adaptive solve on 8 devices as on one. Not
    bitwise: partitioned matmuls round differently and the shared step-size controller can
    flip an accept/reject decision, so the two agree to the solver tolerance (measured:
    ≤ 1.2e-4 bpd at rtol = atol = 1e-4, where the solver error itself is ~6e-4 bpd); other
    probes would move single-image values by ~1e-1."""
    model, X, one, all_ = sharding_case
    x = np.clip(X[:12], -1, 1)
    kw = dict(batch_size=8, divergence="hutchinson", rtol=1e-4, atol=1e-4)  # 8 + 4 (padded)
    a = nll.nll_bpd(model, x, mesh=one, **kw)
    b = nll.nll_bpd(model, x, mesh=all_, **kw)
    assert a["bpd"].shape == b["bpd"].shape == (12,) and len(b["nfe"]) == 2
    np.testing.assert_allclose(a["bpd"], b["bpd"], atol=1e-3)
    other = nll.nll_bpd(model, x, mesh=all_, seed=1, **kw)  # other probes: far apart
    assert np.max(np.abs(other["bpd"] - b["bpd"])) > 1e-2


def test_conditional_sampling_sharded_equals_one_device(sharding_case):
    model, X, one, all_ = sharding_case
    x = np.clip(X[:3], -1, 1)
    mask = conditional.known_components(
        model.basis, conditional.parse_mask_spec("left:2", (4, 4, 1))
    )
    known = conditional.known_values(model.basis, x, mask)
    kw = dict(rng=jax.random.PRNGKey(0), steps=6, batch_size=3, known=known)
    a = generation.generate(model, 3, mesh=one, **kw)
    b = generation.generate(model, 3, mesh=all_, **kw)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_gaussian_fit_closed_form():
    g = np.random.default_rng(0)
    u8 = g.integers(0, 256, size=(300, 3, 3, 1), dtype=np.uint8)
    u8[:, 0, 0] = 0  # a constant pixel: its variance is the dequantisation floor alone
    fit = baselines.fit_gaussian([u8[:100], u8[100:]])
    x = (u8.astype(np.float64) + 0.5) * 2 / 256 - 1
    flat = x.reshape(300, -1)
    cov = np.cov(flat, rowvar=False, bias=True) + bases.MIN_VARIANCE * np.eye(9)
    np.testing.assert_allclose(fit.mean, flat.mean(0), atol=1e-12)
    np.testing.assert_allclose(fit.cov, cov, atol=1e-10)
    assert fit.eigvals.min() >= bases.MIN_VARIANCE * (1 - 1e-9)
    from scipy.stats import multivariate_normal

    xq = nll.dequantize_uniform(u8[:5], seed=3)
    ref = multivariate_normal(flat.mean(0), cov).logpdf(xq.reshape(5, -1))
    np.testing.assert_allclose(fit.logpdf(xq), ref, rtol=1e-10)
    np.testing.assert_allclose(fit.bpd(xq), -ref / (9 * math.log(2)) + 7, rtol=1e-10)


# ------------------------------------------------------------------ Fréchet distance
def test_frechet_distance_zero_for_same_set_and_grows_with_shift():
    g = np.random.default_rng(0)
    f = g.normal(size=(500, 16)) @ g.normal(size=(16, 16))
    assert features.frechet_distance_of_features(f, f) < 1e-6
    fds = [features.frechet_distance_of_features(f, f + s) for s in (0.1, 0.5, 1.0)]
    assert fds[0] < fds[1] < fds[2]
    np.testing.assert_allclose(fds, [16 * s**2 for s in (0.1, 0.5, 1.0)], rtol=1e-6)
    # closed form for two diagonal Gaussians: Σ (√a − √b)²
    a, b = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    fd = features.frechet_distance(np.zeros(2), np.diag(a), np.zeros(2), np.diag(b))
    assert fd == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    with pytest.raises(ValueError, match="matching shapes"):
        features.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ------------------------------------------------------------------ conditional generation
@pytest.fixture(scope="module")
def pixel_oracle():
    mu, C, X, basis = _gaussian_setup("pixel", False, shape=(8, 8, 1), n=512)
    schedule = schedules.make_schedule("column", basis, b=0.5)
    model = score_model.oracle_model(GaussianOracle.from_data(basis, mu, C), basis, schedule)
    return model, np.clip(X, -1, 1)


def test_inpainting_keeps_known_pixels_exactly(pixel_oracle):
    model, X = pixel_oracle
    x = X[:3]
    mask = conditional.parse_mask_spec("center:4", model.basis.shape)
    assert mask.sum() == 64 - 16
    out = conditional.inpaint(model, x, mask, rng=jax.random.PRNGKey(0), steps=20)
    assert out["num_known_components"] == 48
    np.testing.assert_array_equal(out["images"][:, mask], x[:, mask])
    assert not np.allclose(out["images"][:, ~mask], x[:, ~mask])
    # without pasting: the pixel basis keeps them by replacement alone (up to round-off)
    raw = conditional.inpaint(
        model, x, mask, rng=jax.random.PRNGKey(0), steps=20, paste=False, solver="ode"
    )
    np.testing.assert_allclose(raw["images"][:, mask], x[:, mask], atol=1e-6)


def test_known_components_of_haar_lie_inside_the_known_pixels():
    basis = bases.make_basis("haar", (8, 8, 1), levels=3)
    mask = conditional.parse_mask_spec("left:4", basis.shape)
    comp = conditional.known_components(basis, mask)
    U = np.asarray(basis.matrix())
    inside = np.all(np.abs(U[:, ~mask.reshape(-1)]) < 1e-6, axis=1)
    np.testing.assert_array_equal(comp, inside)
    assert 0 < comp.sum() < 32  # fine coefficients known, coarse ones straddle the border


def test_bad_masks_are_one_line_errors(pixel_oracle):
    model, X = pixel_oracle
    for bad in (np.ones((8, 7), bool), np.ones((2, 8, 8), bool)):
        with pytest.raises(ValueError, match=r"mask has shape .*allowed: \(8, 8\)") as e:
            conditional.inpaint(model, X[:3], bad, rng=jax.random.PRNGKey(0), steps=2)
        assert "\n" not in str(e.value)
    for spec in ("left:9", "diagonal:2", "box:1:2", "left:x"):
        with pytest.raises(ValueError, match="config.sample.inpaint") as e:
            conditional.parse_mask_spec(spec, (8, 8, 1))
        assert "\n" not in str(e.value)


def test_extension_has_requested_width_and_keeps_the_first_window(pixel_oracle):
    model, X = pixel_oracle
    init = X[:2]
    out = conditional.extend(
        model, width=13, shift=3, num=2, rng=jax.random.PRNGKey(1), steps=10, init=init
    )
    assert out.shape == (2, 8, 13, 1)
    np.testing.assert_array_equal(out[:, :, :8], init)  # the real images, bit for bit
    assert np.all(np.abs(out) <= 1.0)
    with pytest.raises(ValueError, match=r"extend_columns=8 must be an integer in \[1, 7\]"):
        conditional.extend(model, width=13, shift=8, num=2, rng=jax.random.PRNGKey(1), steps=2)
    with pytest.raises(ValueError, match="extend_width=5"):
        conditional.extend(model, width=5, shift=2, num=2, rng=jax.random.PRNGKey(1), steps=2)


# ------------------------------------------------------------------ sweeps and config
def test_parse_sweep_and_standard_diffusion_marking():
    pts = sweeps.parse_sweep("a=0:2:3", ("a",))
    assert pts == [{"a": 0.0}, {"a": 1.0}, {"a": 2.0}]
    grid = sweeps.parse_sweep("a=0,1;b=0.3,0.5", ("a", "b"))
    assert grid == [
        {"a": 0.0, "b": 0.3},
        {"a": 0.0, "b": 0.5},
        {"a": 1.0, "b": 0.3},
        {"a": 1.0, "b": 0.5},
    ]
    for spec, match in (
        ("c=1", "no family parameter 'c'"),
        ("a=1:x:2", "cannot read"),
        ("a", "cannot read"),
    ):
        with pytest.raises(ValueError, match=match) as e:
            sweeps.parse_sweep(spec, ("a",))
        assert "config.eval.sweep" in str(e.value) and "\n" not in str(e.value)
    assert sweeps.out_of_range({"a": 2.5}, {"a": (0.0, 2.0)}, {}) != []
    assert sweeps.out_of_range({"a": 2.0}, {"a": (0.0, 2.0)}, {}) == []
    whitened = bases.make_basis("haar", (8, 8, 1), variance=np.linspace(0.1, 1, 64), whiten=True)
    sched = schedules.make_schedule("soft", whitened, labels="level")
    assert "variance-matched" in sweeps.standard_diffusion_label(sched, whitened, {"a": 0.0})
    assert sweeps.standard_diffusion_label(sched, whitened, {"a": 0.5}) is None
    white = whitened.with_prior(False)
    sched_w = schedules.make_schedule("soft", white, labels="variance")
    assert sweeps.standard_diffusion_label(sched_w, white, {"a": 1.0}) == (
        "standard diffusion (white noise)"
    )
    assert sweeps.standard_diffusion_label(sched_w, white, {"a": 0.0}) is None


def test_inception_weights_and_bad_eval_values_are_one_line_errors(data_dir, tmp_path):
    c = tiny_config(data_dir)
    c.eval.inception_weights = str(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="inception_weights=.*does not exist.*convert") as e:
        evaluate.eval_settings(c)
    assert "\n" not in str(e.value)
    c = tiny_config(data_dir, **{"eval.features": "inception"})
    with pytest.raises(ValueError, match="features='inception' needs config.eval.inception_w"):
        evaluate.eval_settings(c)
    c = tiny_config(data_dir, **{"eval.features": "clip"})
    with pytest.raises(ValueError, match="allowed: classifier, inception"):
        evaluate.eval_settings(c)
    c = tiny_config(data_dir, **{"eval.divergence": "skilling"})
    with pytest.raises(ValueError, match="allowed: exact, hutchinson"):
        evaluate.eval_settings(c)


def test_eval_without_checkpoint_is_one_line_error(data_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in .*--mode=train") as e:
        run.evaluate(tiny_config(data_dir), str(tmp_path / "empty"))
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory):
    """(config, workdir) of a 2-step training run of an even smaller network than
    tiny_config's (one level, attention only in the middle block): compilation dominates."""
    wd = str(tmp_path_factory.mktemp("tiny_run") / "run")
    c = tiny_config(
        data_dir,
        **{
            "train.num_steps": 2,
            "train.checkpoint_every": 2,
            "model.ch_mult": (1,),
            "model.attn_resolutions": (),
            "model.cross_attn_resolutions": (),
            "model.token_dim": 8,
            "model.num_heads": 1,
        },
    )
    train.train_and_evaluate(c, wd)
    return c, wd


@pytest.mark.slow
def test_eval_end_to_end_on_tiny_trained_model(tiny_run, caplog, capsys):
    c, wd = tiny_run
    c = c.copy_and_resolve_references()
    e = c.eval
    e.num_images, e.batch_size, e.rtol, e.atol = 6, 8, 1e-3, 1e-3
    e.baseline_ode_images, e.fd_num_samples, e.fd_num_reference = 3, 12, 40
    e.classifier_steps, e.sampler_steps, e.sweep = 30, 3, "a=0,2.5"
    with caplog.at_level(logging.WARNING, logger="gudjax"):
        report = run.evaluate(c, wd)
    assert any("a=2.5 outside the trained range" in r.getMessage() for r in caplog.records)
    data = json.load(open(os.path.join(wd, "eval.json")))
    assert data["checkpoint_step"] == 2 and data["params"] == "ema"
    ns = data["nll_settings"]
    assert ns["num_images"] == 6 and ns["divergence"] == "hutchinson" and ns["rtol"] == 1e-3
    b = data["baseline"]
    assert 0 < b["bpd"] < 9 and b["ode_check"]["max_abs_diff_bpd"] < 5e-3
    fd = data["fd_settings"]
    assert fd["name"] == "FD-digits-classifier" and fd["num_generated"] == 12
    assert fd["num_reference"] == 40 and fd["sampler"] == "sde" and fd["steps"] == 3
    assert fd["fd_train_vs_test"]["value"] >= 0
    rows = data["rows"]
    assert [r["family"] for r in rows] == [{"a": 0.0}, {"a": 2.5}]
    assert rows[0]["standard_diffusion"].startswith("standard diffusion, variance-matched")
    assert rows[1]["standard_diffusion"] is None
    assert rows[0]["in_trained_range"] and not rows[1]["in_trained_range"]
    for r in rows:
        assert np.isfinite(r["nll"]["bpd"]) and r["nll"]["bpd_sem"] > 0
        assert r["fd"]["value"] >= 0 and r["fd"]["num_generated"] == 12
        assert "fingerprint" in r["fd"]["feature_extractor"] and r["fd"]["steps"] == 3
    assert os.path.exists(data["plot"]) and report["rows"][0]["nll"]["bpd"] == rows[0]["nll"]["bpd"]
    assert os.path.exists(
        os.path.join(wd, "fd_classifier", os.path.basename(fd["extractor_details"]["path"]))
    )
    table = capsys.readouterr().out
    assert "FD-digits-classifier" in table and "NLL bpd" in table and "(!)" in table
    # conditional sampling from the command-line entry point
    c.sample.inpaint = "left:4"
    out = run.sample(c, wd)
    assert out["png"].endswith(".png") and os.path.exists(out["png"])
    c.sample.inpaint, c.sample.extend_columns = None, 4  # same compiled sampler as inpainting
    out = run.sample(c, wd)
    assert out["images"].shape == (c.sample.num, 8, 16, 1) and os.path.exists(out["png"])
    assert out["init"] is None and "from-noise" in out["png"]
    # extension of real test images: the known left part is kept exactly
    c.sample.extend_from = "test"
    out = run.sample(c, wd)
    assert out["images"].shape == (c.sample.num, 8, 16, 1) and "from-test" in out["png"]
    np.testing.assert_array_equal(out["images"][:, :, :8], out["init"])
    np.testing.assert_array_equal(out["init"], run._test_images(c, c.sample.num))
    saved = np.load(out["npz"])
    assert int(saved["known_width"]) == 8 and str(saved["extend_from"]) == "test"
    assert "family_names" in saved.files and "family" not in saved.files
    assert os.path.exists(out["png"])
    c.sample.extend_from = "train"
    with pytest.raises(ValueError, match="extend_from='train'; allowed: noise, test") as err:
        run.sample(c, wd)
    assert "\n" not in str(err.value)
    # plain sampling through the device-batched path: PNG + npz
    c.sample.extend_columns, c.sample.extend_from, c.sample.num = None, "noise", 5
    out = run.sample(c, wd)
    assert out["images"].shape == (5, 8, 8, 1) and os.path.exists(out["npz"])
    with np.load(out["npz"]) as saved:  # plain arrays: readable without allow_pickle
        names, values = saved["family_names"].tolist(), saved["family_values"].tolist()
        assert dict(zip(names, values, strict=True)) == sweeps.family_member(c)
        assert all(saved[k].dtype != object for k in saved.files)


@pytest.mark.slow
def test_full_covariance_sampler_from_the_config(tiny_run):
    """--mode=sample with config.sample.solver='dpmpp_2m_cov': the training split's moments
    in component space are computed once and stored in the workdir; unconditional samples and
    inpainting (replacement) run through it."""
    c, wd = tiny_run
    c = c.copy_and_resolve_references()
    c.sample.solver, c.sample.steps, c.sample.num = "dpmpp_2m_cov", 3, 4
    out = run.sample(c, wd)
    assert out["images"].shape == (4, 8, 8, 1) and np.all(np.abs(out["images"]) <= 1.0)
    assert os.path.basename(out["npz"]).startswith("sample_dpmpp_2m_cov3_")
    with np.load(os.path.join(wd, "data_moments.npz")) as f:
        mean, cov = f["mean"], f["cov"]
    basis = bases.load_basis(os.path.join(wd, "basis.npz"))
    levels = input_pipeline.levels(c.data)
    z = np.concatenate([
        np.asarray(basis.encode(input_pipeline.to_model_input(b, levels=levels)), np.float64)
        for b in input_pipeline.fit_batches(c.data)
    ])
    np.testing.assert_allclose(mean, z.mean(0), atol=1e-5)
    np.testing.assert_allclose(cov, np.cov(z, rowvar=False), atol=1e-4)
    again = run.sample(c, wd)  # the stored moments: the same images
    np.testing.assert_array_equal(again["images"], out["images"])
    c.sample.inpaint = "left:4"
    filled = run.sample(c, wd)
    with np.load(filled["npz"]) as f:
        assert np.array_equal(f["images"][:, :, :4], f["originals"][:, :, :4])
        assert np.all(np.isfinite(f["images"]))


@pytest.mark.slow
def test_eval_with_inception_weights_reports_fid(tiny_run, tmp_path, capsys):
    """FID through --mode=eval with random weights in the pytorch-fid format (the number is
    meaningless; the path, the metadata and the table are what is tested)."""
    from gudjax import inception

    weights = tmp_path / "random_fid_inception.npz"
    np.savez(weights, **inception.random_state_dict(0))
    c, wd = tiny_run
    c = c.copy_and_resolve_references()
    e = c.eval
    e.num_images, e.batch_size, e.rtol, e.atol, e.baseline_ode_images = 2, 8, 1e-3, 1e-3, 0
    e.fd_num_samples, e.fd_num_reference, e.sampler_steps, e.sweep = 5, 6, 3, ""
    e.features, e.inception_weights, e.inception_batch_size = "inception", str(weights), 8
    report = run.evaluate(c, wd)
    assert report["fd_settings"] is None
    fid = report["fid_settings"]
    assert fid["name"] == "FID" and fid["num_generated"] == 5 and fid["num_reference"] == 6
    assert fid["sampler"] == "sde" and fid["steps"] == 3
    sha = inception.file_sha256(str(weights))
    assert (
        fid["extractor_details"]["weights_sha256"] == sha and sha[:12] in fid["feature_extractor"]
    )
    assert (
        "InceptionV3 pool-3" in fid["feature_extractor"] and fid["fd_train_vs_test"]["value"] >= 0
    )
    row = report["rows"][0]
    assert "fd" not in row and row["fid"]["value"] >= 0 and row["fid"]["num_generated"] == 5
    data = json.load(open(os.path.join(wd, "eval.json")))
    assert data["rows"][0]["fid"]["value"] == row["fid"]["value"]
    table = capsys.readouterr().out
    assert "FID: InceptionV3 pool-3" in table and "| FID" in table


@pytest.mark.slow
def test_bench_eval_quick_writes_json(tmp_path):
    from experiments import bench_eval

    path = tmp_path / "bench_eval.json"
    result = bench_eval.main(["--quick", "--json", str(path), "--steps", "4"])
    data = json.loads(path.read_text())
    assert data["quick"] and data["shape"] == [8, 8, 1] and data["nll"]["nfe"] > 0
    assert data["nll"]["seconds_per_image"] > 0 and np.isfinite(data["nll"]["bpd_mean"])
    assert [s["sampler"] for s in data["sampling"]] == ["sde", "ode"]
    assert [s["nfe"] for s in data["sampling"]] == [4, 8]
    assert all(s["images_per_s"] > 0 and s["finite"] for s in data["sampling"])
    assert result["nll"]["nfe"] == data["nll"]["nfe"]


def test_eval_and_conditional_fields_override_from_the_command_line(monkeypatch):
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
    argv = [
        "prog",
        "--config=configs/digits_haar.py:runlocal",
        "--config.eval.sweep=a=0:2:3",
        "--config.eval.num_images=10",
        "--config.eval.sampler=ode",
        "--config.eval.classifier_dir=/tmp/fdc",
        "--config.sample.inpaint=center:4",
        "--config.sample.extend_columns=2",
        "--config.sample.extend_width=20",
    ]
    monkeypatch.setattr("sys.argv", argv)
    fv(argv)
    c = fv.config
    s = evaluate.eval_settings(c)
    assert s["sweep"] == "a=0:2:3" and s["num_images"] == 10 and s["sampler"] == "ode"
    assert s["sampler_steps"] == c.eval.sampler_steps == 50 and s["classifier_dir"] == "/tmp/fdc"
    assert c.sample.inpaint == "center:4" and c.sample.extend_columns == 2
    assert c.sample.extend_width == 20


def _fake_report(points, std):
    rows = [
        {
            "family": p,
            "standard_diffusion": "standard diffusion (white noise)" if s else None,
            "in_trained_range": True,
            "nll": {"bpd": 1.0 + sum(p.values()), "bpd_sem": 0.1, "nfe_mean": 10.0},
            "fd": {"name": "FD-digits-classifier", "value": 2.0 + sum(p.values())},
        }
        for p, s in zip(points, std, strict=True)
    ]
    return {
        "rows": rows,
        "baseline": {"bpd": 3.0},
        "dataset": "digits",
        "basis": {"name": "pixel", "whiten": False},
        "checkpoint_step": 1,
    }


@pytest.mark.parametrize("spec", ["a=0:2:3", "a=0,1;b=0.3,0.5"])
def test_sweep_plot_line_and_heat_map(tmp_path, spec):
    points = sweeps.parse_sweep(spec, ("a", "b"))
    report = _fake_report(points, [i == 0 for i in range(len(points))])
    path = eval_report.plot_sweep(report, str(tmp_path / "sweep.png"))
    assert os.path.getsize(path) > 1000


def test_table_shows_classifier_fd_and_fid_side_by_side():
    report = _fake_report([{"a": 0.0}, {"a": 1.0}], [True, False])
    settings = {
        "feature_extractor": "x",
        "num_generated": 5,
        "num_reference": 6,
        "sampler": "sde",
        "steps": 3,
        "fd_train_vs_test": {"value": 0.5},
    }
    for r in report["rows"]:
        r["fid"] = {"name": "FID", "value": 40.0 + r["family"]["a"]}
        r["nll"]["nfe_mean"] = 10.0
    report.update(
        workdir="w",
        split="test",
        schedule={"name": "soft"},
        nll_settings={
            "estimator": "PF-ODE",
            "solver": "tsit5",
            "rtol": 1e-5,
            "atol": 1e-5,
            "num_images": 4,
            "dequantization_seed": 0,
        },
        fd_settings={"name": "FD-digits-classifier", **settings},
        fid_settings={"name": "FID", **settings},
    )
    report["baseline"]["bpd_sem"] = 0.1
    table = eval_report.format_table(report)
    header = next(line for line in table.splitlines() if line.startswith("a "))
    assert header.index("FD-digits-classifier") < header.index("FID")
    assert "41" in table and "FID: x; 5 generated (sde, 3 steps)" in table


def test_sample_files_store_the_family_as_plain_arrays(tmp_path):
    """The family point of sample/inpaint/extend .npz files loads with plain np.load."""
    path = tmp_path / "sample.npz"
    fam = {"a": 0.5, "b": 0.25}
    np.savez_compressed(path, images=np.zeros((2, 4, 4, 1)), **run.family_fields(fam))
    with np.load(path) as saved:  # allow_pickle=False
        names, values = saved["family_names"].tolist(), saved["family_values"].tolist()
    assert dict(zip(names, values, strict=True)) == fam
    np.savez_compressed(tmp_path / "fixed.npz", **run.family_fields({}))
    with np.load(tmp_path / "fixed.npz") as saved:
        assert saved["family_names"].size == saved["family_values"].size == 0
