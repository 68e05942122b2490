"""Expand a config's `sweep(add)` into runs and launch them: print, locally, or on a TPU pod.

    python -m experiments.sweep CONFIG[:ARG] [--launcher print|local|tpu-pod]
        [--workdir_root DIR] [--mode train|eval|sample] [--set FIELD=VALUE ...] [--dry_run]
        [--tpu NAME --zone ZONE [--project P] [--repo URL --ref REF] [--run]]

CONFIG is a configs/*.py file, ARG its argument (e.g. `configs/cifar10_pca.py:runlocal`).
Every `add(**overrides)` call of the config's `sweep` is one run (a config without `sweep`
is one run); see gudjax/config_base.py for what an override may be. Each run gets its own
workdir, derived from the config and the overrides:

    <workdir_root>/<config name>[_<ARG>]/<k1=v1,k2=v2>      (just .../<config name>[_<ARG>]
                                                               for a single run)

Every point is built and checked BEFORE anything is launched: an override that names no
config field (or a get_config argument the config does not declare) stops the sweep with
one line naming it. `--set FIELD=VALUE` adds a config-field override to every run (e.g.
`--set data.data_dir=/mnt/tfds`).

Launchers:
  print    the `python -m gudjax.main ...` command of every run (the default).
  local    runs them one after another in subprocesses. Resumable: a run whose workdir
           holds a committed checkpoint at step >= train.num_steps is skipped (train mode);
           an interrupted one resumes from its newest checkpoint. Stops at the first failure.
  tpu-pod  prints the gcloud commands that copy the code to every host of a TPU VM pod, set
           up the environment there (experiments/tpu/setup.sh: venv + requirements.txt +
           jax[tpu]) and start `python -m gudjax.main` on all hosts (--worker=all); with
           --run it executes them. The workdir root must be a path every host sees (an
           NFS/Filestore or gcsfuse mount); see experiments/tpu/README.md.
--dry_run: print what `local` / `tpu-pod --run` would run, run nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = ("print", "local", "tpu-pod")
MODES = ("train", "eval", "sample")


class SweepError(ValueError):
    """A one-line, user-caused sweep problem (bad config, bad override)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of a sweep: what `python -m gudjax.main` gets."""

    name: str  # the point's name ("" for a single run)
    config_path: str  # as given (relative paths stay relative)
    arg: str  # the merged get_config argument ("" = none)
    fields: tuple[tuple[str, Any], ...]  # (dotted field, value) overrides
    workdir: str
    num_steps: int  # train.num_steps of the built config (after overrides)

    @property
    def config_flag(self) -> str:
        return f"--config={self.config_path}" + (f":{self.arg}" if self.arg else "")

    def argv(self, mode: str = "train", python: str = "python") -> list[str]:
        out = [python, "-m", "gudjax.main", self.config_flag, f"--workdir={self.workdir}"]
        if mode != "train":
            out.append(f"--mode={mode}")
        out += [f"--config.{k}={format_value(v)}" for k, v in self.fields]
        return out

    def command(self, mode: str = "train", python: str = "python") -> str:
        return shlex.join(self.argv(mode, python))


# ------------------------------------------------------------------ expansion
def format_value(value: Any) -> str:
    """A value as ml_collections' config flags parse it back (bool → True/False)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return (
            "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    return str(value)


def load_config_module(path: str):
    if not path.endswith(".py"):
        raise SweepError(f"CONFIG {path!r} must be a configs/*.py file (CONFIG[:ARG])")
    if not os.path.exists(path):
        raise SweepError(f"config file {path} does not exist")
    name = "gudjax_sweep_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - reported as one line
        raise SweepError(f"cannot load config file {path}: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise SweepError(f"config file {path} has no get_config(arg)")
    return module


def split_spec(spec: str) -> tuple[str, str]:
    """'configs/x.py:runlocal,whiten=1' → ('configs/x.py', 'runlocal,whiten=1')."""
    path, _, arg = spec.partition(":")
    return path, arg


def sweep_points(module) -> list[dict[str, Any]]:
    """The overrides of every `add(...)` call of `module.sweep` ([{}] without a sweep)."""
    points: list[dict[str, Any]] = []

    def add(**overrides):
        points.append(dict(overrides))

    if hasattr(module, "sweep"):
        module.sweep(add)
    return points or [{}]


def _parse_arg(arg: str, declared) -> dict[str, str]:
    from gudjax.config_base import parse_arg

    return parse_arg(arg, declared)


def _join_arg(args: dict[str, str]) -> str:
    return ",".join(k if v == "" else f"{k}={v}" for k, v in args.items())


def _point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={format_value(v)}" for k, v in point.items())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name)


def _known_fields(config, prefix: str = "") -> list[str]:
    out = []
    for k in config.keys():
        v = config[k]
        path = f"{prefix}{k}"
        out.append(path)
        if hasattr(v, "keys") and not isinstance(v, str):
            out += _known_fields(v, path + ".")
    return out


def apply_field(config, field: str, value: Any, where: str) -> None:
    """Set config.<field> = value as --config.<field> would; one-line SweepError if it
    names no field or the value does not fit the field's type."""
    if value is None:
        raise SweepError(
            f"{where}: config field {field!r} = None cannot be passed as --config.{field}=...; "
            "set it in the config file instead; nothing was launched"
        )
    parts = field.split(".")
    node = config
    for i, part in enumerate(parts):
        is_last = i == len(parts) - 1
        if not hasattr(node, "keys") or part not in node.keys():
            close = difflib.get_close_matches(field, _known_fields(config), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepError(f"{where}: config has no field {field!r}{hint}; nothing was launched")
        if is_last:
            try:
                setattr(node, part, value)
            except (TypeError, ValueError) as e:
                reason = " ".join(str(e).split())
                raise SweepError(
                    f"{where}: value {value!r} does not fit config field {field!r} ({reason}); "
                    "nothing was launched"
                ) from None
        else:
            node = node[part]


def expand(
    spec: str,
    *,
    workdir_root: str = "workdirs",
    extra_fields: dict[str, Any] | None = None,
) -> list[Run]:
    """All runs of CONFIG[:ARG], each built and checked (raises SweepError before launch)."""
    path, base_arg = split_spec(spec)
    module = load_config_module(path)
    declared = getattr(module, "ARGS", {"runlocal": ("",)})
    try:
        base_args = _parse_arg(base_arg, declared)
    except ValueError as e:
        raise SweepError(f"{spec}: {e}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    run_dir = os.path.join(workdir_root, stem + (f"_{_safe(base_arg)}" if base_arg else ""))
    points = sweep_points(module)
    runs = []
    for i, point in enumerate(points):
        where = f"{path} sweep point {i + 1}/{len(points)} {point or ''}".rstrip()
        args = dict(base_args)
        fields: dict[str, Any] = {}
        for k, v in point.items():
            if k in declared:
                args[k] = "" if v is None else format_value(v)
            else:
                fields[k] = v
        for k, v in (extra_fields or {}).items():
            fields[k] = v
        arg = _join_arg(args)
        try:
            config = module.get_config(arg or None)
        except Exception as e:  # noqa: BLE001 - one line naming the point
            raise SweepError(
                f"{where}: get_config({arg!r}) failed: {e}; nothing was launched"
            ) from None
        for k, v in fields.items():
            apply_field(config, k, v, where)
        name = _safe(_point_name(point))
        workdir = os.path.join(run_dir, name) if len(points) > 1 or name else run_dir
        runs.append(
            Run(
                name=name,
                config_path=path,
                arg=arg,
                fields=tuple(fields.items()),
                workdir=workdir,
                num_steps=int(config.train.num_steps),
            )
        )
    names = [r.workdir for r in runs]
    dup = next((w for w in names if names.count(w) > 1), None)
    if dup:
        raise SweepError(f"{path}: two sweep points share the workdir {dup}; make them differ")
    return runs


# ------------------------------------------------------------------ local launcher
def finished_step(workdir: str) -> int | None:
    """Newest committed checkpoint step in `workdir` (None if none).

    A committed Orbax step is a directory named by the step number (writes go to
    `<step>.orbax-checkpoint-tmp*` and are renamed on commit) holding the `state` item.
    """
    ckpt = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt):
        return None
    steps = [
        int(d)
        for d in os.listdir(ckpt)
        if d.isdigit() and os.path.isdir(os.path.join(ckpt, d, "state"))
    ]
    return max(steps) if steps else None


def is_finished(run: Run) -> bool:
    step = finished_step(run.workdir)
    return step is not None and step >= run.num_steps


def launch_local(runs: list[Run], *, mode: str, dry_run: bool, out=None) -> int:
    out = out or sys.stdout
    n = len(runs)
    t_all = time.time()
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{n}] {run.name or os.path.basename(run.workdir)}"
        if mode == "train" and is_finished(run):
            print(
                f"{tag}: skipped, finished (checkpoint step {finished_step(run.workdir)} >= "
                f"train.num_steps={run.num_steps}) in {run.workdir}",
                file=out,
                flush=True,
            )
            continue
        cmd = run.argv(mode, python=sys.executable)
        print(f"{tag}: {run.command(mode)}", file=out, flush=True)
        if dry_run:
            continue
        t0 = time.time()
        rc = subprocess.run(cmd).returncode
        print(f"{tag}: exit {rc} after {time.time() - t0:.0f} s", file=out, flush=True)
        if rc != 0:
            print(
                f"error: run {i}/{n} failed (exit {rc}); fix it and run the same sweep command "
                "again: finished runs are skipped, this one resumes",
                file=sys.stderr,
            )
            return rc
    print(f"sweep done: {n} run(s) in {time.time() - t_all:.0f} s", file=out, flush=True)
    return 0


# ------------------------------------------------------------------ TPU pod launcher
def _gcloud(verb: str, zone: str, project: str | None) -> tuple[list[str], list[str]]:
    """(the gcloud tpu-vm command, its location flags)."""
    loc = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
    return ["gcloud", "compute", "tpus", "tpu-vm", verb], loc


def tpu_commands(
    runs: list[Run],
    *,
    mode: str,
    tpu: str,
    zone: str,
    project: str | None = None,
    repo: str | None = None,
    ref: str = "HEAD",
    remote_dir: str = "gudjax",
    setup: bool = True,
) -> list[tuple[str, list[str]]]:
    """(comment, argv) of every command: code copy, setup on every host, then the runs."""
    ssh, loc = _gcloud("ssh", zone, project)
    scp, _ = _gcloud("scp", zone, project)
    rd = shlex.quote(remote_dir)
    cmds: list[tuple[str, list[str]]] = []
    if setup:
        if repo:
            fetch = (
                f"(test -d {rd}/.git || git clone {shlex.quote(repo)} {rd}) && "
                f"git -C {rd} fetch -q origin && git -C {rd} checkout -q {shlex.quote(ref)}"
            )
        else:
            tarball = "/tmp/gudjax-src.tar.gz"
            cmds.append(
                (
                    "package the code (committed files at REF; commit first)",
                    ["git", "-C", ROOT, "archive", "--format=tar.gz", f"--output={tarball}", ref],
                )
            )
            cmds.append(
                (
                    "copy it to every host",
                    [*scp, tarball, f"{tpu}:gudjax-src.tar.gz", *loc, "--worker=all"],
                )
            )
            fetch = f"mkdir -p {rd} && tar -xzf gudjax-src.tar.gz -C {rd}"
        remote = f"{fetch} && cd {rd} && bash experiments/tpu/setup.sh tpu"
        cmds.append(
            (
                "set up the environment on every host (venv, requirements.txt, jax[tpu])",
                [*ssh, tpu, *loc, "--worker=all", "--command", remote],
            )
        )
    for i, run in enumerate(runs, 1):
        remote = f"cd {rd} && {run.command(mode, python='.venv/bin/python')}"
        cmds.append(
            (
                f"run {i}/{len(runs)} on all hosts: {run.name or run.workdir}",
                [*ssh, tpu, *loc, "--worker=all", "--command", remote],
            )
        )
    return cmds


def launch_tpu(cmds, *, run: bool, dry_run: bool, out=None) -> int:
    out = out or sys.stdout
    print("# TPU pod: every host runs the same command; jax.distributed connects them.", file=out)
    print(
        "# --workdir_root must be a directory all hosts see at the same path (NFS/Filestore "
        "or gcsfuse mount).",
        file=out,
    )
    for comment, argv in cmds:
        print(f"# {comment}", file=out)
        print(shlex.join(argv), file=out, flush=True)
        if run and not dry_run:
            rc = subprocess.run(argv).returncode
            if rc != 0:
                print(f"error: command failed (exit {rc}): {shlex.join(argv)}", file=sys.stderr)
                return rc
    return 0


# ------------------------------------------------------------------ CLI
def _parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise SweepError(
                f"--set {item!r}: use --set FIELD=VALUE, e.g. --set train.num_steps=10"
            )
        out[k.strip().removeprefix("config.")] = _coerce(v)
    return out


def _coerce(text: str) -> Any:
    """'10' → 10, '0.5' → 0.5, 'True' → True, '(0.4, 1.6)' → a tuple, else the string."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, bool | int | float | tuple) else text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("config", help="configs/<experiment>.py[:ARG]")
    p.add_argument("--launcher", choices=LAUNCHERS, default="print")
    p.add_argument("--workdir_root", default="workdirs")
    p.add_argument("--mode", choices=MODES, default="train", help="gudjax.main --mode of every run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="config-field override for every run (repeatable)",
    )
    p.add_argument("--dry_run", action="store_true", help="show what would run, run nothing")
    g = p.add_argument_group("tpu-pod")
    g.add_argument("--tpu", help="TPU VM name")
    g.add_argument("--zone", help="its zone, e.g. us-central2-b")
    g.add_argument("--project", help="GCP project (default: gcloud's)")
    g.add_argument("--repo", help="git URL every host clones (default: copy `git archive REF`)")
    g.add_argument("--ref", default="HEAD", help="commit/branch to run (default HEAD)")
    g.add_argument("--remote_dir", default="gudjax", help="code directory on the hosts")
    g.add_argument("--no_setup", action="store_true", help="skip the copy and setup commands")
    g.add_argument("--run", action="store_true", help="execute the gcloud commands")
    a = p.parse_args(argv)
    try:
        runs = expand(a.config, workdir_root=a.workdir_root, extra_fields=_parse_set(a.set))
        if a.launcher == "tpu-pod" and not (a.tpu and a.zone):
            raise SweepError("--launcher=tpu-pod needs --tpu=NAME and --zone=ZONE")
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.launcher == "print":
        for run in runs:
            print(run.command(a.mode))
        return 0
    if a.launcher == "local":
        return launch_local(runs, mode=a.mode, dry_run=a.dry_run)
    cmds = tpu_commands(
        runs,
        mode=a.mode,
        tpu=a.tpu,
        zone=a.zone,
        project=a.project,
        repo=a.repo,
        ref=a.ref,
        remote_dir=a.remote_dir,
        setup=not a.no_setup,
    )
    return launch_tpu(cmds, run=a.run, dry_run=a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
