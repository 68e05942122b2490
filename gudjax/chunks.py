"""Resumable long jobs: results of independent chunks stored atomically as they finish.

A `ChunkStore` lives in `<root>/<digest>/`, where digest is a hash of a `key` dict: every
setting the results depend on (the parameters' bytes, the eval settings, the device
count, ...). Changed settings give another directory, so stale chunks are never reused;
the key is stored beside the chunks as `key.json` for humans. Each chunk is one file
(`<name>.npz` for arrays, `<name>.json` for JSON), written to a temp file, fsynced and
renamed: a kill leaves a chunk either complete or absent, and a damaged file is recomputed.

A job asks the store before computing each chunk (`cached`), so a restarted job continues
where it stopped and, computing every chunk exactly as before, produces the same numbers
as an uninterrupted one. `StopOnSigterm` turns SIGTERM into a flag that the job checks
between chunks (`ChunkStore.check_stop`): the current chunk finishes and is stored, then
`Interrupted` is raised and the caller exits 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import zipfile
from collections.abc import Callable, Mapping

import numpy as np

log = logging.getLogger("gudjax")

_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


class Interrupted(Exception):
    """SIGTERM arrived; the chunks finished so far are stored. Run the same command again."""

    def __init__(self, done: int, what: str):
        super().__init__(f"{what}: stopped after {done} new chunk(s)")
        self.done, self.what = done, what


class StopOnSigterm:
    """Context manager: SIGTERM sets `.requested` instead of ending the process.

    Installed only in the main thread of a single process (elsewhere `.requested` stays
    False and SIGTERM keeps its handler).
    """

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self) -> StopOnSigterm:
        with contextlib.suppress(ValueError):  # not the main thread
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None


def digest(obj) -> str:
    """A short stable hash of a JSON-able object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def array_digest(tree_leaves) -> str:
    """A hash of the bytes, shapes and dtypes of a sequence of arrays."""
    h = hashlib.sha256()
    for a in tree_leaves:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ChunkStore:
    """Chunk results under `<root>/<digest(key)>/` (see the module docstring).

    `stop` (a `StopOnSigterm`, optional) is consulted by `check_stop`. With `write=False`
    (e.g. a non-zero process) chunks are read but never written.
    """

    def __init__(
        self, root: str, key: Mapping, *, stop: StopOnSigterm | None = None, write: bool = True
    ):
        self.key = dict(key)
        self.directory = os.path.join(os.path.abspath(root), digest(self.key))
        self.stop = stop
        self.write = write
        self.new = 0  # chunks computed (not loaded) by this object
        self.loaded = 0
        if write:
            os.makedirs(self.directory, exist_ok=True)
            for name in os.listdir(self.directory):  # left by a kill mid-write (one writer:
                if name.endswith(".tmp"):  # the workdir lock)
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.directory, name))
            key_path = os.path.join(self.directory, "key.json")
            if not os.path.exists(key_path):
                self._atomic(
                    key_path,
                    lambda f: f.write(
                        json.dumps(
                            self.key, indent=1, sort_keys=True, default=_json_default
                        ).encode()
                    ),
                )

    # ------------------------------------------------------------------ files
    def _path(self, name: str, ext: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"chunk name {name!r} must match {_NAME.pattern}")
        return os.path.join(self.directory, f"{name}.{ext}")

    def _atomic(self, path: str, write: Callable) -> None:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))

    def load_arrays(self, name: str) -> dict[str, np.ndarray] | None:
        path = self._path(name, "npz")
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            log.warning("chunk %s is unreadable (%s); computing it again", path, e)
            return None

    def save_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        if self.write:
            self._atomic(
                self._path(name, "npz"),
                lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}),
            )

    def load_json(self, name: str):
        path = self._path(name, "json")
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)["value"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("chunk %s is unreadable (%s); computing it again", path, e)
            return None

    def save_json(self, name: str, value) -> None:
        if self.write:
            text = json.dumps({"value": value}, default=_json_default)
            self._atomic(self._path(name, "json"), lambda f: f.write(text.encode()))

    # ------------------------------------------------------------------ the job
    def cached_arrays(self, name: str, compute: Callable[[], Mapping[str, np.ndarray]]) -> dict:
        """The stored arrays of chunk `name`, or `compute()` stored now; then `check_stop`."""
        out = self.load_arrays(name)
        if out is None:
            out = {k: np.asarray(v) for k, v in compute().items()}
            self.save_arrays(name, out)
            self.new += 1
        else:
            self.loaded += 1
        self.check_stop(name)
        return out

    def cached_json(self, name: str, compute: Callable[[], object]):
        """The stored JSON value of chunk `name`, or `compute()` stored now; then `check_stop`."""
        out = self.load_json(name)
        if out is None:
            # a round trip, so a fresh value equals what a restarted job would load
            out = json.loads(json.dumps(compute(), default=_json_default))
            self.save_json(name, out)
            self.new += 1
        else:
            self.loaded += 1
        self.check_stop(name)
        return out

    def check_stop(self, what: str = "") -> None:
        """Raise `Interrupted` if SIGTERM arrived (the finished chunks are already stored)."""
        if self.stop is not None and self.stop.requested:
            raise Interrupted(self.new, what or "chunk store")
