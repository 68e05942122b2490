"""Figure scripts (experiments/figures): each runs on the digits at small sizes and writes a
non-trivial PNG and PDF; family_results reads eval JSON in the format gudjax.report writes
(the synthetic reports below go through report.write_report and are checked to be
readable by report's own plot_sweep and format_table); bad input is a one-line error."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from experiments.figures import (
    common,
    family_results,
    forward_processes,
    gamma_snr_pca,
    snr_paths,
)
from gudjax import report


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _check_outputs(paths, out_dir, names):
    expected = {str(out_dir / f"{n}.{ext}") for n in names for ext in ("png", "pdf")}
    assert set(paths) == expected
    for path in paths:
        if path.endswith(".png"):
            img = np.asarray(Image.open(path).convert("L"), np.float32)
            assert min(img.shape) > 200, img.shape
            assert img.std() > 5.0  # not a blank canvas
        else:
            with open(path, "rb") as f:
                assert f.read(5) == b"%PDF-"
            assert os.path.getsize(path) > 5000


@pytest.mark.parametrize(
    "module, extra",
    [
        (gamma_snr_pca, ["--num", "4"]),
        (forward_processes, ["--num", "3", "--index", "2"]),
        (snr_paths, ["--num", "2"]),
    ],
    ids=["gamma_snr_pca", "forward_processes", "snr_paths"],
)
def test_maths_figures_on_digits(module, extra, data_dir, tmp_path, capsys):
    out = tmp_path / "figs"
    argv = ["--out", str(out), "--data", "digits", "--data-dir", data_dir, "--fit-images", "400"]
    argv += ["--dpi", "60"]
    paths = common.run(module.main, argv + extra)
    _check_outputs(paths, out, [module.NAME])
    # the paths are printed last (a first use of the digits also logs its offline build)
    assert capsys.readouterr().out.split()[-len(paths) :] == paths


def test_pca_components_spread_over_the_spectrum():
    variance = np.concatenate([np.logspace(1, -4, 30), np.full(4, 5.086263020833333e-06)])
    idx = gamma_snr_pca.choose_components(variance, 8)
    assert len(idx) == 8 and idx[0] == 0 and np.all(np.diff(idx) > 0)
    assert idx[-1] == 29  # the smallest non-floored component, floored ones left out
    gaps = -np.diff(np.log(variance[idx]))
    assert gaps.max() < 2.0 * gaps.min()  # evenly spread in log-variance


def test_gamma_snr_panels_are_the_four_cases():
    """(a) all γ equal, (b) all SNR equal, (c) SNR of (a), (d) both equal."""
    import jax.numpy as jnp

    from gudjax import bases

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4, 4, 1)) * np.linspace(0.1, 1.0, 16).reshape(4, 4, 1)
    pca = bases.fit_basis("pca", [x.astype(np.float32)])
    t = jnp.linspace(0.0, 1.0, 5)
    cur = {tag: gamma_snr_pca.panel_curves(pca, w, a, t) for tag, w, a, _ in gamma_snr_pca.PANELS}
    assert cur["a"]["standard"] and not cur["a"]["equal_snr"]
    assert cur["b"]["equal_snr"] and not cur["b"]["standard"]
    np.testing.assert_allclose(cur["c"]["log_snr"], cur["a"]["log_snr"], atol=1e-4)
    assert cur["d"]["standard"] and cur["d"]["equal_snr"]


def test_missing_cifar10_is_the_input_pipelines_one_line_error(tmp_path):
    argv = ["--out", str(tmp_path), "--data", "cifar10", "--data-dir", str(tmp_path / "none")]
    with pytest.raises(SystemExit) as e:
        common.run(gamma_snr_pca.main, argv)
    msg = str(e.value.code)
    assert "\n" not in msg and "tfds build cifar10" in msg and "not prepared" in msg


# ------------------------------------------------------------------ family_results
def _row(point, nll, fd, standard=None, in_range=True):
    return {
        "family": point,
        "standard_diffusion": standard,
        "in_trained_range": in_range,
        "warnings": [] if in_range else ["outside"],
        "nll": {
            "bpd": nll,
            "bpd_sem": 0.04,
            "num_images": 16,
            "estimator": "PF-ODE, Hutchinson (1 Rademacher probe)",
            "divergence": "hutchinson",
            "num_probes": 1,
            "solver": "tsit5",
            "rtol": 1e-5,
            "atol": 1e-5,
            "nfe_mean": 200.0,
            "gaussian_baseline_bpd": 6.4,
            "beats_baseline": nll < 6.4,
        },
        "fd": {
            "name": "FD-digits-classifier",
            "value": fd,
            "feature_extractor": "FD-digits-classifier (fingerprint 0, 128-d, test accuracy 0.98)",
            "num_generated": 32,
            "num_reference": 32,
            "reference": "test split, centre dequantisation",
            "sampler": "sde",
            "steps": 20,
            "generated_processing": "clipped to [-1, 1], quantised to uint8, centre dequantised",
        },
        "seconds": 1.0,
    }


def synthetic_report(workdir, rows, *, basis, whiten, sweep, schedule):
    """An eval report with every field `evaluate.evaluate_trained` writes."""
    fd_settings = {k: v for k, v in rows[0]["fd"].items() if k not in ("value", "reference")}
    return {
        "format_version": 1,
        "gudjax": "0.1.0",
        "workdir": str(workdir),
        "checkpoint_step": 100,
        "params": "ema",
        "dataset": "digits",
        "split": "test",
        "image_shape": [8, 8, 1],
        "dim": 64,
        "basis": {"name": basis, "whiten": whiten},
        "schedule": schedule,
        "trained_family": {k: [0.0, 2.0] for k in rows[0]["family"]},
        "sweep": sweep,
        "nll_settings": {
            "estimator": "PF-ODE, Hutchinson (1 Rademacher probe)",
            "divergence": "hutchinson",
            "num_probes": 1,
            "solver": "tsit5",
            "rtol": 1e-5,
            "atol": 1e-5,
            "num_images": 16,
            "dequantization": "uniform",
            "dequantization_seed": 0,
            "units": "bits/dim (+7 for 8-bit data in [-1, 1])",
        },
        "baseline": {"name": "gaussian", "bpd": 6.4, "bpd_sem": 0.02, "num_images": 16},
        "fd_settings": {
            **fd_settings,
            "reference": "test split, centre dequantisation",
            "fd_train_vs_test": {"value": 3.5, "num_train": 32, "num_test": 32},
            "extractor_details": {},
        },
        "rows": rows,
        "seconds": 1.0,
    }


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    """Two 1-D sweeps over a (whitened / unwhitened) and one 2-D (a, b) grid, written by
    report.write_report and checked against its own readers."""
    tmp_path = tmp_path_factory.mktemp("evals")
    std_w = "standard diffusion (white noise)"
    std_v = "standard diffusion, variance-matched prior (equal log-SNR)"
    files = {}
    for whiten in (False, True):
        rows = [
            _row(
                {"a": a},
                5.0 + 0.2 * (a - 1) ** 2 + 0.1 * whiten,
                15 + 3 * abs(a - 0.8),
                standard=(std_v if a == 0 else None) if whiten else (std_w if a == 1 else None),
                in_range=a <= 2,
            )
            for a in (0.0, 0.5, 1.0, 1.5, 2.5)
        ]
        d = tmp_path / f"pca_{'w' if whiten else 'u'}"
        d.mkdir()
        rep = synthetic_report(
            d,
            rows,
            basis="pca",
            whiten=whiten,
            sweep="a=0,0.5,1,1.5,2.5",
            schedule={"name": "soft", "labels": "variance", "a": 1.0},
        )
        files[f"1d_{whiten}"] = report.write_report(rep, str(d / "eval.json"))
    rows = [
        _row({"a": a, "b": b}, 4.0 + a + b, 10 + 5 * a - b, standard=std_v if a == b == 0 else None)
        for a in (0.0, 0.5, 1.0)
        for b in (0.0, 0.3, 0.5)
    ]
    d = tmp_path / "haar"
    d.mkdir()
    rep = synthetic_report(
        d,
        rows,
        basis="haar",
        whiten=True,
        sweep="a=0,0.5,1;b=0,0.3,0.5",
        schedule={"name": "haar_column", "a": 0.5, "b": 0.5},
    )
    files["2d"] = report.write_report(rep, str(d / "eval.json"))
    for path in files.values():  # the synthetic files are what the report module itself can read
        with open(path) as f:
            rep = json.load(f)
        assert "NLL bpd" in report.format_table(rep)
        report.plot_sweep(rep, str(tmp_path / "check.png"))
    return files


def test_family_results_curves_and_grid(eval_files, tmp_path, capsys):
    out = tmp_path / "figs"
    argv = ["--out", str(out), "--dpi", "60"]
    argv += [eval_files["1d_False"], eval_files["1d_True"], eval_files["2d"]]
    paths = common.run(family_results.main, argv)
    _check_outputs(paths, out, ["family_results", "family_results_grid"])
    entries = [family_results.load_report(eval_files[k]) for k in ("1d_False", "1d_True", "2d")]
    assert [family_results.varying(e) for e in entries] == [["a"], ["a"], ["a", "b"]]
    assert family_results._labels(entries, None)[:2] == [
        "digits pca unwhitened",
        "digits pca whitened",
    ]
    std = [r["family"]["a"] for r in entries[0]["rows"] if r["standard"]]
    assert std == [1.0]


def test_family_results_only_1d_and_custom_labels(eval_files, tmp_path):
    out = tmp_path / "one"
    argv = ["--out", str(out), "--labels", "white", eval_files["1d_False"], "--name", "fig3"]
    argv += ["--dpi", "60"]
    paths = common.run(family_results.main, argv)
    _check_outputs(paths, out, ["fig3"])


@pytest.mark.parametrize(
    "content, expect",
    [
        (None, "cannot read it"),
        ('{"rows": [', "not valid JSON"),
        ('{"format_version": 1}', "no 'rows'"),
        ('{"rows": []}', "non-empty list"),
        ('{"rows": [{"family": {"a": 1}, "nll": {}}]}', "rows[0].nll.bpd missing"),
        ('{"rows": [{"family": {"a": "x"}, "nll": {"bpd": 5}}]}', "rows[0].family.a"),
    ],
)
def test_family_results_bad_input_is_one_line_error(content, expect, tmp_path):
    path = tmp_path / "eval.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as e:
        common.run(family_results.main, ["--out", str(tmp_path / "o"), str(path)])
    msg = str(e.value.code)
    assert "\n" not in msg and expect in msg and str(path) in msg
    assert not (tmp_path / "o").exists()


def test_family_results_label_count_mismatch(eval_files, tmp_path):
    with pytest.raises(SystemExit) as e:
        common.run(
            family_results.main, ["--out", str(tmp_path), "--labels", "x,y", eval_files["2d"]]
        )
    assert "--labels has 2 entries for 1 eval file" in str(e.value.code)
