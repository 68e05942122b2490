"""Checkpointer: round trip, async + keep-N, corruption fallback, mismatch, sharded restore.

Reading a damaged step makes TensorStore finish some futures after Orbax closed its event
loop ("RuntimeError: Event loop is closed" via sys.unraisablehook); that noise is expected.
"""

import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gudjax import checkpointing
from gudjax.checkpointing import FORMAT_VERSION, Checkpointer, CheckpointError

LOGGER = "gudjax.checkpointing"

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


def make_state(seed: int = 0, width: int = 3):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "w": jax.random.normal(k1, (4, width), jnp.float32),
        "b": jax.random.normal(k2, (width,), jnp.float32),
    }
    opt_state = optax.adamw(1e-3).init(params)
    # Make the optimizer state non-trivial so a round trip is a real test.
    opt_state = jax.tree.map(lambda x: x + 1 if x.dtype == jnp.float32 else x + 7, opt_state)
    ema = jax.tree.map(lambda x: 0.5 * x, params)
    step = jnp.array(seed, jnp.int32)
    return {"params": params, "opt_state": opt_state, "ema": ema, "step": step}


def abstract_of(state, sharding=None):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def assert_trees_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def all_files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in pathlib.Path(root).rglob("*") if p.is_file()}


def array_data_files(step_dir) -> list[pathlib.Path]:
    """The OCDBT data files holding the arrays (and their zarr metadata) of one step."""
    files = [
        p
        for p in (pathlib.Path(step_dir) / "state").rglob("*")
        if p.is_file() and p.parent.name == "d"
    ]
    assert files, f"no array data files found under {step_dir}"
    return files


def save_steps(directory, steps, **kw):
    with Checkpointer(directory, async_save=False, **kw) as ckpt:
        for s in steps:
            ckpt.save(s, make_state(s), meta={"config": {"width": 3}})


def test_round_trip_bit_identical(tmp_path):
    state = make_state(1)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(5, state, meta={"config": {"lr": 1e-3, "name": "x"}, "note": [1, 2]})
        assert ckpt.all_steps() == [5] and ckpt.latest_step() == 5
        step, restored, meta = ckpt.restore(abstract_of(state))
    assert step == 5
    assert_trees_identical(restored, state)
    assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["config"] == {"lr": 1e-3, "name": "x"} and meta["note"] == [1, 2]
    assert "gudjax_version" in meta
    # A new Checkpointer on the same directory (a resumed run) sees the same thing.
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.restore_meta() == meta
        step, restored, _ = ckpt.restore(state)  # concrete arrays as target
    assert step == 5
    assert_trees_identical(restored, state)


def test_async_save_wait_and_keep_n(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for s in (1, 2, 3, 4):
            ckpt.save(s, make_state(s))
        ckpt.wait()
        assert ckpt.all_steps() == [3, 4]
        step, restored, meta = ckpt.restore(abstract_of(make_state()))
    assert step == 4 and meta["format_version"] == FORMAT_VERSION
    assert_trees_identical(restored, make_state(4))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]


def test_empty_directory_returns_none(tmp_path):
    with Checkpointer(tmp_path / "fresh") as ckpt:
        assert ckpt.restore(abstract_of(make_state())) is None
        assert ckpt.restore_meta() is None
        assert ckpt.latest_step() is None and ckpt.all_steps() == []


@pytest.mark.parametrize("damage", ["truncate", "delete", "empty_dir", "bad_metadata_json"])
def test_unreadable_newest_step_falls_back(tmp_path, caplog, damage):
    save_steps(tmp_path, [1, 2, 3])
    step3 = tmp_path / "3"
    if damage == "truncate":
        for f in array_data_files(step3):
            with open(f, "r+b") as fh:
                fh.truncate(max(0, f.stat().st_size // 3))
    elif damage == "delete":
        for f in array_data_files(step3):
            f.unlink()
    elif damage == "empty_dir":
        import shutil

        shutil.rmtree(step3)
        step3.mkdir()
    else:
        (step3 / "state" / "_METADATA").write_text("{not json")

    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path) as ckpt:
        step, restored, meta = ckpt.restore(abstract_of(make_state()))
    assert step == 2
    assert_trees_identical(restored, make_state(2))
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("step 3" in m and "unreadable" in m for m in warnings), warnings


def test_unreadable_array_chunks_fall_back(tmp_path, caplog):
    """Array metadata still readable, chunk data truncated: the restore itself fails."""
    big = {"w": jnp.arange(256 * 256, dtype=jnp.float32).reshape(256, 256)}
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, big)
        ckpt.save(2, jax.tree.map(lambda x: x + 1, big))
    largest = max(array_data_files(tmp_path / "2"), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path) as ckpt:
        step, restored, _ = ckpt.restore(abstract_of(big))
    assert step == 1
    assert_trees_identical(restored, big)
    assert any(
        "step 2" in r.getMessage() and "state:" in r.getMessage()
        for r in caplog.records
        if r.name == LOGGER
    )


def test_unreadable_step_is_moved_aside_at_next_save(tmp_path):
    save_steps(tmp_path, [1, 2, 3])
    for f in array_data_files(tmp_path / "3"):
        f.unlink()
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        step, state, _ = ckpt.restore(abstract_of(make_state()))
        assert step == 2
        # The resumed run reaches step 3 again: it must be saved, not skipped.
        ckpt.save(3, make_state(33), wait=True)
        assert ckpt.all_steps() == [1, 2, 3]
        step, restored, _ = ckpt.restore(abstract_of(make_state()))
    assert step == 3
    assert_trees_identical(restored, make_state(33))
    assert (tmp_path / "unreadable" / "step_3" / "state").is_dir()  # moved, not deleted


def test_all_unreadable_raises_and_keeps_files(tmp_path):
    save_steps(tmp_path, [1, 2, 3])
    for s in (1, 2):
        for f in array_data_files(tmp_path / str(s)):
            f.write_bytes(b"")
    (tmp_path / "3" / "meta" / "metadata").write_text("{not json")
    before = all_files(tmp_path)
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError) as info:
            ckpt.restore(abstract_of(make_state()))
    msg = str(info.value)
    assert "\n" not in msg
    assert "no readable checkpoint" in msg and "[3, 2, 1]" in msg
    assert "fresh --workdir" in msg
    assert all_files(tmp_path) == before


def test_shape_mismatch_raises_one_line_without_fallback(tmp_path, caplog):
    save_steps(tmp_path, [1, 2])
    wrong = abstract_of(make_state())
    wrong["params"]["w"] = jax.ShapeDtypeStruct((5, 3), jnp.float32)
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError) as info:
            ckpt.restore(wrong)
    msg = str(info.value)
    assert "\n" not in msg
    assert "params/w" in msg and "(4, 3)" in msg and "(5, 3)" in msg
    assert "step 2" in msg and "use the config this run was trained with" in msg
    assert not [r for r in caplog.records if r.name == LOGGER and "unreadable" in r.getMessage()]


@pytest.mark.parametrize("change", ["dtype", "extra_leaf", "missing_leaf"])
def test_other_mismatches(tmp_path, change):
    save_steps(tmp_path, [1])
    wanted = abstract_of(make_state())
    if change == "dtype":
        wanted["ema"]["b"] = jax.ShapeDtypeStruct((3,), jnp.bfloat16)
        expect = "ema/b"
    elif change == "extra_leaf":
        wanted["params"]["c"] = jax.ShapeDtypeStruct((3,), jnp.float32)
        expect = "params/c"
    else:
        del wanted["ema"]
        expect = "ema/"
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError, match=expect):
        ckpt.restore(wanted)


def test_newer_format_version_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpointing, "FORMAT_VERSION", FORMAT_VERSION + 1)
    save_steps(tmp_path, [1])
    monkeypatch.setattr(checkpointing, "FORMAT_VERSION", FORMAT_VERSION)
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError, match="format_version"):
        ckpt.restore(abstract_of(make_state()))


def test_restore_onto_replicated_mesh_sharding(tmp_path):
    devices = jax.devices()
    assert len(devices) == 8, "tests expect 8 fake CPU devices (tests/conftest.py)"
    mesh = jax.make_mesh((8,), ("data",))
    replicated = NamedSharding(mesh, P())
    state = make_state(3)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(7, jax.device_put(state, replicated), wait=True)
        step, restored, _ = ckpt.restore(abstract_of(state, replicated))
    assert step == 7
    for leaf in jax.tree.leaves(restored):
        assert isinstance(leaf, jax.Array) and leaf.sharding == replicated
    assert_trees_identical(restored, state)


def test_prng_keys_and_bad_meta_are_refused(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match="PRNG key"):
            ckpt.save(1, {"params": make_state()["params"], "rng": jax.random.key(0)})
        with pytest.raises(ValueError, match="JSON"):
            ckpt.save(1, make_state(), meta={"bad": object()})
        assert ckpt.all_steps() == []


def _failing(*args, **kwargs):
    raise OSError("injected failure: disk full")


def test_failed_sync_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    with Checkpointer(tmp_path, max_to_keep=1, async_save=False) as ckpt:
        ckpt.save(1, make_state(1))
        monkeypatch.setattr(ocp_standard_handler(), "async_save", _failing)
        with pytest.raises(CheckpointError, match="step 2"):
            ckpt.save(2, make_state(2))
        monkeypatch.undo()
        assert ckpt.restore(abstract_of(make_state()))[0] == 1
    assert (tmp_path / "1").is_dir() and not (tmp_path / "2").exists()


def test_failed_async_commit_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """Orbax deletes old steps only after the new one committed (what keep-N relies on)."""
    from orbax.checkpoint._src.path import atomicity

    with Checkpointer(tmp_path, max_to_keep=1) as ckpt:
        ckpt.save(1, make_state(1), wait=True)
        monkeypatch.setattr(atomicity, "on_commit_callback", _failing)
        ckpt.save(2, make_state(2))
        with pytest.raises(CheckpointError) as info:
            ckpt.wait()
        assert "\n" not in str(info.value) and "older checkpoints were kept" in str(info.value)
        monkeypatch.undo()
        step, restored, _ = ckpt.restore(abstract_of(make_state()))
        assert step == 1
        assert_trees_identical(restored, make_state(1))
        # The run goes on: the next save works and only then replaces step 1.
        ckpt.save(3, make_state(3), wait=True)
        assert ckpt.all_steps() == [3]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3"]


def ocp_standard_handler():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointHandler


def test_only_writes_inside_directory(tmp_path):
    outer = tmp_path / "run"
    outer.mkdir()
    sibling = tmp_path / "sibling.txt"
    sibling.write_text("x")
    before = set(os.listdir(tmp_path))
    save_steps(outer / "ckpt", [1, 2])
    assert set(os.listdir(tmp_path)) == before
    assert set(os.listdir(outer)) == {"ckpt"}


def test_async_save_survives_donated_buffers(tmp_path):
    """The train step donates the state: buffers deleted right after save() must not matter."""
    state = make_state(5)
    expected = jax.tree.map(np.array, state)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        ckpt.wait()
        step, restored, _ = ckpt.restore(abstract_of(expected))
    assert step == 1
    assert_trees_identical(restored, expected)


def _orphan_task_failing_with(message: str) -> None:
    """Leaves a failed asyncio task unretrieved and collects it, as Orbax's reads do."""
    import asyncio
    import gc

    async def read():
        raise ValueError(message)

    loop = asyncio.new_event_loop()
    task = loop.create_task(read())
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del task
    gc.collect()


def test_orphaned_tensorstore_read_errors_log_no_traceback(caplog, tmp_path):
    # A damaged step fails many reads at once; only the first is raised and reported by
    # restore(), the rest were logged by asyncio as full tracebacks when collected.
    caplog.set_level(logging.ERROR, logger="asyncio")
    with Checkpointer(tmp_path / "ck") as ck:  # a restore installs the filter (not the import)
        assert ck.restore({"x": jnp.zeros(2)}) is None
    _orphan_task_failing_with("NOT_FOUND: Error opening \"zarr\" driver [tensorstore_spec='{}']")
    assert not [r for r in caplog.records if r.name == "asyncio"]
    _orphan_task_failing_with("some other failure")  # anything else is still logged
    orphaned = [r for r in caplog.records if r.name == "asyncio"]
    assert len(orphaned) == 1 and "never retrieved" in orphaned[0].getMessage()


def test_importing_gudjax_installs_nothing():
    """No logger filter, unraisable hook or matplotlib backend is set by an import: the
    Checkpointer installs its filters when it reads, the plots pick Agg when they draw."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "import gudjax.checkpointing, gudjax.main, gudjax.plotting, gudjax.run\n"
        "assert not logging.getLogger('asyncio').filters, logging.getLogger('asyncio').filters\n"
        "assert sys.unraisablehook is sys.__unraisablehook__, sys.unraisablehook\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "gudjax.checkpointing.quiet_read_error_echoes()\n"
        "gudjax.checkpointing.quiet_read_error_echoes()  # idempotent\n"
        "assert len(logging.getLogger('asyncio').filters) == 1\n"
        "hook = sys.unraisablehook\n"
        "assert hook is not sys.__unraisablehook__ and hook.gudjax_late_read_filter\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    root = pathlib.Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
