"""The workdir lock (gudjax.workdir) and the chunk store of resumable jobs (gudjax.chunks).

Fast, in-process or with tiny `python -c` holders; the end-to-end cases (two training
runs on one workdir, kill -9 / SIGTERM during eval) are in tests/test_reliability.py.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gudjax import chunks, workdir

HOLDER = """
import sys, time
from gudjax import workdir
with workdir.hold(sys.argv[1], "train"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def start_holder(wd, seconds=60.0):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(wd), str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def write_record(wd, **fields):
    rec = {"host": socket.gethostname(), "pid": 1, "mode": "train", "token": "x" * 32,
           "start_time": "2026-01-01 00:00:00 UTC", "heartbeat": time.time(), **fields}
    os.makedirs(wd, exist_ok=True)
    with open(os.path.join(wd, ".lock"), "w") as f:
        json.dump(rec, f)
    return rec


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------ the lock
def test_hold_writes_the_record_and_removes_it(tmp_path):
    wd = tmp_path / "run"
    with workdir.hold(str(wd), "eval") as rec:
        on_disk = workdir.read_lock(str(wd))
        assert on_disk["pid"] == os.getpid() and on_disk["host"] == socket.gethostname()
        assert on_disk["mode"] == "eval" and on_disk["token"] == rec["token"]
        assert {"start_time", "heartbeat", "pid_start"} <= set(on_disk)
        with workdir.hold(str(wd), "eval"):  # re-entrant in one process
            pass
        assert workdir.read_lock(str(wd))["token"] == rec["token"]
    assert os.listdir(wd) == []  # no lock, no temp files


def test_hold_releases_on_exception(tmp_path):
    with pytest.raises(KeyError), workdir.hold(str(tmp_path), "train"):
        raise KeyError("boom")
    assert not os.path.exists(tmp_path / ".lock")


def test_missing_workdir_is_not_created_without_create(tmp_path):
    with workdir.hold(str(tmp_path / "absent"), "sample", create=False) as rec:
        assert rec is None
    assert not (tmp_path / "absent").exists()


def test_live_holder_refuses_a_second_writer_with_one_line(tmp_path):
    p = start_holder(tmp_path)
    try:
        with pytest.raises(workdir.WorkdirLocked) as e, workdir.hold(str(tmp_path), "train"):
            pass
        msg = str(e.value)
        assert "\n" not in msg
        assert f"PID {p.pid}" in msg and f"host {socket.gethostname()}" in msg
        assert "mode train" in msg and "started " in msg and "another --workdir" in msg
        assert workdir.read_lock(str(tmp_path))["pid"] == p.pid  # untouched
    finally:
        p.kill()
        p.wait()


def test_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    pid = dead_pid()
    write_record(tmp_path, pid=pid)
    with caplog.at_level(logging.WARNING, "gudjax"), workdir.hold(str(tmp_path), "train"):
        assert workdir.read_lock(str(tmp_path))["pid"] == os.getpid()
    assert f"process {pid} no longer exists" in caplog.text
    assert not os.path.exists(tmp_path / ".lock")


def test_lock_of_a_killed_holder_is_taken_over(tmp_path, caplog):
    p = start_holder(tmp_path)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert workdir.read_lock(str(tmp_path))["pid"] == p.pid  # left behind by kill -9
    with caplog.at_level(logging.WARNING, "gudjax"), workdir.hold(str(tmp_path), "train"):
        pass
    assert "took over the workdir lock" in caplog.text


def test_reused_pid_is_stale(tmp_path):
    # our own PID, but recorded with another kernel start time: a reused PID
    rec = write_record(tmp_path, pid=os.getpid(), pid_start="1")
    if workdir._proc_start(os.getpid())[0] is None:
        pytest.skip("no /proc")
    assert "belongs to another process" in workdir.stale_reason(rec)


def test_other_host_heartbeat_age_decides(tmp_path):
    now = time.time()
    fresh = {"host": "elsewhere", "pid": 7, "heartbeat": now - 10}
    assert workdir.stale_reason(fresh, now=now) is None
    old = dict(fresh, heartbeat=now - workdir.STALE_AFTER_S - 1)
    assert "heartbeat" in workdir.stale_reason(old, now=now)
    write_record(tmp_path, **fresh)
    with pytest.raises(workdir.WorkdirLocked, match="host elsewhere, PID 7"):
        with workdir.hold(str(tmp_path), "eval"):
            pass
    write_record(tmp_path, **old)
    with workdir.hold(str(tmp_path), "eval"):
        assert workdir.read_lock(str(tmp_path))["host"] == socket.gethostname()


def test_heartbeat_refreshes_and_notices_a_lost_lock(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(workdir, "HEARTBEAT_S", 0.05)
    with caplog.at_level(logging.ERROR, "gudjax"), workdir.hold(str(tmp_path), "train") as rec:
        t0 = workdir.read_lock(str(tmp_path))["heartbeat"]
        deadline = time.time() + 10
        while workdir.read_lock(str(tmp_path))["heartbeat"] == t0 and time.time() < deadline:
            time.sleep(0.02)
        assert workdir.read_lock(str(tmp_path))["heartbeat"] > t0
        write_record(tmp_path, host="elsewhere", token="y" * 32)  # someone took it over
        lock = workdir._HELD[workdir.lock_path(str(tmp_path))]
        while not lock.lost and time.time() < deadline:
            time.sleep(0.02)
        assert lock.lost and rec["token"] != "y" * 32
    assert "lost the workdir lock" in caplog.text
    assert workdir.read_lock(str(tmp_path))["token"] == "y" * 32  # not removed: not ours


def test_sigterm_while_holding_releases_the_lock(tmp_path):
    p = start_holder(tmp_path)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    assert not os.path.exists(tmp_path / ".lock")


# ------------------------------------------------------------------ the chunk store
def test_chunk_store_round_trip_and_key(tmp_path):
    key = {"params": "abc", "rtol": 1e-5}
    s = chunks.ChunkStore(str(tmp_path), key)
    calls = []

    def compute():
        calls.append(1)
        return {"bpd": np.arange(3.0), "nfe": np.int64(7)}

    a = s.cached_arrays("p0_b0", compute)
    b = chunks.ChunkStore(str(tmp_path), dict(key)).cached_arrays("p0_b0", compute)
    assert len(calls) == 1 and np.array_equal(a["bpd"], b["bpd"]) and int(b["nfe"]) == 7
    assert json.load(open(os.path.join(s.directory, "key.json"))) == key
    other = chunks.ChunkStore(str(tmp_path), {**key, "rtol": 1e-4})  # changed settings
    assert other.directory != s.directory and other.load_arrays("p0_b0") is None
    assert s.cached_json("row0", lambda: {"x": 0.1 + 0.2}) == {"x": 0.1 + 0.2}
    assert s.load_json("row0") == {"x": 0.1 + 0.2}
    assert not [n for n in os.listdir(s.directory) if n.endswith(".tmp")]
    open(os.path.join(s.directory, "p0_b1.npz.123.tmp"), "w").close()  # a kill mid-write
    chunks.ChunkStore(str(tmp_path), key)
    assert not [n for n in os.listdir(s.directory) if n.endswith(".tmp")]
    with pytest.raises(ValueError, match="chunk name"):
        s.load_arrays("../evil")


def test_damaged_chunk_is_recomputed(tmp_path, caplog):
    s = chunks.ChunkStore(str(tmp_path), {"k": 1})
    s.save_arrays("c", {"v": np.ones(4)})
    path = os.path.join(s.directory, "c.npz")
    with open(path, "r+b") as f:
        f.truncate(10)
    with caplog.at_level(logging.WARNING, "gudjax"):
        out = s.cached_arrays("c", lambda: {"v": np.zeros(4)})
    assert np.array_equal(out["v"], np.zeros(4)) and "unreadable" in caplog.text
    assert np.array_equal(s.load_arrays("c")["v"], np.zeros(4))


def test_sigterm_stops_between_chunks(tmp_path):
    with chunks.StopOnSigterm() as stop:
        s = chunks.ChunkStore(str(tmp_path), {"k": 2}, stop=stop)
        s.cached_arrays("c0", lambda: {"v": np.ones(1)})
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested
        with pytest.raises(chunks.Interrupted):
            s.cached_arrays("c1", lambda: {"v": np.ones(1)})
    assert s.load_arrays("c1") is not None  # the chunk in progress was finished and stored
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
