"""`experiments/bench.py --quick` runs end to end on tiny shapes, so the benchmark cannot rot.

The numbers themselves are not checked (timed tests on a shared machine would be flaky),
only that every section is there and every figure is a finite positive number.
"""

import json
import math

import pytest

from experiments import bench

SECTIONS = ("train", "flops", "sampling", "compile", "scaling", "input", "targets")


def _numbers(tree, path=""):
    """(path, value) of every int/float leaf (bools excluded) of a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield path, tree


# About 20 XLA compilations (train steps, samplers, NLL, and three fresh subprocesses for the
# cold/warm persistent-cache compile and the 2-device scaling row): a few minutes of CPU.
@pytest.mark.slow
def test_bench_quick_writes_every_section(tmp_path):
    path = tmp_path / "bench.json"
    bench.main(["--quick", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["quick"]
    for section in SECTIONS:
        assert section in data, section
        assert "error" not in data[section], data[section]
    # every figure finite; times, rates and FLOPs positive
    for where, value in _numbers({k: data[k] for k in SECTIONS if k != "targets"}):
        assert math.isfinite(value), where
        leaf = where.rsplit(".", 1)[-1]
        if leaf.endswith(("_s", "per_s", "flops", "flops_per_step", "_mb", "over_cold")):
            assert value > 0, where
    rows = {r["case"]: r for r in data["train"]["rows"]}
    assert set(bench.QUICK_CASES) <= set(rows)
    assert rows["pixel"]["overhead_vs_pixel"] == 1.0
    assert all(r["loss_finite"] and r["images_per_s"] > 0 for r in rows.values())
    assert data["flops"]["matmul"]["flops_per_s"] > 0
    assert {r["sampler"] for r in data["sampling"]["rows"]} == {"sde", "ode"}
    assert data["sampling"]["nll"]["seconds_per_image"] > 0
    comp = data["compile"]
    assert comp["train_step"]["cold"]["total_s"] > 0 and comp["train_step"]["warm"]["total_s"] > 0
    assert comp["cache_entries_written"] > 0
    sc = data["scaling"]
    assert [r["devices"] for r in sc["rows"]] == [1, 2]
    assert not sc["batch_gathered"] and sc["state_donated"]
    assert all(r["hlo"]["all-gather"] == 0 for r in sc["rows"])
    assert all(r["over_train_step"] > 0 for r in data["input"]["rows"])
    assert {"gud_overhead", "input_over_step", "warm_cache_compile", "no_retrace"} <= set(
        data["targets"]
    )
