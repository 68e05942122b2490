"""One writer per workdir: `hold(workdir, mode)` owns `<workdir>/.lock` for a run's lifetime.

The lock file is JSON: host, pid (and the PID's kernel start time on Linux), start time,
mode (train, eval, sample), a random token and a heartbeat timestamp that a daemon thread
refreshes every `HEARTBEAT_S` seconds. It is created complete or not at all (written to a
private temp file, then hard-linked to `.lock`, which fails if `.lock` exists: atomic on
local file systems and NFS), and removed when the run ends: normal return, exception,
SIGTERM.

A second writer is refused with `WorkdirLocked` (one line naming the holder and the fix),
unless the holder is gone:
- same host: the holder's PID no longer exists (or is a zombie, or now belongs to a
  process started at another time): the lock is taken over with a warning;
- another host (a shared file system): the holder is presumed gone when its heartbeat is
  older than `STALE_AFTER_S` seconds (default 600, `$GUDJAX_LOCK_STALE_S`); the lock is
  then taken over with a warning. A live holder refreshes it every 30 s
  (`$GUDJAX_LOCK_HEARTBEAT_S`), so only a dead or frozen host loses its lock.

Multi-process runs: process 0 holds the lock, the other processes of the same run take
none (`hold` yields None there). Nested `hold` calls in one process are re-entrant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid

log = logging.getLogger("gudjax")

LOCK_NAME = ".lock"
HEARTBEAT_S = float(os.environ.get("GUDJAX_LOCK_HEARTBEAT_S", 30))
STALE_AFTER_S = float(os.environ.get("GUDJAX_LOCK_STALE_S", 600))

_HELD: dict[str, _Lock] = {}  # lock path -> the lock this process holds (re-entrancy)


class WorkdirLocked(RuntimeError):
    """Another live run owns the workdir."""


def lock_path(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), LOCK_NAME)


def read_lock(workdir: str) -> dict | None:
    """The holder record of `<workdir>/.lock` (None: no lock, or not a readable record)."""
    return _read(lock_path(workdir))


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "pid" in rec and "host" in rec else None


def _proc_start(pid: int) -> tuple[str | None, str | None]:
    """(kernel start time, state letter) of `pid` from /proc (Linux), else (None, None)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19], fields[0]
    except (OSError, IndexError):
        return None, None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_start(pid)[1] != "Z"  # a zombie has ended


def describe(rec: dict) -> str:
    """'host H, PID P, mode M, started T' of a holder record."""
    return (
        f"host {rec.get('host')}, PID {rec.get('pid')}, mode {rec.get('mode')}, "
        f"started {rec.get('start_time')}"
    )


def stale_reason(rec: dict, *, now: float | None = None) -> str | None:
    """Why the holder `rec` is gone (then its lock may be taken over), or None if it may live."""
    now = time.time() if now is None else now
    if rec.get("host") == socket.gethostname():
        pid = int(rec["pid"])
        if not _alive(pid):
            return f"process {pid} no longer exists on this host"
        start = _proc_start(pid)[0]
        if rec.get("pid_start") and start and start != rec["pid_start"]:
            return f"PID {pid} now belongs to another process"
        return None
    age = now - float(rec.get("heartbeat", 0))
    if age > STALE_AFTER_S:
        return f"its heartbeat is {age:.0f} s old (> {STALE_AFTER_S:.0f} s, another host)"
    return None


class _Lock:
    def __init__(self, path: str, mode: str):
        self.path, self.mode = path, mode
        self.token = uuid.uuid4().hex
        self.count = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        now = time.time()
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _proc_start(os.getpid())[0],
            "start_time": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now)),
            "start_unix": now,
            "mode": mode,
            "command": " ".join(sys.argv)[:500],
            "token": self.token,
            "heartbeat": now,
        }

    def _tmp(self) -> str:
        return f"{self.path}.{self.token}.tmp"

    def _write_tmp(self) -> str:
        tmp = self._tmp()
        with open(tmp, "w") as f:
            json.dump(self.record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def acquire(self) -> None:
        for _ in range(50):
            tmp = self._write_tmp()
            try:
                os.link(tmp, self.path)  # fails if the lock exists; never a half-written lock
                return
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            holder = _read(self.path)
            if holder is None:  # vanished, or a foreign/damaged file
                if os.path.exists(self.path) and time.time() - _mtime(self.path) < 5:
                    time.sleep(0.2)
                    continue
                holder = {"host": "?", "pid": "?", "token": None}
                why = "the lock file is not a lock record"
            else:
                why = stale_reason(holder)
                if why is None:
                    raise WorkdirLocked(
                        f"workdir {os.path.dirname(self.path)} is in use by another run "
                        f"({describe(holder)}); wait for it to end or stop it, or use another "
                        f"--workdir (if that run is gone for sure, delete {self.path})"
                    )
            self._take_over(holder, why)
        raise WorkdirLocked(f"cannot take the lock {self.path} (it keeps changing); try again")

    def _take_over(self, holder: dict, why: str) -> None:
        grab = f"{self.path}.takeover.{self.token}"
        try:
            os.rename(self.path, grab)  # atomic: of several takers only one moves it
        except FileNotFoundError:
            return
        got = _read(grab)
        if got is not None and got.get("token") != holder.get("token"):
            with contextlib.suppress(FileExistsError):  # a fresh lock: put it back
                os.link(grab, self.path)
            os.unlink(grab)
            return
        os.unlink(grab)
        log.warning(
            "took over the workdir lock of a run that is gone (%s): %s", describe(holder), why
        )

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(
            target=self._beat, name="gudjax-lock-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            cur = _read(self.path)
            if cur is None or cur.get("token") != self.token:
                self.lost = True
                log.error(
                    "lost the workdir lock %s to %s; another run may now write this workdir",
                    self.path,
                    describe(cur) if cur else "nobody",
                )
                return
            self.record["heartbeat"] = time.time()
            try:
                os.replace(self._write_tmp(), self.path)
            except OSError as e:  # pragma: no cover - a full or vanished file system
                log.warning("cannot refresh the workdir lock %s: %s", self.path, e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        cur = _read(self.path)
        if cur is not None and cur.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp())


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def hold(workdir: str, mode: str, *, create: bool = True):
    """Own `workdir` for the duration of the block (see the module docstring).

    Yields the lock record (a dict), or None on a non-zero process of a multi-process run
    and, with create=False, when the workdir does not exist (nothing there to protect; the
    caller reports the missing run). Raises `WorkdirLocked` if another live run owns it.
    While held in the main thread of a single process, SIGTERM (with no handler installed)
    raises SystemExit(143) so that the lock is released; the training loop and evaluation
    install their own handlers, which exit 0 after a checkpoint or a finished chunk.
    """
    import jax

    if jax.process_index() != 0:
        yield None
        return
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        if not create:
            yield None
            return
        os.makedirs(workdir, exist_ok=True)
    path = lock_path(workdir)
    lock = _HELD.get(path)
    if lock is None:
        lock = _Lock(path, mode)
        lock.acquire()
        lock.start_heartbeat()
        _HELD[path] = lock
    lock.count += 1
    old = None
    if lock.count == 1 and jax.process_count() == 1:
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                old = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield dict(lock.record)
    finally:
        if old is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, old)
        lock.count -= 1
        if lock.count == 0:
            del _HELD[path]
            lock.release()
