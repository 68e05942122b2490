"""The family study: which member of a schedule family is best, chosen on held-out data
from one network, over several training seeds (docs/maths.md §10).

    python -m experiments.family_study CONFIG[:ARG] [--quick] [--workdir W] [--seeds 0,1,2]
        [--grid "a=0:2:5"] [--validation_every 10] [--num_images N] [--set FIELD=VALUE ...]
        --json PATH

Per seed k (config.seed = k) the config's network is trained, or resumed, in `W/seed<k>`
by gudjax's own training entry point (`gudjax.train.train_and_evaluate`), with:
  - a validation split: config.data.validation_every = m (default 10) holds out every m-th
    stored training example; the network never trains on it, and every choice is made on it;
  - matched end points: the family CLIPPED (config.schedule.clip = True, docs/maths.md §3.6),
    so every member shares each component's γ̃(0) and γ̃(1) and the NLLs of different
    members differ by model quality, not by end-point effects. A config whose family is
    unclipped is switched to clip, and the JSON says so (`family_clip`).
Then every grid point is evaluated from the same EMA parameters on the same dequantised
images (common random numbers): the PF-ODE NLL on validation and on test (`gudjax.nll`, at
the data's own levels), and the variational bound with its three terms on test
(`gudjax.bound`). The best member of a seed is the lowest validation NLL; it is a "tie"
when it differs from the standard-diffusion member (e.g. a = 0) by less than 2 standard
errors of the paired per-image difference (same images, same probes): "no member is better
than standard diffusion" is a valid result. The test split is only reported.

Across seeds every row gets mean ± standard error (over seeds; with one seed, over images).
Baselines (fitted on the training split, measured on the same test images): the full-
covariance Gaussian and the independent per-pixel categorical at the data's levels
(`gudjax.baselines`). The oracle numbers check the matched end points: with the exact score
of the data's Gaussian (in the run's basis), the bound of every grid member and of an
unrelated path with the same end points (the family with other ordering labels) spreads by
`oracle_invariance_max_diff_bpd` (≈ 0), the unclipped family by
`oracle_unmatched_max_diff_bpd` (docs/maths.md §10).

Resumable: training resumes from its checkpoints; every NLL batch and bound of every point
is stored atomically as it finishes (`gudjax.chunks`, under `W/seed<k>/study_chunks/`) and
reused by a restart, so a study killed part-way recomputes nothing it finished. SIGTERM
stops after the current chunk (exit 0); run the same command again.

--quick: the config's `runlocal` form with a tiny network (model.ch=8), 1 seed, 3 grid
points, 32 validation and 32 test images, Hutchinson divergence (one probe) at rtol = atol =
1e-4: a few minutes on 2 CPU cores.
Outputs: the JSON (format in `run_study`), a PNG of validation NLL vs the family parameter
next to it (same name, .png), and a table on stdout.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import logging
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import gudjax
from gudjax import baselines, bound, chunks, frechet, input_pipeline, nll, schedules, sweeps
from gudjax.config_base import load_config_file
from gudjax.evaluate import bound_record, eval_settings, nll_description
from gudjax.run import USER_ERRORS
from gudjax.score_model import family_arrays, network_model
from gudjax.train import train_and_evaluate
from gudjax.workdir import hold

log = logging.getLogger("gudjax")

VALIDATION_EVERY = 10
#: --quick: config fields set on top of the config's runlocal form
QUICK_FIELDS = {
    "model.ch": 8,
    "model.token_dim": 16,
    "train.num_steps": 300,
    "eval.divergence": "hutchinson",  # exact: D = 64 JVPs per step, ~4 s per image here
    "eval.num_probes": 1,
    "eval.rtol": 1e-4,
    "eval.atol": 1e-4,
    "eval.bound_num_t": 4,
    "eval.batch_size": 32,
}
QUICK_IMAGES = 32
QUICK_GRID_POINTS = 3
GRID_POINTS = 5
ORACLE_IMAGES = 16


# ------------------------------------------------------------------ config
def _coerce(text: str):
    """'10' → 10, '0.5' → 0.5, 'True' → True, '(1, 2)' → a tuple, else the string."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, bool | int | float | tuple) else text


def set_field(config, field: str, value) -> None:
    """config.<field> = value (dotted); a field the config does not have is a one-line error."""
    node, parts = config, field.split(".")
    for part in parts[:-1]:
        if not hasattr(node, "keys") or part not in node.keys():
            raise ValueError(f"--set {field}: the config has no field {field!r}")
        node = node[part]
    if not hasattr(node, "keys") or parts[-1] not in node.keys():
        raise ValueError(f"--set {field}: the config has no field {field!r}")
    try:
        setattr(node, parts[-1], value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--set {field}={value!r}: {' '.join(str(e).split())}") from None


def study_config(spec: str, *, quick: bool, sets=(), validation_every: int = VALIDATION_EVERY):
    """(config, notes): CONFIG[:ARG] loaded (with `runlocal` under --quick), the quick and
    --set fields applied, the validation split on and the family clipped."""
    path, _, arg = spec.partition(":")
    args = [a for a in arg.split(",") if a.strip()]
    if quick and "runlocal" not in args:
        args.append("runlocal")
    config = load_config_file(path, ",".join(args) or None)
    fields = dict(QUICK_FIELDS) if quick else {}
    for item in sets:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ValueError(f"--set {item!r}: use --set FIELD=VALUE, e.g. --set model.ch=8")
        fields[k.strip().removeprefix("config.")] = _coerce(v.strip())
    for k, v in fields.items():
        set_field(config, k, v)
    config.train.progress = False
    config.data.validation_every = int(validation_every)
    name = config.schedule.name
    if not schedules.family_params(name):
        raise ValueError(f"config.schedule.name={name!r} has no family parameters to study")
    clip = {"clip": None, "switched_on": False}
    if "clip" in schedules.get_family(name).options:
        had = config.schedule.get("clip", None)
        default = bool(getattr(schedules.get_family(name), "clip_default", False))
        was = default if had is None else bool(had)
        config.schedule.clip = True
        clip = {
            "clip": True,
            "switched_on": not was,
            "note": "the config's family is unclipped; clip switched on (matched end points)"
            if not was
            else "the config's family is clipped (matched end points)",
        }
    else:
        clip["note"] = f"schedule {name!r} has no clip option: end points as the config defines"
    return config, {"fields": {k: v for k, v in fields.items()}, "family_clip": clip}


def default_grid(config, quick: bool) -> str:
    """'a=lo:hi:n' for every range of config.family (n = 3 quick, 5 full)."""
    fam = dict(config.get("family", {}))
    if not fam:
        raise ValueError("config.family is empty: give the family points with --grid 'a=0:2:5'")
    n = QUICK_GRID_POINTS if quick else GRID_POINTS
    return ";".join(f"{k}={float(lo):g}:{float(hi):g}:{n}" for k, (lo, hi) in fam.items())


# ------------------------------------------------------------------ oracle invariance
def _other_labels(config, basis) -> str | None:
    labels = config.schedule.get("labels", None)
    avail = [k for k in getattr(basis, "labels", {}) if k != labels]
    for pref in ("variance", "frequency", "level", "index"):
        if pref in avail:
            return pref
    return avail[0] if avail else None


def _oracle_spread(orc, z, members) -> tuple[float, list[float]]:
    vals = []
    for sched, point in members:
        fam = family_arrays(point) or None
        gf = lambda t, s=sched, f=fam: s.gamma(t, f)  # noqa: E731
        vals.append(float(bound.oracle_bound_bpd(orc, gf, z, kinks=sched.kinks(fam)).mean()))
    return max(vals) - min(vals), vals


def oracle_invariance(config, basis, fit, x, grid) -> dict:
    """The exact-score bound (data Gaussian `fit` in `basis`) over the clipped grid plus an
    unrelated path with the same end points, and over the unclipped grid."""
    orc = baselines.gaussian_oracle(fit, basis)
    z = np.asarray(basis.encode(jnp.asarray(x[:ORACLE_IMAGES])), np.float64)
    cfg = dict(config.schedule)
    name = cfg.pop("name")
    matched = schedules.make_schedule(name, basis, **cfg)
    members = [(matched, p) for p in grid]
    other = _other_labels(config, basis)
    out = {"num_images": int(len(z)), "other_path": None}
    if other is not None and "labels" in cfg:
        alt = schedules.make_schedule(name, basis, **{**cfg, "labels": other})
        members.append((alt, grid[len(grid) // 2]))
        out["other_path"] = {"labels": other, "family": grid[len(grid) // 2]}
    out["matched_max_diff_bpd"], out["matched_bpd"] = _oracle_spread(orc, z, members)
    if "clip" in cfg:
        soft = schedules.make_schedule(name, basis, **{**cfg, "clip": False})
        out["unmatched_max_diff_bpd"], out["unmatched_bpd"] = _oracle_spread(
            orc, z, [(soft, p) for p in grid]
        )
    else:
        out["unmatched_max_diff_bpd"], out["unmatched_bpd"] = None, None
    out["note"] = (
        "exact Gaussian score (mean and covariance of the training split) in the run's basis; "
        "bound of each member in bits/dim without offsets, spread = max - min over members"
    )
    return out


# ------------------------------------------------------------------ one seed
def _tag(point: dict) -> str:
    return "p" + chunks.digest({k: float(v) for k, v in point.items()})


def evaluate_seed(config, workdir: str, grid, val_x, test_x, s, stop) -> dict:
    """Train (or resume) in `workdir`, then NLL (validation, test) and bound (test) of every
    grid point, each chunk stored as it finishes."""
    result = train_and_evaluate(config, workdir)
    if result["preempted"]:
        raise chunks.Interrupted(0, f"training in {workdir} (checkpointed)")
    basis, schedule = result["basis"], result["schedule"]
    params = jax.device_get(result["state"]["ema_params"])
    levels = input_pipeline.levels(config.data)
    nll_kw = dict(levels=levels, **nll.settings_options(s))
    num_t = int(s.get("bound_num_t") or 0) or 8
    with hold(workdir, "eval"):
        store = chunks.ChunkStore(
            os.path.join(workdir, "study_chunks"),
            {
                "job": "family_study",
                "gudjax": gudjax.__version__,
                "params": chunks.array_digest(jax.tree.leaves(params)),
                "validation": chunks.array_digest([val_x]),
                "test": chunks.array_digest([test_x]),
                "devices": jax.device_count(),
                "nll": nll_kw,
                "bound_num_t": num_t,
                "seed": int(s["seed"]),
            },
            stop=stop,
        )
        model = network_model(result["graphdef"], params, basis, schedule)
        points = []
        for point in grid:
            t0 = time.time()
            m = model.with_family(point)
            tag = _tag(point)
            val = nll.nll_bpd(m, val_x, seed=int(s["seed"]) + 1, store=store,
                              chunk_prefix=f"val_{tag}", **nll_kw)
            test = nll.nll_bpd(m, test_x, seed=int(s["seed"]) + 1, store=store,
                               chunk_prefix=f"test_{tag}", **nll_kw)
            bnd = store.cached_json(
                f"bound_{tag}", lambda m=m: bound_record(m, test_x, s, levels, num_t)
            )
            points.append({"family": point, "val": val["bpd"], "test": test["bpd"],
                           "bound": bnd, "nfe": float(np.mean(test["nfe"]))})
            log.info("study %s %s: val %.4f test %.4f bound %.4f bits/dim (%.1f s)",
                     os.path.basename(workdir), point, np.mean(val["bpd"]),
                     np.mean(test["bpd"]), bnd["bpd"], time.time() - t0)
    std = [sweeps.standard_diffusion_label(schedule, basis, p) for p in grid]
    return {"step": int(result["step"]), "points": points, "standard": std, "basis": basis,
            "chunks_computed": store.new, "chunks_reused": store.loaded}


def choose(points, standard) -> dict:
    """The lowest validation NLL of one seed and its comparison with standard diffusion
    (paired per-image difference on the validation images; tie within 2 SE)."""
    means = [float(np.mean(p["val"])) for p in points]
    best = int(np.argmin(means))
    ref = next((i for i, lab in enumerate(standard) if lab), None)
    out = {"index": best, "family": points[best]["family"], "val_bpd": means[best],
           "standard_index": ref}
    if ref is None:
        out["verdict"] = "no standard-diffusion member in the grid"
        return out
    d_mean, d_se = nll.mean_sem(points[best]["val"] - points[ref]["val"])
    t_mean, t_se = nll.mean_sem(points[best]["test"] - points[ref]["test"])
    out.update(val_minus_standard_bpd=d_mean, val_minus_standard_se=d_se,
               test_minus_standard_bpd=t_mean, test_minus_standard_se=t_se)
    if best == ref:
        out["verdict"] = "standard diffusion is best"
    elif not abs(d_mean) >= 2 * d_se:  # also a tie when the SE is undefined
        out["verdict"] = "tie"
    else:
        out["verdict"] = "better than standard diffusion"
    return out


# ------------------------------------------------------------------ across seeds
def _mean_se(values, fallback_se=None):
    v = np.asarray(values, np.float64)
    if len(v) > 1:
        return nll.mean_sem(v)
    return float(v[0]), fallback_se


def summarise(grid, seeds, per_seed) -> tuple[list, dict]:
    """Rows (mean ± SE over seeds; one seed: SE over images) and the overall selection."""
    rows = []
    for i, point in enumerate(grid):
        ps = [r["points"][i] for r in per_seed]
        img = [(nll.mean_sem(p["val"]), nll.mean_sem(p["test"])) for p in ps]
        row = {**{k: float(v) for k, v in point.items()}, "family": dict(point),
               "standard_diffusion": per_seed[0]["standard"][i]}
        row["val_bpd"], row["val_bpd_se"] = _mean_se([a[0] for a, _ in img], img[0][0][1])
        row["test_bpd"], row["test_bpd_se"] = _mean_se([b[0] for _, b in img], img[0][1][1])
        bounds = [p["bound"] for p in ps]
        row["bound_bpd"], row["bound_bpd_se"] = _mean_se(
            [b["bpd"] for b in bounds], bounds[0]["bpd_se"])
        row["terms"] = {}
        for k in bound.TERMS:
            row["terms"][k], row["terms"][f"{k}_se"] = _mean_se(
                [b["terms"][k] for b in bounds], bounds[0]["terms"][f"{k}_se"])
        row["per_seed"] = [
            {"seed": sd, "val_bpd": a[0], "val_bpd_se": a[1], "test_bpd": b[0],
             "test_bpd_se": b[1], "bound": p["bound"], "test_nfe_mean": p["nfe"]}
            for sd, (a, b), p in zip(seeds, img, ps, strict=True)
        ]
        rows.append(row)
    choices = [choose(r["points"], r["standard"]) for r in per_seed]
    best = int(np.argmin([r["val_bpd"] for r in rows]))
    ref = next((i for i, lab in enumerate(per_seed[0]["standard"]) if lab), None)
    sel = {"family": dict(grid[best]), "index": best,
           "val_bpd": rows[best]["val_bpd"], "val_bpd_se": rows[best]["val_bpd_se"],
           "test_bpd": rows[best]["test_bpd"], "test_bpd_se": rows[best]["test_bpd_se"],
           "per_seed": [{"seed": sd, **c} for sd, c in zip(seeds, choices, strict=True)]}
    if ref is None:
        sel["verdict"] = "no standard-diffusion member in the grid"
    elif best == ref:
        sel["verdict"] = "standard diffusion is best"
    else:
        diffs = [float(np.mean(r["points"][best]["val"] - r["points"][ref]["val"]))
                 for r in per_seed]
        if len(diffs) > 1:
            d_mean, d_se = nll.mean_sem(diffs)
        else:
            d_mean, d_se = choices[0]["val_minus_standard_bpd"], choices[0]["val_minus_standard_se"]
        sel["val_minus_standard_bpd"], sel["val_minus_standard_se"] = d_mean, d_se
        sel["verdict"] = "tie" if not abs(d_mean) >= 2 * d_se else "better than standard diffusion"
    if ref is not None:
        sel["standard"] = {"family": dict(grid[ref]), "test_bpd": rows[ref]["test_bpd"],
                           "test_bpd_se": rows[ref]["test_bpd_se"]}
    return rows, sel


# ------------------------------------------------------------------ the study
def read_images(config, split: str, num, seed: int, levels: int):
    u8 = frechet.read_split(config.data, split, num)
    return u8, nll.dequantize_uniform(u8, seed, levels)


def run_study(spec, *, workdir, seeds=(0,), grid=None, quick=False, sets=(),
              validation_every=VALIDATION_EVERY, num_images=None, stop=None) -> dict:
    """The study (module docstring). JSON: levels, baselines {gaussian_bpd(_se),
    categorical_bpd(_se)}, rows [{<params>, family, val_bpd(_se), test_bpd(_se),
    bound_bpd(_se), terms, per_seed}], selected {<params>}, selection, the oracle spreads,
    seeds, settings and wall time."""
    t_start = time.time()
    config, notes = study_config(spec, quick=quick, sets=sets, validation_every=validation_every)
    s = eval_settings(config)
    names = schedules.family_params(config.schedule.name)
    base = sweeps.family_member(config)
    grid_spec = grid or default_grid(config, quick)
    points = [{**base, **p} for p in sweeps.parse_sweep(grid_spec, names)]
    if not points:
        raise ValueError(f"--grid {grid_spec!r} has no points")
    levels = input_pipeline.levels(config.data)
    num = num_images or (QUICK_IMAGES if quick else None)  # None: the whole split
    _, val_x = read_images(config, "validation", num, int(s["seed"]) + 7, levels)
    test_u8, test_x = read_images(config, "test", num, int(s["seed"]), levels)
    log.info("family study: %d points, seeds %s, %d validation / %d test images, %d levels",
             len(points), list(seeds), len(val_x), len(test_x), levels)

    per_seed = []
    for seed in seeds:
        config.seed = int(seed)
        per_seed.append(
            evaluate_seed(config, os.path.join(workdir, f"seed{seed}"), points, val_x, test_x,
                          s, stop)
        )
    basis = per_seed[0]["basis"]

    # baselines: fitted on the training split (without the validation images)
    fit = baselines.fit_gaussian(input_pipeline.fit_batches(config.data, batch_size=256),
                                 levels=levels)
    cat = baselines.fit_categorical(input_pipeline.fit_batches(config.data, batch_size=256),
                                    levels=levels)
    g, g_se = nll.mean_sem(fit.bpd(test_x))
    c, c_se = nll.mean_sem(cat.bpd(test_u8))
    rows, selection = summarise(points, list(seeds), per_seed)
    orc = oracle_invariance(config, basis, fit, test_x, points)
    out = {
        "format_version": 1,
        "gudjax": gudjax.__version__,
        "config": spec,
        "quick": bool(quick),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "workdir": os.path.abspath(workdir),
        "dataset": config.data.name,
        "levels": levels,
        "validation_every": int(validation_every),
        "validation_note": f"every {validation_every}th stored training example is held out "
        "(config.data.validation_every); the network never trains on it; choices use it only",
        "num_validation_images": int(len(val_x)),
        "num_test_images": int(len(test_x)),
        "family_clip": notes["family_clip"],
        "config_fields_set": notes["fields"],
        "schedule": json.loads(config.schedule.to_json_best_effort()),
        "trained_family": {k: [float(u) for u in v] for k, v in dict(config.family).items()},
        "grid": grid_spec,
        "seeds": [int(v) for v in seeds],
        "checkpoint_steps": [r["step"] for r in per_seed],
        "nll_settings": {**nll_description(s), "units": f"bits/dim at {levels} levels"},
        "bound_num_t": int(s.get("bound_num_t") or 0) or 8,
        "se_note": "row SEs: over seeds (>= 2 seeds) or over images (1 seed); ties: the best "
        "and the standard-diffusion member differ by < 2 SE (paired over images per seed, "
        "over seeds across seeds)",
        "baselines": {
            "gaussian_bpd": g, "gaussian_bpd_se": g_se,
            "categorical_bpd": c, "categorical_bpd_se": c_se,
            "train_images": fit.num_images,
            "description": f"full-covariance Gaussian of the uniformly dequantised training "
            f"images; independent per-pixel {levels}-way categorical (add-1/2); same test images",
        },
        "rows": rows,
        "selected": dict(selection["family"]),
        "selection": selection,
        "oracle_invariance_max_diff_bpd": orc["matched_max_diff_bpd"],
        "oracle_unmatched_max_diff_bpd": orc["unmatched_max_diff_bpd"],
        "oracle": orc,
        "chunks_computed": sum(r["chunks_computed"] for r in per_seed),
        "chunks_reused": sum(r["chunks_reused"] for r in per_seed),
    }
    out["seconds"] = round(time.time() - t_start, 1)
    return out


def _clean(obj):
    """NaN/inf → None (strict JSON), numpy scalars → Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def plot_validation(out: dict, path: str) -> str:
    """Validation NLL vs the (first) family parameter: each seed, the mean ± SE, baselines."""
    from matplotlib.figure import Figure

    rows = out["rows"]
    names = list(rows[0]["family"])
    x_name = names[0]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    groups: dict = {}
    for i, r in enumerate(rows):
        rest = tuple((k, r["family"][k]) for k in names[1:])
        groups.setdefault(rest, []).append(i)
    for rest, idx in groups.items():
        xs = [rows[i]["family"][x_name] for i in idx]
        label = ", ".join(f"{k}={v:g}" for k, v in rest)
        for j in range(len(out["seeds"])):
            ax.plot(xs, [rows[i]["per_seed"][j]["val_bpd"] for i in idx], color="0.7", lw=0.8,
                    label="seeds" if j == 0 and not rest else None)
        se = [rows[i]["val_bpd_se"] or 0.0 for i in idx]
        ax.errorbar(xs, [rows[i]["val_bpd"] for i in idx], yerr=se, marker="o", capsize=3,
                    label=f"mean ± SE {label}".strip())
    std = [r for r in rows if r["standard_diffusion"]]
    if std:
        ax.plot([r["family"][x_name] for r in std], [r["val_bpd"] for r in std], "ks", mfc="none",
                ms=10, label="standard diffusion")
    sel = out["selection"]
    ax.plot([sel["family"][x_name]], [sel["val_bpd"]], "r*", ms=14, label="selected")
    ax.set_xlabel(x_name)
    ax.set_ylabel(f"validation NLL (bits/dim, {out['levels']} levels)")
    ax.set_title(f"{out['config']}: {sel['verdict']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def format_table(out: dict) -> str:
    b = out["baselines"]
    lines = [f"{out['config']} ({out['dataset']}, {out['levels']} levels), seeds "
             f"{out['seeds']}, {out['num_validation_images']} val / "
             f"{out['num_test_images']} test images; bits/dim ± SE",
             f"{'family':>16} {'val':>15} {'test':>15} {'bound':>8} {'recon':>7} "
             f"{'diff':>7} {'prior':>7}"]
    for r in out["rows"]:
        fam = ",".join(f"{k}={v:g}" for k, v in r["family"].items())
        se = lambda v: f"{v:.3f}" if v is not None and math.isfinite(v) else "n/a"  # noqa: E731
        t = r["terms"]
        lines.append(
            f"{fam:>16} {r['val_bpd']:7.3f}±{se(r['val_bpd_se']):>6} "
            f"{r['test_bpd']:7.3f}±{se(r['test_bpd_se']):>6} {r['bound_bpd']:8.3f} "
            f"{t['reconstruction']:7.3f} {t['diffusion']:7.3f} {t['prior']:7.4f}"
            + ("  (standard)" if r["standard_diffusion"] else "")
        )
    sel = out["selection"]
    lines.append(f"selected {out['selected']}: test {sel['test_bpd']:.3f}, {sel['verdict']}")
    lines.append(f"baselines: Gaussian {b['gaussian_bpd']:.3f}±{b['gaussian_bpd_se']:.3f}, "
                 f"categorical {b['categorical_bpd']:.3f}±{b['categorical_bpd_se']:.3f}")
    lines.append(f"oracle bound spread: matched {out['oracle_invariance_max_diff_bpd']:.2e}, "
                 f"unmatched {out['oracle_unmatched_max_diff_bpd'] or float('nan'):.2e} bits/dim")
    return "\n".join(lines)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_json(out: dict, path: str) -> dict:
    """Write a study's result (NaN → null) to `path` atomically; returns what was written."""
    out = _clean(out)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)
    return out


def main(argv=None, *, configure_logging: bool = True) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="configs/X.py[:ARG]")
    p.add_argument("--quick", action="store_true", help="tiny run: a few minutes on a CPU")
    p.add_argument("--workdir", default=None,
                   help="default workdirs/family_study/<config>[_quick]")
    p.add_argument("--seeds", default=None, help="training seeds, e.g. 0,1,2 (quick: 0)")
    p.add_argument("--grid", default=None,
                   help="family points, e.g. 'a=0:2:5' (default: config.family, 5 points; 3 quick)")
    p.add_argument("--validation_every", type=int, default=VALIDATION_EVERY)
    p.add_argument("--num_images", type=int, default=None,
                   help="validation and test images each (default: all; quick: 32)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="config field override, e.g. --set train.num_steps=1000")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    if configure_logging:
        _setup_logging()
    stem = os.path.splitext(os.path.basename(args.config.partition(":")[0]))[0]
    workdir = args.workdir or os.path.join(
        "workdirs", "family_study", stem + ("_quick" if args.quick else ""))
    try:
        seeds = [int(v) for v in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")
                 if v.strip()]
    except ValueError:
        print(f"--seeds {args.seeds!r}: use integers, e.g. 0,1,2", file=sys.stderr)
        return 2
    try:
        with chunks.StopOnSigterm() as stop:
            out = run_study(args.config, workdir=workdir, seeds=seeds, grid=args.grid,
                            quick=args.quick, sets=args.set,
                            validation_every=args.validation_every,
                            num_images=args.num_images, stop=stop)
    except chunks.Interrupted as e:
        print(f"family study interrupted ({e}); run the same command again to resume")
        return 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    out["plot"] = plot_validation(out, os.path.splitext(args.json)[0] + ".png")
    out = write_json(out, args.json)
    print(format_table(out), flush=True)
    print(f"wrote {args.json} and {out['plot']} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
