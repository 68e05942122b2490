"""The eval report: eval.json (`write_report`), the console table, the sweep plot."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax
import numpy as np

from gudjax.frechet import FD_KEYS


def write_report(report: dict, path: str) -> str:
    """eval.json: {format_version, gudjax, workdir, checkpoint_step, params, dataset, split,
    image_shape, dim, basis, schedule, trained_family, sweep, nll_settings (with levels),
    baseline {bpd, bpd_sem, ode_check, ...}, baselines {levels, gaussian_bpd,
    gaussian_bpd_se, categorical_bpd, categorical_bpd_se}, fd_settings {name,
    feature_extractor, num_generated, num_reference, sampler, steps, fd_train_vs_test,
    extractor_details}, fid_settings (same fields, standard FID; only with
    config.eval.inception_weights), rows [{family, standard_diffusion, in_trained_range,
    warnings, nll {bpd, bpd_sem, num_images, estimator, solver, rtol, atol, nfe_mean,
    gaussian_baseline_bpd, beats_baseline, categorical_baseline_bpd}, bound {bpd, bpd_se,
    num_t, terms {reconstruction, diffusion, prior, each with _se}}, fd {name, value,
    feature_extractor, num_generated, num_reference, sampler, steps}, fid {same, standard
    FID}, seconds}], plot}. fd_settings is None when the classifier FD is off."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=_json_default)
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, np.generic | np.ndarray | jax.Array):
        return np.asarray(o).tolist()
    return str(o)


def fmt_point(point: Mapping) -> str:
    return " ".join(f"{k}={v:g}" for k, v in point.items()) or "(fixed schedule)"


def row_line(row) -> str:
    nll = row["nll"]
    out = f"{fmt_point(row['family'])}: NLL {nll['bpd']:.4f} ± {nll['bpd_sem']:.4f} bpd"
    for key in FD_KEYS:
        if key in row:
            out += f", {row[key]['name']} {row[key]['value']:.4g}"
    return out + f" ({row['seconds']:.1f} s)"


def format_table(report: dict) -> str:
    """The console table of an eval report."""
    ns, b = report["nll_settings"], report["baseline"]
    lines = [
        f"gudjax eval | {report['workdir']} | step {report['checkpoint_step']} (EMA params) | "
        f"{report['dataset']} {report['split']} | basis {report['basis']['name']} "
        f"(whiten={report['basis']['whiten']}) | schedule {report['schedule'].get('name')}",
        f"NLL: {ns['estimator']}, {ns['solver']} rtol={ns['rtol']:g} atol={ns['atol']:g}, "
        f"{ns['num_images']} images, uniform dequantisation (seed {ns['dequantization_seed']})",
        f"baseline: best Gaussian N(mu, C) of the train data (closed form): "
        f"{b['bpd']:.4f} ± {b['bpd_sem']:.4f} bpd",
    ]
    bs = report.get("baselines")
    if bs:
        lines[1] += f" at {bs['levels']} levels"
        lines.append(
            f"baseline: independent per-pixel {bs['levels']}-way categorical (train counts, "
            f"add-1/2): {bs['categorical_bpd']:.4f} ± {bs['categorical_bpd_se']:.4f} bpd"
        )
    oc = b.get("ode_check")
    if oc:
        lines.append(
            f"  PF-ODE check (oracle score, {oc['num_images']} images): {oc['bpd_ode']:.4f} vs "
            f"exact p_0 {oc['bpd_p0_closed_form']:.4f} (max diff {oc['max_abs_diff_bpd']:.1e}); "
            f"p_0 − data Gaussian {oc['p0_minus_data_gaussian_bpd']:+.4f} bpd (finite γ(0))"
        )
    fds = [k for k in FD_KEYS if report.get(f"{k}_settings")]
    for key in fds:
        fd = report[f"{key}_settings"]
        lines.append(
            f"{fd['name']}: {fd['feature_extractor']}; {fd['num_generated']} generated "
            f"({fd['sampler']}, {fd['steps']} steps) vs {fd['num_reference']} "
            f"{report['split']} images; train-vs-test floor {fd['fd_train_vs_test']['value']:.4g}"
        )
    names = list(report["rows"][0]["family"]) if report["rows"] else []
    has_bound = any("bound" in r for r in report["rows"])
    header = (
        [*names, "NLL bpd", "± sem", "NFE"]
        + (["bound bpd", "recon", "diffusion", "prior"] if has_bound else [])
        + [report[f"{k}_settings"]["name"] for k in fds]
        + ["standard diffusion"]
    )
    table = []
    for r in report["rows"]:
        cells = [f"{r['family'][n]:g}" + ("" if r["in_trained_range"] else " (!)") for n in names]
        cells += [
            f"{r['nll']['bpd']:.4f}",
            f"{r['nll']['bpd_sem']:.4f}",
            f"{r['nll']['nfe_mean']:.0f}",
        ]
        if has_bound:
            bt = r.get("bound")
            cells += (
                [f"{bt['bpd']:.4f} ± {bt['bpd_se']:.4f}"]
                + [f"{bt['terms'][k]:.4f}" for k in ("reconstruction", "diffusion", "prior")]
                if bt
                else ["-"] * 4
            )
        cells += [f"{r[k]['value']:.4g}" for k in fds]
        cells.append(r["standard_diffusion"] or "-")
        table.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in table)) for i, h in enumerate(header)]
    fmt = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
    lines += [fmt(header), "-+-".join("-" * w for w in widths), *map(fmt, table)]
    if any(not r["in_trained_range"] for r in report["rows"]):
        lines.append("(!) outside the trained family range (see warnings in eval.json)")
    return "\n".join(lines)


def plot_sweep(report: dict, path: str) -> str:
    """NLL and FD against one family parameter (lines), or heat maps over two."""
    from gudjax.plotting import plt  # the Agg backend

    rows = report["rows"]
    names = list(rows[0]["family"])
    nll = np.array([r["nll"]["bpd"] for r in rows])
    fd_key = next((k for k in FD_KEYS if all(k in r for r in rows)), None)  # classifier first
    has_fd = fd_key is not None
    fd = np.array([r[fd_key]["value"] for r in rows]) if has_fd else None
    std = np.array([r["standard_diffusion"] is not None for r in rows])
    fd_name = rows[0][fd_key]["name"] if has_fd else ""
    base = report["baseline"]["bpd"]
    panels = 2 if has_fd else 1
    varying = [n for n in names if len({r["family"][n] for r in rows}) > 1]
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    axes = axes[0]
    std_label = next((r["standard_diffusion"] for r in rows if r["standard_diffusion"]), None)
    if len(varying) <= 1:
        n = varying[0] if varying else names[0]
        xs = np.array([r["family"][n] for r in rows])
        order = np.argsort(xs)
        err = np.array([r["nll"]["bpd_sem"] for r in rows])
        axes[0].errorbar(xs[order], nll[order], yerr=err[order], marker="o", label="model")
        axes[0].axhline(base, color="gray", ls="--", label="Gaussian baseline")
        axes[0].set_ylabel("NLL [bits/dim]")
        if has_fd:
            axes[1].plot(xs[order], fd[order], marker="o")
            axes[1].set_ylabel(fd_name)
        for ax in axes:
            ax.set_xlabel(n)
            for j, xv in enumerate(xs[std]):
                ax.axvline(xv, color="C3", ls=":", label=std_label if j == 0 else None)
            out = xs[[not r["in_trained_range"] for r in rows]]
            if len(out):
                ax.plot(
                    out,
                    (nll if ax is axes[0] else fd)[np.isin(xs, out)],
                    "x",
                    color="k",
                    ms=9,
                    label="outside trained range",
                )
        axes[0].legend(fontsize=7)
    else:
        n1, n2 = varying[:2]
        v1 = sorted({r["family"][n1] for r in rows})
        v2 = sorted({r["family"][n2] for r in rows})
        for ax, vals, title in zip(axes, [nll, fd], ["NLL [bits/dim]", fd_name], strict=False):
            grid = np.full((len(v1), len(v2)), np.nan)
            for r, val in zip(rows, vals, strict=True):
                grid[v1.index(r["family"][n1]), v2.index(r["family"][n2])] = val
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(v2)), [f"{v:g}" for v in v2])
            ax.set_yticks(range(len(v1)), [f"{v:g}" for v in v1])
            ax.set_xlabel(n2)
            ax.set_ylabel(n1)
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax)
            labelled = set()
            for r, is_std in zip(rows, std, strict=True):
                pos = (v2.index(r["family"][n2]), v1.index(r["family"][n1]))
                marks = [("*", "red", 14, std_label)] if is_std else []
                if not r["in_trained_range"]:
                    marks.append(("x", "orange", 10, "outside trained range"))
                for marker, color, ms, label in marks:
                    ax.plot(
                        *pos, marker, color=color, ms=ms, label=None if label in labelled else label
                    )
                    labelled.add(label)
            if labelled:
                ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"{report['dataset']} {report['basis']['name']} (whiten="
        f"{report['basis']['whiten']}), step {report['checkpoint_step']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
