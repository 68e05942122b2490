"""The maths micro-benchmark runs end to end on tiny shapes and writes one row per basis."""

import json

from experiments import bench_maths
from gudjax import bases


def test_bench_maths_quick_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    result = bench_maths.main(["--quick", "--json", str(path), "--repeats", "2"])
    data = json.loads(path.read_text())
    assert data["quick"] and data["shape"] == [8, 8, 1] and data["batch"] == 16
    assert [r["basis"] for r in data["bases"]] == list(bases.registered_bases())
    for row in data["bases"]:
        assert row["encode_img_per_s"] > 0 and row["decode_img_per_s"] > 0
        assert row["round_trip_max_err"] < 1e-4
    s = data["sampler"]
    assert s["dim"] == 64 and s["step_single_call_us"] > 0 and s["step_in_scan_us"] > 0
    assert 0.5 < s["final_std"] < 2.0
    assert result["bases"][0]["basis"] == data["bases"][0]["basis"]
