"""NLL and FD against the family parameter, from eval JSON files (paper Figs. 3 and 5).

    python -m experiments.figures.family_results --out DIR EVAL_JSON [EVAL_JSON ...]
        [--labels "whitened,unwhitened"]

Input: eval.json files written by `--mode=eval` with a sweep (`gudjax.report.write_report`:
rows of {family, standard_diffusion, in_trained_range, nll {bpd, bpd_sem}, fd {name, value}};
FD is optional). Several files give several curves, e.g. the whitened and the unwhitened
PCA network (Fig. 3).

family_results.png/.pdf: for every file whose sweep varies one parameter, NLL (bits/dim,
± standard error over images) and FD against it; stars mark the points that equal standard
diffusion (as recorded by the evaluation), crosses points outside the trained range, dashed
lines the Gaussian baseline NLL and dotted lines the FD train-vs-test floor of each file.
family_results_grid.png/.pdf: for every file whose sweep is a 2-D grid (e.g. Haar level
softness a × column fraction b, or Fourier (a, r)), heat maps of NLL and FD with the values
written in the cells and the standard-diffusion points starred.

A missing or malformed file is a one-line error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from experiments.figures import common
from gudjax.plotting import plt

NAME = "family_results"


# ------------------------------------------------------------------ reading
def _fail(path: str, what: str):
    raise ValueError(f"eval file {path}: {what}")


def _number(path, row_i, value, field) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"rows[{row_i}].{field} is {value!r}, expected a number")
    return float(value)


def load_report(path: str) -> dict:
    """Read and check one eval.json; returns {'path', 'report', 'rows': [clean rows]}.

    Clean row: {family: {name: float}, bpd, sem, fd (float or None), fd_name, standard
    (str or None), in_range (bool)}. Raises a one-line ValueError on anything else.
    """
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        _fail(path, f"cannot read it ({e.strerror or e})")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as e:
        _fail(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")
    if not isinstance(report, dict) or "rows" not in report:
        _fail(path, "not a gudjax eval report (no 'rows'; write one with --mode=eval)")
    rows = report["rows"]
    if not isinstance(rows, list) or not rows:
        _fail(path, "'rows' must be a non-empty list of evaluated family points")
    clean = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            _fail(path, f"rows[{i}] is not an object")
        fam = r.get("family")
        if not isinstance(fam, dict):
            _fail(path, f"rows[{i}].family missing or not an object")
        nll = r.get("nll")
        if not isinstance(nll, dict) or "bpd" not in nll:
            _fail(path, f"rows[{i}].nll.bpd missing")
        fd = r.get("fd")
        if fd is not None and (not isinstance(fd, dict) or "value" not in fd):
            _fail(path, f"rows[{i}].fd has no 'value'")
        std = r.get("standard_diffusion")
        clean.append(
            {
                "family": {str(k): _number(path, i, v, f"family.{k}") for k, v in fam.items()},
                "bpd": _number(path, i, nll["bpd"], "nll.bpd"),
                "sem": _number(path, i, nll.get("bpd_sem", math.nan) or math.nan, "nll.bpd_sem"),
                "fd": None if fd is None else _number(path, i, fd["value"], "fd.value"),
                "fd_name": None if fd is None else str(fd.get("name", "FD")),
                "standard": str(std) if std else None,
                "in_range": bool(r.get("in_trained_range", True)),
            }
        )
    names = {tuple(sorted(r["family"])) for r in clean}
    if len(names) != 1:
        _fail(path, "rows have different family parameters")
    return {"path": path, "report": report, "rows": clean}


def varying(entry: dict) -> list[str]:
    """Family parameters that take more than one value in the file's rows (sweep order)."""
    names = list(entry["rows"][0]["family"])
    return [n for n in names if len({r["family"][n] for r in entry["rows"]}) > 1]


def default_label(entry: dict) -> str:
    rep = entry["report"]
    basis = rep.get("basis") or {}
    prior = {True: "whitened", False: "unwhitened"}.get(basis.get("whiten"), "")
    parts = [str(rep.get("dataset", "")), str(basis.get("name", "")), prior]
    return " ".join(p for p in parts if p) or os.path.basename(os.path.dirname(entry["path"]))


def _labels(entries, given: str | None) -> list[str]:
    if given:
        labels = [s.strip() for s in given.split(",")]
        if len(labels) != len(entries):
            raise ValueError(f"--labels has {len(labels)} entries for {len(entries)} eval file(s)")
        return labels
    labels = [default_label(e) for e in entries]
    if len(set(labels)) < len(labels):  # disambiguate by the run folder
        labels = [
            f"{lab} [{os.path.basename(os.path.dirname(os.path.abspath(e['path'])))}]"
            for lab, e in zip(labels, entries, strict=True)
        ]
    return labels


# ------------------------------------------------------------------ plotting
def _fd_name(entries) -> str | None:
    names = {r["fd_name"] for e in entries for r in e["rows"] if r["fd"] is not None}
    return " / ".join(sorted(names)) if names else None


def line_figure(entries, labels):
    """NLL (and FD) against the one varying parameter, one curve per file."""
    fd_name = _fd_name(entries)
    panels = 2 if fd_name else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.8), squeeze=False)
    axes = axes[0]
    xnames = []
    std_labels = set()
    refs: dict = {}
    for k, (e, label) in enumerate(zip(entries, labels, strict=True)):
        color = f"C{k % 10}"
        names = varying(e) or list(e["rows"][0]["family"])
        if not names:
            raise ValueError(
                f"eval file {e['path']}: rows have no family parameter to plot against"
            )
        n = names[0]
        xnames.append(n)
        rows = sorted(e["rows"], key=lambda r: r["family"][n])
        x = np.array([r["family"][n] for r in rows])
        bpd = np.array([r["bpd"] for r in rows])
        sem = np.array([r["sem"] for r in rows])
        axes[0].errorbar(
            x, bpd, yerr=np.nan_to_num(sem), marker="o", ms=5, color=color, capsize=3, label=label
        )
        base = (e["report"].get("baseline") or {}).get("bpd")
        if isinstance(base, int | float):
            _reference_line(axes[0], base, color, "--", "Gaussian baseline N(μ, C)", label, refs)
        series = [(axes[0], bpd)]
        fds = [r["fd"] for r in rows]
        if fd_name and all(v is not None for v in fds):
            fd = np.array(fds, float)
            axes[1].plot(x, fd, marker="o", ms=5, color=color, label=label)
            series.append((axes[1], fd))
            floor = (e["report"].get("fd_settings") or {}).get("fd_train_vs_test") or {}
            if isinstance(floor.get("value"), int | float):
                _reference_line(
                    axes[1], floor["value"], color, ":", "FD train vs test (floor)", label, refs
                )
        for ax, y in series:
            for r, xv, yv in zip(rows, x, y, strict=True):
                if r["standard"]:
                    lab = r["standard"]
                    ax.plot(
                        xv,
                        yv,
                        "*",
                        ms=17,
                        color=color,
                        mec="k",
                        mew=1,
                        zorder=5,
                        label=None if (ax, lab) in std_labels else lab,
                    )
                    std_labels.add((ax, lab))
                if not r["in_range"]:
                    lab = "outside trained range"
                    ax.plot(
                        xv,
                        yv,
                        "x",
                        ms=10,
                        mew=2,
                        color="k",
                        zorder=6,
                        label=None if (ax, lab) in std_labels else lab,
                    )
                    std_labels.add((ax, lab))
    xlabel = " / ".join(dict.fromkeys(xnames))
    axes[0].set_ylabel("NLL [bits/dim]")
    axes[0].set_title("negative log-likelihood (PF-ODE), ± s.e.m.", fontsize=10)
    if fd_name:
        axes[1].set_ylabel(fd_name)
        axes[1].set_title(f"sample quality: {fd_name} (lower is better)", fontsize=10)
    handles = {}
    for ax in axes:
        ax.set_xlabel(f"family parameter {xlabel}" + (" (softness)" if xlabel == "a" else ""))
        ax.grid(alpha=0.3)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.suptitle(_subtitle(entries), fontsize=9)
    fig.tight_layout()
    # one legend for both panels, below them (save() uses bbox_inches="tight")
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(3, len(handles)),
        fontsize=8.5,
    )
    return fig


def _reference_line(ax, value, color, ls, what, label, refs):
    """A horizontal reference line; files with the same value share one grey line, files
    with different values get one line each in their curve's colour."""
    key = (id(ax), what, round(float(value), 9))
    if key in refs:
        return
    shared = refs.setdefault((id(ax), what), [])
    if shared:  # a second value: colour and name every line by its file
        for line, c, lab in shared:
            line.set_color(c)
            line.set_label(f"{what}: {lab}")
        line = ax.axhline(value, color=color, ls=ls, lw=1.2, label=f"{what}: {label}")
    else:
        line = ax.axhline(value, color="0.4", ls=ls, lw=1.2, label=what)
    shared.append((line, color, label))
    refs[key] = line


def _mark_cell(ax, pos, marker, ms, colour, label, seen: set) -> None:
    """An open marker on a heat-map cell; each legend label only once (tracked in `seen`)."""
    ax.plot(*pos, marker, ms=ms, mfc="none", mec=colour, mew=2,
            label=None if label in seen else label)  # fmt: skip
    seen.add(label)


def grid_figure(entries, labels):
    """Heat maps of NLL and FD over a 2-D sweep, one row per file."""
    fd_name = _fd_name(entries)
    cols = 2 if fd_name else 1
    fig, axes = plt.subplots(
        len(entries), cols, figsize=(6.0 * cols, 4.8 * len(entries)), squeeze=False
    )
    for k, (e, label) in enumerate(zip(entries, labels, strict=True)):
        n1, n2 = varying(e)[:2]
        v1 = sorted({r["family"][n1] for r in e["rows"]})
        v2 = sorted({r["family"][n2] for r in e["rows"]})
        metrics = [("bpd", "NLL [bits/dim]", ".3f")]
        if fd_name:
            metrics.append(("fd", fd_name, ".3g"))
        for c, (key, title, fmt) in enumerate(metrics):
            ax = axes[k, c]
            grid = np.full((len(v1), len(v2)), np.nan)
            for r in e["rows"]:
                if r[key] is not None:
                    grid[v1.index(r["family"][n1]), v2.index(r["family"][n2])] = r[key]
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r")
            fig.colorbar(im, ax=ax, label=f"{title} (bright = better)")
            finite = grid[np.isfinite(grid)]
            mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
            for i in range(len(v1)):
                for j in range(len(v2)):
                    if np.isfinite(grid[i, j]):
                        ax.text(
                            j,
                            i,
                            format(grid[i, j], fmt),
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="k" if grid[i, j] < mid else "w",
                        )
            seen = set()
            for r in e["rows"]:
                pos = (v2.index(r["family"][n2]), v1.index(r["family"][n1]))
                if r["standard"]:
                    _mark_cell(ax, pos, "*", 22, "red", r["standard"], seen)
                if not r["in_range"]:
                    _mark_cell(ax, pos, "s", 24, "orange", "outside trained range", seen)
            ax.set_xticks(range(len(v2)), [f"{v:g}" for v in v2])
            ax.set_yticks(range(len(v1)), [f"{v:g}" for v in v1])
            ax.set_xlabel(n2)
            ax.set_ylabel(n1)
            ax.set_title(f"{label}: {title}", fontsize=10)
            if seen:
                ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.suptitle(_subtitle(entries), fontsize=9)
    fig.tight_layout()
    return fig


def _subtitle(entries) -> str:
    parts = []
    for e in entries:
        rep = e["report"]
        ns = rep.get("nll_settings") or {}
        fd = rep.get("fd_settings") or {}
        s = f"{os.path.basename(os.path.dirname(os.path.abspath(e['path'])))}: step "
        s += f"{rep.get('checkpoint_step', '?')}, NLL {ns.get('estimator', '?')} on "
        s += f"{ns.get('num_images', '?')} {rep.get('split', '')} images"
        if fd:
            s += f"; FD {fd.get('num_generated', '?')} samples ({fd.get('sampler', '?')}, "
            s += f"{fd.get('steps', '?')} steps) vs {fd.get('num_reference', '?')} reference"
        parts.append(s)
    return "\n".join(parts)


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("files", nargs="+", help="eval.json files (one curve or heat map each)")
    p.add_argument("--out", required=True, help="output folder for the PNG and PDF")
    p.add_argument("--labels", default=None, help="comma-separated curve labels, one per file")
    p.add_argument("--name", default=NAME, help="base name of the output files")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG")
    args = p.parse_args(argv)
    entries = [load_report(f) for f in args.files]
    labels = _labels(entries, args.labels)
    one_d = [(e, lab) for e, lab in zip(entries, labels, strict=True) if len(varying(e)) <= 1]
    two_d = [(e, lab) for e, lab in zip(entries, labels, strict=True) if len(varying(e)) >= 2]
    paths = []
    if one_d:
        paths += common.save(
            line_figure(*map(list, zip(*one_d, strict=True))), args.out, args.name, dpi=args.dpi
        )
    if two_d:
        paths += common.save(
            grid_figure(*map(list, zip(*two_d, strict=True))),
            args.out,
            f"{args.name}_grid",
            dpi=args.dpi,
        )
    return paths


if __name__ == "__main__":
    common.run(main)
