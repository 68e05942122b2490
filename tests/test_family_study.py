"""experiments/family_study: held-out choice of a family member (docs/maths.md §10)."""

import json
import math
import os

import numpy as np
import pytest

from experiments import family_study


def test_study_config_clips_the_family_and_holds_out_validation():
    config, notes = family_study.study_config("configs/digits_haar.py", quick=True)
    assert config.schedule.clip is True  # the demo's family is clipped already
    assert notes["family_clip"]["switched_on"] is False
    config, notes = family_study.study_config(
        "configs/digits_haar.py", quick=True, sets=["schedule.clip=False"]
    )
    assert config.schedule.clip is True
    assert notes["family_clip"]["switched_on"] is True
    assert config.data.validation_every == family_study.VALIDATION_EVERY
    assert config.model.ch == 8 and config.train.num_steps == 300
    assert family_study.default_grid(config, quick=True) == "a=0:2:3"
    with pytest.raises(ValueError, match="config has no field 'model.chh'"):
        family_study.study_config("configs/digits_haar.py", quick=True, sets=["model.chh=8"])


def _points(val_means, std_index=0, n=64, noise=0.01, seed=0):
    g = np.random.default_rng(seed)
    common = g.normal(3.0, 0.3, size=n)  # the same images for every member
    pts = [{"family": {"a": float(i)}, "val": common + m + noise * g.normal(size=n),
            "test": common + m + noise * g.normal(size=n)} for i, m in enumerate(val_means)]
    std = [("standard" if i == std_index else None) for i in range(len(val_means))]
    return pts, std


def test_choose_reports_ties_and_wins_with_paired_errors():
    pts, std = _points([0.0, -0.1, 0.05])
    c = family_study.choose(pts, std)
    assert c["index"] == 1 and c["verdict"] == "better than standard diffusion"
    pts, std = _points([0.0, -0.001, 0.05])
    assert family_study.choose(pts, std)["verdict"] == "tie"
    pts, std = _points([0.0, 0.1, 0.05])
    assert family_study.choose(pts, std)["verdict"] == "standard diffusion is best"
    pts, _ = _points([0.0, 0.1])
    assert family_study.choose(pts, [None, None])["verdict"].startswith("no standard")


@pytest.mark.slow
def test_quick_study_on_digits_and_resume(tmp_path):
    out_json = tmp_path / "study.json"
    argv = [
        "configs/digits_haar.py", "--quick", "--workdir", str(tmp_path / "w"),
        "--json", str(out_json), "--num_images", "16",
        "--set", f"data.data_dir={tmp_path / 'data'}", "--set", "train.num_steps=20",
        "--set", "train.checkpoint_every=20", "--set", "eval.rtol=1e-3",
        "--set", "eval.atol=1e-3", "--set", "eval.bound_num_t=2",
    ]
    assert family_study.main(argv, configure_logging=False) == 0
    r = json.loads(out_json.read_text())
    assert r["levels"] == 17 and r["seeds"] == [0] and r["validation_every"] == 10
    assert r["family_clip"]["clip"] is True and r["family_clip"]["switched_on"] is False
    b = r["baselines"]
    for k in ("gaussian_bpd", "gaussian_bpd_se", "categorical_bpd", "categorical_bpd_se"):
        assert math.isfinite(b[k]) and b[k] > 0, k
    assert b["categorical_bpd"] < b["gaussian_bpd"]  # digits at 17 levels
    grid = [{"a": 0.0}, {"a": 1.0}, {"a": 2.0}]
    assert [row["family"] for row in r["rows"]] == grid
    for row in r["rows"]:
        for k in ("val_bpd", "test_bpd", "test_bpd_se", "bound_bpd"):
            assert math.isfinite(row[k]) and 0 < row[k] < 20, (k, row[k])
        terms = row["terms"]
        total = terms["reconstruction"] + terms["diffusion"] + terms["prior"]
        assert total == pytest.approx(row["bound_bpd"], rel=1e-9)
        assert 0 <= terms["prior"] < 0.01
    assert r["rows"][0]["standard_diffusion"]  # a = 0
    assert r["selected"] in grid
    assert r["selection"]["verdict"] in (
        "tie", "better than standard diffusion", "standard diffusion is best")
    assert r["oracle_invariance_max_diff_bpd"] < 1e-3 < r["oracle_unmatched_max_diff_bpd"]
    assert os.path.exists(r["plot"]) and r["plot"].endswith("study.png")
    assert r["chunks_computed"] > 0 and r["chunks_reused"] == 0

    # a study killed part-way: one finished chunk lost; the rerun computes only that one
    chunk_dir = next((tmp_path / "w" / "seed0" / "study_chunks").iterdir())
    lost = sorted(p for p in chunk_dir.iterdir() if p.name.startswith("test_"))[0]
    lost.unlink()
    assert family_study.main(argv, configure_logging=False) == 0
    r2 = json.loads(out_json.read_text())
    assert r2["chunks_computed"] == 1 and r2["chunks_reused"] == r["chunks_computed"] - 1
    assert r2["checkpoint_steps"] == [20]
    for a, b_ in zip(r["rows"], r2["rows"], strict=True):
        assert a["val_bpd"] == b_["val_bpd"] and a["test_bpd"] == b_["test_bpd"]
        assert a["bound_bpd"] == b_["bound_bpd"]
