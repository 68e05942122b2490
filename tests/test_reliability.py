"""Reliability: a run survives kill -9, pre-emption, corrupted checkpoints and bad input.

Every fault is injected into a real `python -m gudjax.main` process (tiny model, digits)
and the outcome is compared with one uninterrupted reference run (module fixture):
after any interruption the same command resumes, and the final state equals the
reference bit for bit. See docs/operations.md for what each fault does.

All subprocesses share one JAX compilation cache, so only the reference run and the
NaN run (a different learning rate is a different program) compile the train step.
The random kill moments are drawn from GUDJAX_TEST_SEED (printed; set it to replay).
"""

import ast
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest
from conftest import FAST_COMPILE_XLA_FLAGS

from configs import digits_haar
from gudjax import experiment, input_pipeline, train
from gudjax.checkpointing import Checkpointer

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 16  # steps of every training run here
TINY = [
    "--config.model.ch=8", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
    "--config.model.attn_resolutions=()", "--config.model.cross_attn_resolutions=()",
    "--config.model.token_dim=16", "--config.model.num_heads=2", "--config.model.dropout=0.0",
    "--config.batch_size=16", "--config.optim.decay=constant", "--config.optim.warmup_steps=2",
    "--config.train.log_every=1", "--config.train.checkpoint_every=2",
    "--config.train.progress=False", "--config.sample.num=4", "--config.sample.steps=5",
    f"--config.train.num_steps={N}",
]
CONFIG = f"--config={ROOT / 'configs' / 'digits_haar.py'}:runlocal"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
SEED = int(os.environ.get("GUDJAX_TEST_SEED", time.time_ns() % 2**31))

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


# ------------------------------------------------------------------ helpers
class Env:
    """The environment of every subprocess: data, HOME, TMPDIR, cwd and a shared JAX cache."""

    def __init__(self, base: pathlib.Path):
        self.data = base / "data"
        self.home, self.tmp, self.cwd = base / "home", base / "tmp", base / "cwd"
        for d in (self.home, self.tmp, self.cwd):
            d.mkdir()
        self.cache = jax.config.jax_compilation_cache_dir or tempfile.mkdtemp(prefix="jaxc-")
        env = {k: v for k, v in os.environ.items()
               if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "TFDS_DATA_DIR")}
        self.vars = dict(
            env, GUDJAX_DATA_DIR=str(self.data), HOME=str(self.home), TMPDIR=str(self.tmp),
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_COMPILE_XLA_FLAGS}",
            JAX_COMPILATION_CACHE_DIR=self.cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        )

    def start(self, workdir, *extra, log: str = "log") -> subprocess.Popen:
        workdir = pathlib.Path(workdir)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        err = open(workdir.parent / f"{workdir.name}.{log}.stderr", "w")
        p = subprocess.Popen(
            [sys.executable, "-m", "gudjax.main", CONFIG, f"--workdir={workdir}", *TINY, *extra],
            cwd=self.cwd, env=self.vars, stdout=subprocess.DEVNULL, stderr=err,
        )
        p.stderr_path = err.name
        err.close()
        return p

    def run(self, workdir, *extra, log: str = "log", timeout: float = 600):
        p = self.start(workdir, *extra, log=log)
        p.wait(timeout=timeout)
        return p.returncode, stderr_of(p)


def stderr_of(p) -> str:
    return pathlib.Path(p.stderr_path).read_text()


def committed(ckpt_dir) -> list[int]:
    return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit()) if os.path.isdir(
        ckpt_dir) else []


def tmp_dirs(ckpt_dir) -> list[str]:
    return [n for n in os.listdir(ckpt_dir) if TMP_SUFFIX in n] if os.path.isdir(ckpt_dir) else []


def last_logged_step(workdir) -> int:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
        return max(json.loads(line)["step"] for line in lines[-3:] if line.endswith("}"))
    except (OSError, ValueError):
        return 0


def wait_for(p, condition, what: str, timeout: float = 300, interval: float = 0.002):
    t0 = time.time()
    while not condition():
        if p.poll() is not None:
            pytest.fail(f"process exited ({p.returncode}) before {what}:\n{stderr_of(p)[-3000:]}")
        if time.time() - t0 > timeout:
            p.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


def snapshot(root) -> dict:
    """Every file and directory under root: relative path -> (size, mtime_ns, sha1)."""
    out = {}
    for p in sorted(pathlib.Path(root).rglob("*")):
        st = p.lstat()
        digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns, digest)
    return out


def damage(step_dir, how: str) -> None:
    """Truncate (to 0 bytes) or delete the array data files of one checkpoint step."""
    files = [p for p in (pathlib.Path(step_dir) / "state").rglob("*")
             if p.is_file() and p.parent.name == "d"]
    assert files, step_dir
    for f in files:
        if how == "truncate":
            f.write_bytes(b"")
        else:
            f.unlink()


def tiny_config():
    """The in-process ConfigDict equal to CONFIG + TINY (to build the abstract state)."""
    c = digits_haar.get_config("runlocal")
    for flag in TINY:
        key, value = flag[len("--config."):].split("=", 1)
        *path, leaf = key.split(".")
        node = c
        for p in path:
            node = node[p]
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value
    return c


def loss_rows(workdir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def metric_steps(workdir) -> list[int]:
    """The step of every metrics.jsonl row (one row per logged step)."""
    return [json.loads(line)["step"] for line in open(pathlib.Path(workdir) / "metrics.jsonl")]


def tb_steps(workdir) -> dict[str, list[int]]:
    """tag -> steps as TensorBoard shows them: the event files in name (= start time) order,
    a SessionLog START at step s (tensorboardX's purge_step) drops the earlier events of
    steps >= s, a record cut short by a kill ends its file."""
    from tensorboardX.proto import event_pb2

    seen: dict[str, list[int]] = {}
    for path in sorted((pathlib.Path(workdir) / "tb").glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            record = data[i + 12:i + 12 + n]
            if len(record) < n:
                break
            i += 12 + n + 4
            ev = event_pb2.Event.FromString(record)
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                seen = {tag: [s for s in steps if s < ev.step] for tag, steps in seen.items()}
            for v in ev.summary.value:
                seen.setdefault(v.tag, []).append(ev.step)
    return seen


def assert_metrics_once_per_step(workdir, ref_workdir):
    """metrics.jsonl and TensorBoard hold every logged step of the reference, each once."""
    assert metric_steps(workdir) == metric_steps(ref_workdir) == list(range(1, N + 1))
    tb, tb_ref = tb_steps(workdir), tb_steps(ref_workdir)
    assert set(tb) == set(tb_ref) and "loss" in tb
    for tag, steps in tb.items():
        assert sorted(steps) == tb_ref[tag] == list(range(1, N + 1)), tag


# ------------------------------------------------------------------ the reference run
@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """One uninterrupted run (N steps) in an empty HOME, TMPDIR and cwd; its final state."""
    base = tmp_path_factory.mktemp("reliability")
    env = Env(base)
    c = tiny_config()
    c.data.data_dir = str(env.data)
    input_pipeline.load_split(c.data, "train")  # prepare digits before the run
    data_before = snapshot(env.data)
    wd = base / "ref"
    t0 = time.time()
    rc, err = env.run(wd)
    assert rc == 0, err[-3000:]
    elapsed = time.time() - t0
    outside = {
        "home": sorted(str(p.relative_to(env.home)) for p in env.home.rglob("*")),
        "tmp": sorted(str(p.relative_to(env.tmp)) for p in env.tmp.rglob("*")),
        "cwd": sorted(str(p.relative_to(env.cwd)) for p in env.cwd.rglob("*")),
        "data_changed": snapshot(env.data) != data_before,
    }
    built = experiment.build(c, str(wd))
    state, ckpt = built.state, built.ckpt
    ckpt.close()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    print(f"GUDJAX_TEST_SEED={SEED}; reference run {elapsed:.1f} s")
    return dict(env=env, base=base, wd=wd, stderr=err, outside=outside, abstract=abstract,
                final=restore(wd, abstract, N), rng=random.Random(SEED))


def restore(workdir, abstract, step):
    with Checkpointer(pathlib.Path(workdir) / "checkpoints") as ck:
        s, state, _ = ck.restore(abstract, step=step)
    assert s == step
    return jax.device_get(state)


def assert_bit_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()  # bit for bit (NaN-safe, -0.0 vs 0.0 distinct)


def copy_of_ref(ref, name: str) -> pathlib.Path:
    dst = ref["base"] / name
    shutil.copytree(ref["wd"], dst, symlinks=True)
    return dst


# ------------------------------------------------------------------ 6. workdir safety
@pytest.mark.slow
def test_run_writes_nothing_outside_workdir(ref):
    out = ref["outside"]
    # Only matplotlib writes to HOME: its font cache (~/.cache/matplotlib/fontlist-*.json,
    # built once per machine) and its empty config dir (~/.config/matplotlib); both move
    # with $MPLCONFIGDIR.
    home = {p for p in out["home"] if not re.fullmatch(r"\.cache/matplotlib/fontlist-.*\.json", p)}
    assert home <= {".cache", ".cache/matplotlib", ".config", ".config/matplotlib"}, out["home"]
    assert out["tmp"] == [] and out["cwd"] == [], out
    assert not out["data_changed"]
    names = set(os.listdir(ref["wd"]))
    assert {"config.json", "basis.npz", "checkpoints", "metrics.jsonl", "tb"} <= names
    assert committed(ref["wd"] / "checkpoints") == [12, 14, 16]  # keep-3
    assert [s for s, _ in loss_rows(ref["wd"])] == list(range(1, N + 1))


# ------------------------------------------------------------------ 1. kill -9
@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bit_identical(ref, tmp_path):
    """kill -9 at a random step, then kill -9 in the middle of an async checkpoint write
    (with keep_checkpoints=1, so the step being replaced is the only good one); the same
    command then finishes with the reference's parameters, bit for bit."""
    env, rng = ref["env"], ref["rng"]
    wd = tmp_path / "run"
    ck_dir = wd / "checkpoints"

    # (a) a random moment after the first checkpoint
    target = rng.randint(3, N - 5)
    p = env.start(wd, log="a")
    wait_for(p, lambda: committed(ck_dir) and last_logged_step(wd) >= target, f"step {target}")
    time.sleep(rng.uniform(0.0, 0.05))
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=60) == -signal.SIGKILL
    first_kill = k1 = committed(ck_dir)[-1]
    assert 2 <= k1 < N
    assert json.loads((wd / ".lock").read_text())["pid"] == p.pid  # left behind by kill -9

    # (b) during a checkpoint write, once keep-1 has deleted all older steps: the step
    # written before by this process is then the only good one
    for attempt in range(3):
        p = env.start(wd, "--config.train.keep_checkpoints=1", log=f"b{attempt}")
        resumed = f"resumed from checkpoint at step {k1}"
        wait_for(p, lambda p=p, r=resumed: r in stderr_of(p), resumed, interval=0.05)
        # the lock of the killed run (same host, PID gone) was taken over with a warning
        assert re.search(r"took over the workdir lock of a run that is gone \(host \S+, PID "
                         r"\d+, mode train, started .+\): process \d+ no longer exists",
                         stderr_of(p)), stderr_of(p)[-3000:]
        wait_for(p, lambda k=k1: tmp_dirs(ck_dir) and [s > k for s in committed(ck_dir)] == [True],
                 "a checkpoint write with a single committed step, written by this run")
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=60) == -signal.SIGKILL
        before, k1 = k1, committed(ck_dir)[-1]
        if tmp_dirs(ck_dir):
            break  # killed mid-write (else the write finished in between: try again)
    else:
        pytest.fail("could not kill during a checkpoint write in 3 attempts")
    good = committed(ck_dir)
    [partial] = tmp_dirs(ck_dir)
    assert len(good) == 1 and before < good[0] < int(partial.split(".")[0])
    print(f"kill -9 at step >= {target} (newest committed: {first_kill}); kill -9 during the "
          f"write {partial} (only committed step: {good[0]}; attempts: {attempt + 1})")

    # (c) the same command resumes from the last committed step and finishes
    rc, err = env.run(wd, log="c")
    assert rc == 0, err[-3000:]
    assert f"resumed from checkpoint at step {good[0]}" in err
    assert tmp_dirs(ck_dir) == []  # the partial write was ignored and cleaned up
    assert committed(ck_dir)[-1] == N
    assert_bit_identical(restore(wd, ref["abstract"], N), ref["final"])
    # the log lost nothing and holds no step twice, in metrics.jsonl and in TensorBoard
    assert loss_rows(wd) == loss_rows(ref["wd"])
    assert_metrics_once_per_step(wd, ref["wd"])
    assert not (wd / ".lock").exists()


# ------------------------------------------------------------------ 2. pre-emption
@pytest.mark.slow
def test_sigterm_checkpoints_exits_0_and_resumes(ref, tmp_path):
    env, rng = ref["env"], ref["rng"]
    wd = tmp_path / "run"
    ck_dir = wd / "checkpoints"
    target = rng.randint(3, N - 4)
    p = env.start(wd, log="a")
    wait_for(p, lambda: committed(ck_dir) and last_logged_step(wd) >= target, f"step {target}")
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 0, stderr_of(p)[-3000:]
    exit_s = time.time() - t0
    assert exit_s < 30, exit_s
    err = stderr_of(p)
    n = int(re.search(r"SIGTERM: checkpointing step (\d+) and exiting", err).group(1))
    assert target <= n < N
    assert committed(ck_dir)[-1] == n and tmp_dirs(ck_dir) == []  # written and committed
    assert f"pre-empted at step {n}" in err and not (wd / "samples.png").exists()
    assert not (wd / ".lock").exists()  # released on the way out
    rc, err = env.run(wd, log="b")
    assert rc == 0, err[-3000:]
    assert f"resumed from checkpoint at step {n}" in err and "took over" not in err
    assert_bit_identical(restore(wd, ref["abstract"], N), ref["final"])
    assert loss_rows(wd) == loss_rows(ref["wd"])
    assert_metrics_once_per_step(wd, ref["wd"])
    print(f"SIGTERM at step {n}: exit 0 after {exit_s:.2f} s")


# ------------------------------------------------------------------ 7. one writer
@pytest.mark.slow
def test_second_writer_is_refused_and_the_first_run_is_unaffected(ref, tmp_path):
    """While a training run owns the workdir, the same command (and --mode=sample) exits 2
    with one line naming the holder; the first run then finishes bit-identical to the
    reference, with every metric once. The first run is paused (SIGSTOP) while the others
    try, so they meet it however fast it trains."""
    env = ref["env"]
    wd = tmp_path / "run"
    p = env.start(wd, log="first")
    wait_for(p, lambda: committed(wd / "checkpoints"), "the first checkpoint", interval=0.01)
    p.send_signal(signal.SIGSTOP)
    try:
        holder = json.loads((wd / ".lock").read_text())
        assert holder["pid"] == p.pid and holder["mode"] == "train"
        second = [env.start(wd, log="second"), env.start(wd, "--mode=sample", log="sample")]
        for q in second:
            q.wait(timeout=300)
            err = stderr_of(q)
            assert q.returncode == 2 and "Traceback" not in err, err[-3000:]
            last = err.strip().splitlines()[-1]
            assert re.fullmatch(
                rf"error: workdir {re.escape(str(wd))} is in use by another run \(host "
                rf"{re.escape(holder['host'])}, PID {p.pid}, mode train, started .+\); wait "
                rf"for it to end or stop it, or use another --workdir \(if that run is gone for "
                rf"sure, delete {re.escape(str(wd / '.lock'))}\)", last), last
            assert sum(line.startswith("error:") for line in err.splitlines()) == 1
        assert json.loads((wd / ".lock").read_text())["token"] == holder["token"]
    finally:
        p.send_signal(signal.SIGCONT)
    assert p.wait(timeout=600) == 0, stderr_of(p)[-3000:]
    assert_bit_identical(restore(wd, ref["abstract"], N), ref["final"])
    assert loss_rows(wd) == loss_rows(ref["wd"])
    assert_metrics_once_per_step(wd, ref["wd"])
    assert not (wd / ".lock").exists() and not list(wd.glob("sample_*"))


# ------------------------------------------------------------------ 8. interrupted eval
EVAL = [
    "--mode=eval", "--config.eval.num_images=48", "--config.eval.batch_size=8",
    "--config.eval.fd=False", "--config.eval.baseline_ode_images=0",
    "--config.eval.bound_num_t=0", "--config.eval.rtol=1e-3", "--config.eval.atol=1e-3",
]
EVAL_CHUNKS = 6  # 48 images in batches of 8, one family point


def nll_chunks(workdir) -> list[str]:
    return sorted(p.name for p in (pathlib.Path(workdir) / "eval_chunks").glob("*/nll_*.npz"))


def comparable(workdir) -> dict:
    """eval.json without what may differ between two evals of the same numbers."""
    out = json.loads((pathlib.Path(workdir) / "eval.json").read_text())
    out.pop("workdir"), out.pop("seconds")
    for row in out["rows"]:
        row.pop("seconds")
    return out


@pytest.mark.slow
def test_eval_survives_kill9_and_sigterm_with_the_same_numbers(ref):
    """An eval killed with -9 after its first stored chunk, restarted, stopped by SIGTERM
    (exit 0 after the chunk in progress), and restarted again writes the eval.json of an
    uninterrupted eval, reusing the chunks stored before."""
    env = ref["env"]
    whole = copy_of_ref(ref, "eval_whole")
    rc, err = env.run(whole, *EVAL, log="eval")
    assert rc == 0, err[-3000:]
    assert f"eval: {EVAL_CHUNKS} chunk(s) computed, 0 reused" in err
    assert len(nll_chunks(whole)) == EVAL_CHUNKS
    expected = comparable(whole)

    wd = copy_of_ref(ref, "eval_cut")
    p = env.start(wd, *EVAL, log="kill")
    wait_for(p, lambda: nll_chunks(wd), "a stored eval chunk", interval=0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=60) == -signal.SIGKILL
    done1 = len(nll_chunks(wd))
    assert 1 <= done1 < EVAL_CHUNKS - 2 and not (wd / "eval.json").exists()

    p = env.start(wd, *EVAL, log="term")
    wait_for(p, lambda: len(nll_chunks(wd)) > done1, "one more chunk", interval=0.005)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=300) == 0, stderr_of(p)[-3000:]
    err = stderr_of(p)
    assert "took over the workdir lock" in err  # left by the kill -9
    assert re.search(r"pre-empted during eval \(SIGTERM; \d+ new chunk\(s\) stored in \S+\); "
                     r"run the same command again to continue", err), err[-3000:]
    done2 = len(nll_chunks(wd))
    assert done1 < done2 < EVAL_CHUNKS and not (wd / "eval.json").exists()
    assert not (wd / ".lock").exists()

    rc, err = env.run(wd, *EVAL, log="rest")
    assert rc == 0, err[-3000:]
    assert f"eval: {EVAL_CHUNKS - done2} chunk(s) computed, {done2} reused" in err
    assert comparable(wd) == expected
    print(f"eval: kill -9 after {done1} chunk(s), SIGTERM after {done2} of {EVAL_CHUNKS}")


# ------------------------------------------------------------------ 3. corruption
@pytest.mark.slow
def test_corrupt_newest_checkpoints_fall_back_to_older_one(ref):
    """Step 16 truncated, step 14 deleted: the run restores 12 (and says so), moves 14 and
    16 aside instead of deleting them, and, with keep_checkpoints=1, never deletes 12
    before a newer good step exists; the result equals the reference."""
    wd = copy_of_ref(ref, "corrupt")
    ck_dir = wd / "checkpoints"
    damage(ck_dir / "16", "truncate")
    damage(ck_dir / "14", "delete")
    rc, err = ref["env"].run(wd, "--config.train.keep_checkpoints=1")
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err  # no late TensorStore callback noise (gudjax.main)
    assert re.search(r"checkpoint step 16 in \S+ is unreadable \(.+\); trying an older", err)
    assert re.search(r"checkpoint step 14 in \S+ is unreadable \(.+\); trying an older", err)
    assert "restored checkpoint step 12" in err and "skipping unreadable steps [14, 16]" in err
    assert "resumed from checkpoint at step 12" in err
    assert committed(ck_dir) == [N]
    assert sorted(os.listdir(ck_dir / "unreadable")) == ["step_14", "step_16"]
    assert_bit_identical(restore(wd, ref["abstract"], N), ref["final"])


@pytest.mark.slow
def test_no_readable_checkpoint_refuses_to_start_and_changes_nothing(ref):
    wd = copy_of_ref(ref, "all_corrupt")
    for s, how in ((12, "delete"), (14, "truncate"), (16, "truncate")):
        damage(wd / "checkpoints" / str(s), how)
    before = snapshot(wd)
    rc, err = ref["env"].run(wd)
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no readable checkpoint in ") and "[16, 14, 12]" in last
    assert "fresh --workdir" in last
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1
    assert snapshot(wd) == before  # nothing written, moved or deleted


# ------------------------------------------------------------------ 4. non-finite loss
@pytest.mark.slow
def test_nan_stops_run_naming_the_step_and_keeps_checkpoints(ref):
    wd = copy_of_ref(ref, "nan")
    before = snapshot(wd / "checkpoints")
    rc, err = ref["env"].run(
        wd, "--config.optim.lr=1e30", "--config.optim.grad_clip=1e30",
        "--config.allow_config_change=True", f"--config.train.num_steps={N + 4}",
    )
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"error: (loss|parameters) became non-finite at step {N + 1}; last good checkpoint: "
        rf"step {N} \(kept\)\. Lower config\.optim\.lr or check the data", last), last
    assert snapshot(wd / "checkpoints") == before  # no NaN params written, nothing deleted


# ------------------------------------------------------------------ 5. bad input
# Schedule name, family min > max and batch size vs devices fail in validate_config like
# the basis/data/model names here; they are tested in-process in tests/test_train.py, and
# sampling without a checkpoint in tests/test_main_e2e.py.
BAD = {
    "basis": (["--config.basis.name=wavelet9"],
              r"unknown config\.basis\.name 'wavelet9'; allowed: dct, fourier, haar, pca, pixel"),
    "data": (["--config.data.name=mnist_nope"],
             r"unknown config\.data\.name 'mnist_nope'; allowed: digits, cifar10"),
    "model": (["--config.model.name=transformer"], r"unknown config\.model\.name 'transformer'"),
    "levels": (["--config.basis.levels=4"],
               r"config\.basis\.levels=4, config\.data\.image_size=8: haar basis with 4 levels "
               r"needs H and W divisible by 16"),
    "typo": (["--config.optim.lrr=0.5"],
             r"--config\.optim\.lrr: no such config field .*Did you mean \"lr\""),
    "type": (["--config.batch_size=abc"], r"--config\.batch_size=abc: invalid literal for int"),
    "change": (["--config.optim.lr=0.5"],
               r"workdir \S+ holds a run with a different config \(optim\.lr: \S+ → 0\.5\); "
               r"use a fresh --workdir or pass --config\.allow_config_change=True"),
}


@pytest.mark.slow
def test_bad_config_and_input_are_one_line_errors_through_the_cli(ref):
    env = ref["env"]
    base = ref["base"] / "bad"
    changed = copy_of_ref(ref, "changed")
    before = snapshot(changed)
    procs = {}
    for name, (args, _) in BAD.items():  # all at once: they only import and validate
        wd = changed if name == "change" else base / name
        procs[name] = env.start(wd, *args)
    for name, p in procs.items():
        p.wait(timeout=300)
        err = stderr_of(p)
        assert p.returncode == 2 and "Traceback" not in err, (name, err[-3000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and re.search(BAD[name][1], last), (name, last)
        assert sum(line.startswith("error:") for line in err.splitlines()) == 1, name
        if name != "change":
            assert not (base / name / "config.json").exists(), name
    assert snapshot(changed) == before


# ------------------------------------------------------------------ units
def test_trim_metrics_drops_rows_after_the_checkpoint_and_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 7)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "lo'  # cut by a kill
    path.write_text(text)
    train._trim_metrics(str(path), 4)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:4]
    train._trim_metrics(str(tmp_path / "absent.jsonl"), 4)  # fresh workdir: no file, no-op
    assert not (tmp_path / "absent.jsonl").exists()
