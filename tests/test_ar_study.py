"""experiments/ar_study: per-block likelihood at the AR limit and off-path quality
(docs/maths.md §10.4), on a very small setting of the --quick path."""

import json
import math
import os

import numpy as np
import pytest

from experiments import ar_study


@pytest.mark.slow(weight=5)  # about 2 minutes: start it early
def test_quick_ar_study_on_digits(tmp_path):
    out_json = tmp_path / "ar.json"
    argv = [
        "configs/digits_haar.py", "--quick", "--workdir", str(tmp_path / "w"),
        "--json", str(out_json), "--num_images", "4",
        "--set", f"data.data_dir={tmp_path / 'data'}", "--set", "train.num_steps=10",
        "--set", "train.checkpoint_every=10", "--set", "eval.rtol=1e-3",
        "--set", "eval.atol=1e-3", "--set", "eval.batch_size=4",
        "--set", "eval.classifier_steps=10", "--set", "eval.fd_num_samples=8",
        "--set", "eval.sampler_steps=8",
    ]
    assert ar_study.main(argv, configure_logging=False) == 0
    r = json.loads(out_json.read_text())
    assert r["levels"] == 17 and r["paths"] == "family" and r["seconds"] > 0
    assert r["command"].startswith("python -m experiments.ar_study")
    ar = r["ar_limit"]
    for k in ("total_bpd", "total_bpd_se", "per_block_bpd", "sum_minus_total_bpd"):
        assert k in ar, k
    assert ar["num_blocks"] == 4 and len(ar["per_block_bpd"]) == 4  # Haar levels 0..3
    dims = np.asarray(ar["block_dims"], np.float64)
    assert dims.sum() == 64
    # the per-block values, dimension-weighted, are the total (exactly), and that total is
    # the one-solve NLL within the solver tolerance
    weighted = float(np.dot(dims, ar["per_block_bpd"]) / dims.sum())
    assert weighted == pytest.approx(ar["total_bpd"], abs=1e-9)
    assert abs(ar["sum_minus_total_bpd"]) < 1e-2
    assert r["oracle_ar_max_err_bpd"] < 1e-2
    curve = r["family_curve"]
    assert curve[-1]["a"] == "AR limit" and all(math.isfinite(c["bpd"]) for c in curve)
    kinds = [row["kind"] for row in r["off_path"]]
    assert kinds == ["family", "beyond", "beyond", "warp", "ar"]
    assert r["off_path"][0]["distance"] == pytest.approx(0.0, abs=1e-6)
    for row in r["off_path"]:
        assert math.isfinite(row["bpd"]) and 0 < row["bpd"] < 20
        assert row["fd"] is not None and math.isfinite(row["fd"])
    assert r["off_path"][-1]["distance"] > r["off_path"][1]["distance"] > 0
    assert os.path.exists(r["plot"]) and r["plot"].endswith("ar.png")
