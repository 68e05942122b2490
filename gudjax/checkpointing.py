"""Checkpoints of a run's state: the only module in gudjax that imports Orbax.

A run's workdir is its identity: starting a run in a workdir resumes it.
`Checkpointer` wraps an Orbax `CheckpointManager` whose every step directory holds two
items,

    <directory>/<step>/state   the state pytree (StandardSave: OCDBT/zarr arrays, no pickle)
    <directory>/<step>/meta    a JSON dict: the caller's meta + format_version + gudjax_version

Saves are asynchronous by default: `save` returns once the arrays are copied off the
devices, the files are written in a background thread, and `wait()` (or `close()`, or the
next `save`) blocks until they are committed.

Restoring tries steps newest -> oldest. A step that cannot be read (truncated or deleted
array files, an empty step directory, unparsable metadata) is logged and skipped; a step
that reads fine but does not fit `abstract_state` (tree structure, shape or dtype), or was
written by a newer format, raises `CheckpointError` at once: older steps of the same run
would not fit either, and silently training from an older step would hide the mistake.

Retention (`max_to_keep`) never leaves a run without a good checkpoint. What this relies on
in Orbax 0.12.8 (`CheckpointManager.save` / `_finalize`, `AsyncCheckpointer`):
  1. a step is written into `<step>.orbax-checkpoint-tmp*` and renamed to `<step>` only
     after every array write and the metadata have succeeded; a crash mid-save leaves only
     the tmp directory, which restores ignore (and `cleanup_tmp_directories` removes);
  2. old steps beyond `max_to_keep` are deleted only after that commit has succeeded
     (`_finalize` waits for the commit, re-raises its error, and deletes afterwards), so a
     failing save - synchronous or in the background - deletes nothing;
  3. steps skipped as unreadable by a `restore` that then fell back to an older step
     would still count towards `max_to_keep` and, being newer than the step restored, make
     Orbax skip saves up to their step number. They are therefore moved (never deleted)
     to `<directory>/unreadable/` by the first `save` after that restore, with a warning.
     When no step is readable nothing is moved or deleted.
Tests in tests/test_checkpointing.py pin 1 and 2 by making a save fail.

RNG keys are never checkpointed: a typed PRNG key leaf in `state` is refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gudjax import __version__ as _GUDJAX_VERSION

FORMAT_VERSION: int = 1

_STATE = "state"
_META = "meta"
_UNREADABLE_DIR = "unreadable"
_FIX_MISMATCH = "use the config this run was trained with, or a fresh --workdir"
_FIX_CORRUPT = "move the directory away or pass a fresh --workdir"

log = logging.getLogger(__name__)


class _OrphanedReadErrorFilter(logging.Filter):
    """Drops asyncio's "exception was never retrieved" tracebacks for TensorStore reads.

    When Orbax reads a damaged checkpoint it gathers many TensorStore reads; the first
    failure is raised (and reported by `restore` as one line), and the sibling reads that
    failed too are garbage-collected later, at which point asyncio logs each with a full
    traceback. Those repeat an error already reported, so they are dropped; any other
    orphaned exception is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        orphaned = "exception was never retrieved" in str(record.msg)
        return not (orphaned and exc is not None and "tensorstore_spec=" in str(exc))


def _late_read_callback_hook(default):
    """sys.unraisablehook that drops 'RuntimeError: Event loop is closed' and passes the rest.

    When one array of a damaged checkpoint fails to read, Orbax ends the restore and closes
    its event loop while the reads of the other arrays are still in flight; as they finish,
    their done-callbacks (TensorStore threads) call loop.call_soon_threadsafe on the closed
    loop, and the error goes to sys.unraisablehook: up to one traceback per array, around
    the one-line message. They are harmless (the restore already failed and was reported).
    """

    def hook(unraisable):
        if (
            unraisable.exc_type is RuntimeError
            and unraisable.object is None
            and str(unraisable.exc_value) == "Event loop is closed"
        ):
            return
        default(unraisable)

    hook.gudjax_late_read_filter = True
    return hook


def quiet_read_error_echoes() -> None:
    """Silence the echoes of a failed checkpoint read, once per process (idempotent).

    Installs `_OrphanedReadErrorFilter` on the "asyncio" logger and `_late_read_callback_hook`
    as sys.unraisablehook. `Checkpointer.restore` / `restore_meta` call it before reading;
    nothing is installed when this module is imported.
    """
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _OrphanedReadErrorFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(_OrphanedReadErrorFilter())
    if not getattr(sys.unraisablehook, "gudjax_late_read_filter", False):
        sys.unraisablehook = _late_read_callback_hook(sys.unraisablehook)


class CheckpointError(ValueError):
    """A checkpoint problem the user can fix; the message is one line and says how."""


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` of the root cause, on one line, without TensorStore's spec dumps."""
    for _ in range(10):  # Orbax wraps TensorStore errors in a generic Exception: unwrap.
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    text = str(exc).split(" [tensorstore_spec=")[0]
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _key_str(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_str(path: tuple) -> str:
    """('params', 'w') -> 'params/w'; namedtuple fields and tuple indices alike."""
    return "/".join(_key_str(k) for k in path) or "<root>"


def _leaves_by_path(tree: Any) -> dict[str, Any]:
    return {_path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...] | None, np.dtype | None]:
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    if shape is None and isinstance(leaf, int | float | bool | np.number):
        shape, dtype = (), np.asarray(leaf).dtype
    return (tuple(shape) if shape is not None else None), (
        np.dtype(dtype) if dtype is not None else None
    )


def _describe(shape, dtype) -> str:
    return f"{shape if shape is not None else '?'} {dtype if dtype is not None else ''}".strip()


def _first_mismatch(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """One-line description of where a stored tree differs from the wanted one, or None."""
    problems: list[str] = []
    for path, want in wanted.items():
        if path not in stored:
            problems.append(f"leaf '{path}' is missing from the checkpoint")
            continue
        s_shape, s_dtype = _shape_dtype(stored[path])
        w_shape, w_dtype = _shape_dtype(want)
        shape_bad = s_shape is not None and w_shape is not None and s_shape != w_shape
        dtype_bad = s_dtype is not None and w_dtype is not None and s_dtype != w_dtype
        if shape_bad or dtype_bad:
            problems.append(
                f"leaf '{path}' is {_describe(s_shape, s_dtype)} in the checkpoint but "
                f"{_describe(w_shape, w_dtype)} in the model"
            )
    for path in stored:
        if path not in wanted:
            problems.append(f"the checkpoint has leaf '{path}' that the model lacks")
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more leaves differ)" if len(problems) > 1 else ""
    return problems[0] + more


def _check_no_prng_keys(state: Any) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            raise ValueError(
                f"state leaf '{_path_str(path)}' is a PRNG key array; do not checkpoint RNG "
                "keys - derive them from the config seed and the step (fold_in) instead"
            )


class _Unreadable(Exception):
    """Internal: this step cannot be read; carries the one-line reason."""


class Checkpointer:
    """Saves and restores a run's state pytree + a JSON meta dict under `directory`.

    Usage (the training loop):

        with Checkpointer(workdir / "checkpoints", max_to_keep=3) as ckpt:
            restored = ckpt.restore(abstract_state)      # None on a fresh workdir
            if restored is not None:
                step, state, meta = restored
            ...
            ckpt.save(step, state, meta={"config": config.to_dict()})
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int = 3,
        async_save: bool = True,
    ):
        if not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"max_to_keep must be an integer >= 1, got {max_to_keep!r}")
        self._directory = os.path.abspath(os.fspath(directory))
        self._async = bool(async_save)
        self._unreadable: set[int] = set()  # steps restore() found unreadable
        self._pending: int | None = None  # last async step not yet confirmed by wait()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=self._async,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=options,
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            },
        )

    # ------------------------------------------------------------------ properties
    @property
    def directory(self) -> str:
        return self._directory

    def all_steps(self) -> list[int]:
        """Steps present (committed or being saved by this object), ascending."""
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------ saving
    def save(
        self,
        step: int,
        state: Any,
        *,
        meta: dict | None = None,
        wait: bool = False,
    ) -> None:
        """Saves `state` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`.

        Returns as soon as the arrays are off the devices unless `wait` or the Checkpointer
        is synchronous. Raises CheckpointError if this save, or the previous async save
        that it waits for, failed (older checkpoints are then left untouched).
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        _check_no_prng_keys(state)
        full_meta = dict(meta or {})
        full_meta["format_version"] = FORMAT_VERSION
        full_meta.setdefault("gudjax_version", _GUDJAX_VERSION)
        try:
            json.dumps(full_meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta must be JSON-serialisable: {_one_line(e)}") from None

        self._quarantine_unreadable()
        latest = self.latest_step()
        if latest is not None and step <= latest:
            level = logging.INFO if step == latest else logging.WARNING
            log.log(
                level,
                "checkpoint step %d not saved: %s already holds step %d",
                step,
                self._directory,
                latest,
            )
            return

        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(full_meta)}
        )
        previous = self._pending
        try:
            self._manager.save(step, args=args)
        except Exception as e:
            which = f"step {step}" if previous is None else f"step {step} or async step {previous}"
            self._pending = None
            raise CheckpointError(
                f"saving checkpoint {which} to {self._directory} failed ({_one_line(e)}); "
                "older checkpoints were kept"
            ) from e
        self._pending = step if self._async else None
        if wait:
            self.wait()

    def _quarantine_unreadable(self) -> None:
        """Moves steps restore() found unreadable to <directory>/unreadable/ (never deletes)."""
        if not self._unreadable:
            return
        moved = []
        if jax.process_index() == 0:
            target_root = os.path.join(self._directory, _UNREADABLE_DIR)
            os.makedirs(target_root, exist_ok=True)
            for step in sorted(self._unreadable):
                src = os.path.join(self._directory, str(step))
                if not os.path.isdir(src):
                    continue
                dst = os.path.join(target_root, f"step_{step}")
                n = 1
                while os.path.exists(dst):
                    dst = os.path.join(target_root, f"step_{step}.{n}")
                    n += 1
                shutil.move(src, dst)
                moved.append((step, dst))
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("gudjax_checkpointing_quarantine")
        self._unreadable.clear()
        self._manager.reload()
        for step, dst in moved:
            log.warning("moved unreadable checkpoint step %d to %s", step, dst)

    def wait(self) -> None:
        """Blocks until pending async saves are committed; raises CheckpointError on failure."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            pending, self._pending = self._pending, None
            raise CheckpointError(
                f"saving checkpoint step {pending} to {self._directory} failed "
                f"({_one_line(e)}); older checkpoints were kept"
            ) from e
        self._pending = None

    # ------------------------------------------------------------------ restoring
    def restore(
        self, abstract_state: Any, *, step: int | None = None
    ) -> tuple[int, Any, dict] | None:
        """Restores the newest readable step (or exactly `step`) shaped like `abstract_state`.

        `abstract_state` leaves are jax.ShapeDtypeStruct (their `.sharding`, e.g. a
        replicated NamedSharding, is used when set) or concrete arrays used as targets.

        Returns (step, state, meta), or None when `directory` holds no checkpoint.
        Raises CheckpointError when no step is readable, when the readable step does not
        match `abstract_state`, or when it was written by a newer format.
        """
        quiet_read_error_echoes()
        self.wait()
        self._manager.reload()
        steps = self.all_steps()
        if not steps:
            return None
        if step is not None:
            step = int(step)
            if step not in steps:
                raise CheckpointError(
                    f"no checkpoint step {step} in {self._directory} (available steps: {steps})"
                )
            candidates = [step]
        else:
            candidates = sorted(steps, reverse=True)

        wanted = _leaves_by_path(abstract_state)
        failures: list[str] = []
        skipped: list[int] = []
        for s in candidates:
            try:
                state, meta = self._restore_step(s, abstract_state, wanted)
            except _Unreadable as e:
                reason = str(e)
                failures.append(f"step {s}: {reason}")
                skipped.append(s)
                if step is None:
                    log.warning(
                        "checkpoint step %d in %s is unreadable (%s); trying an older step",
                        s,
                        self._directory,
                        reason,
                    )
                continue
            if skipped:
                # Only after a successful fallback: with nothing readable, nothing is moved.
                self._unreadable.update(skipped)
                log.warning(
                    "restored checkpoint step %d from %s after skipping unreadable steps %s; "
                    "they will be moved to %s at the next save",
                    s,
                    self._directory,
                    sorted(skipped),
                    os.path.join(self._directory, _UNREADABLE_DIR),
                )
            else:
                log.info("restored checkpoint step %d from %s", s, self._directory)
            return s, state, meta

        tried = [int(c) for c in candidates]
        raise CheckpointError(
            f"no readable checkpoint in {self._directory} (tried steps {tried}): "
            + "; ".join(failures)
            + f"; {_FIX_CORRUPT}"
        )

    def _read_meta(self, step: int) -> dict:
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
            )
            meta = restored[_META]
        except Exception as e:
            raise _Unreadable(f"meta: {_one_line(e)}") from e
        if not isinstance(meta, dict):
            raise _Unreadable(f"meta: expected a JSON object, got {type(meta).__name__}")
        return meta

    def _check_format(self, step: int, meta: dict) -> None:
        version = meta.get("format_version")
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not (1 <= version <= FORMAT_VERSION)
        ):
            raise CheckpointError(
                f"checkpoint step {step} in {self._directory} has format_version "
                f"{version!r} but this gudjax (v{_GUDJAX_VERSION}) reads versions 1.."
                f"{FORMAT_VERSION}; upgrade gudjax or pass a fresh --workdir"
            )

    def _restore_step(self, step: int, abstract_state: Any, wanted: dict) -> tuple[Any, dict]:
        meta = self._read_meta(step)
        self._check_format(step, meta)

        # Structure / shape / dtype check against the stored array metadata. A failure to
        # read the metadata means the step is unreadable; a difference is the user's
        # config not matching the run, which older steps would share: raise.
        try:
            tree_meta = self._manager.item_metadata(step)[_STATE]
            if tree_meta is None:
                raise ValueError("no array metadata")
            stored = _leaves_by_path(getattr(tree_meta, "tree", tree_meta))
        except Exception as e:
            raise _Unreadable(f"state metadata: {_one_line(e)}") from e
        problem = _first_mismatch(stored, wanted)
        if problem is not None:
            raise CheckpointError(
                f"checkpoint step {step} in {self._directory} does not match the model: "
                f"{problem}; {_FIX_MISMATCH}"
            )

        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        _STATE: ocp.args.StandardRestore(
                            abstract_state,
                            # Used only where a leaf has no sharding and the saved one
                            # cannot be rebuilt (e.g. saved on more devices than exist now).
                            fallback_sharding=jax.sharding.SingleDeviceSharding(
                                jax.local_devices()[0]
                            ),
                        )
                    }
                ),
            )
            state = restored[_STATE]
        except Exception as e:
            raise _Unreadable(f"state: {_one_line(e)}") from e
        return state, meta

    def restore_meta(self, step: int | None = None) -> dict | None:
        """The meta dict of `step` (default: the newest step whose meta is readable).

        Returns None when the directory holds no checkpoint. The dict is returned as
        stored (its format_version is not checked here; `restore` checks it).
        """
        quiet_read_error_echoes()
        self.wait()
        self._manager.reload()
        steps = self.all_steps()
        if not steps:
            return None
        if step is not None:
            step = int(step)
            if step not in steps:
                raise CheckpointError(
                    f"no checkpoint step {step} in {self._directory} (available steps: {steps})"
                )
            candidates = [step]
        else:
            candidates = sorted(steps, reverse=True)
        failures = []
        for s in candidates:
            try:
                return self._read_meta(s)
            except _Unreadable as e:
                failures.append(f"step {s}: {e}")
                if step is None:
                    log.warning(
                        "checkpoint meta of step %d in %s is unreadable (%s)", s, self._directory, e
                    )
        raise CheckpointError(
            f"no readable checkpoint meta in {self._directory} (tried steps {candidates}): "
            + "; ".join(failures)
            + f"; {_FIX_CORRUPT}"
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Waits for pending saves, then releases Orbax's threads."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # Do not mask the exception already propagating.
            self.close()
        except Exception:
            log.exception("closing the checkpointer for %s failed", self._directory)
