"""The autoregressive-limit study: per-block likelihood at the AR limit and off-path quality
of a network trained on the clipped soft family (docs/maths.md §10.4).

    python -m experiments.ar_study CONFIG[:ARG] [--quick] [--workdir W] [--num_images N]
        [--num_blocks K] [--paths family|any] [--set FIELD=VALUE ...] --json PATH

The config's soft-family network is trained (or resumed) in W by `gudjax.train`, with the
family CLIPPED (matched end points; `family_study.study_config`). Then, on the same
dequantised test images (common random numbers, same Hutchinson probes for every path):
  - ar_limit: the `autoregressive` schedule in the config's label order (Haar `level`: one
    block per level; PCA `variance`: K equal blocks by rank), shared end points with the
    clipped family. The PF-ODE is integrated window by window
    (`gudjax.ar_likelihood`): per-block bits per block dimension, their dimension-weighted
    sum (= the total, exactly), and `sum_minus_total_bpd` against ONE ordinary integration
    over [0, 1] with jump_ts at the window edges (solver tolerance only);
  - family_curve: bits/dim of clipped family members from the trained interval to far beyond
    it (a up to 16·a_max), approaching the AR value (continuity of the limit);
  - off_path: bits/dim and FD (samples from `gudjax.generation.generate`, FD in the features
    of the data set's classifier, `gudjax.frechet`) of paths off the trained family:
    (i) members beyond the trained interval (1.5·a_max, 2·a_max), (ii) a non-linear path
    between the same end points (a per-component time warp t ↦ t^{p_i} of the a_max member,
    p_i = p^{ℓ̂_i} with ℓ̂ the labels mapped to [−1, 1]: a `function` schedule), (iii) the AR
    limit; each with its distance from the training family (`path_distance`);
  - oracle_ar_max_err_bpd: the per-block check of item (ar_limit) with the exact score of
    the data's Gaussian (training split) in the run's basis: the largest |Δ_k − closed form|
    in bits per block dimension.
Resumable: training from its checkpoints, every NLL batch / FD value is a chunk under
W/ar_chunks (`gudjax.chunks`).

--quick: the config's `runlocal` form with family_study's tiny network, 16 test images,
Hutchinson (one probe) at rtol = atol = 1e-4, 64 samples per FD.
Outputs: the JSON (keys in `run_study`), a PNG next to it (quality vs distance, per-block
bits/dim), a short table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import functools
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
from experiments import family_study
from gudjax import (
    ar_likelihood,
    baselines,
    chunks,
    features,
    frechet,
    generation,
    input_pipeline,
    likelihood,
    nll,
    schedules,
    sweeps,
)
from gudjax.evaluate import eval_settings, nll_description
from gudjax.run import USER_ERRORS
from gudjax.score_model import network_model, oracle_model
from gudjax.train import train_and_evaluate
from gudjax.workdir import hold

log = logging.getLogger("gudjax")

#: --quick: on top of family_study's quick fields
QUICK_EXTRA = {"eval.classifier_steps": 200, "eval.fd_num_samples": 64}
QUICK_IMAGES = 16
ORACLE_IMAGES = 8
QUICK_ORACLE_IMAGES = 2
MAX_AUTO_BLOCKS = 16  # label sets with more distinct values are cut into AUTO_BLOCKS blocks
AUTO_BLOCKS = 8
T_GRID = 201
MEMBER_GRID = 21


# ------------------------------------------------------------------ paths
def ar_schedule(config, basis, num_blocks=None):
    """The `autoregressive` schedule in the config's label order, with its end points."""
    sc = dict(config.schedule)
    if "labels" not in sc:
        raise ValueError("config.schedule.labels is needed to order the autoregressive blocks")
    labels = sc["labels"]
    kw = {k: float(sc[k]) for k in ("gamma_den", "gamma_noise", "gamma_end") if k in sc}
    if num_blocks is None:
        distinct = len(np.unique(np.asarray(basis.label(labels))))
        num_blocks = None if distinct <= MAX_AUTO_BLOCKS else AUTO_BLOCKS
    return schedules.make_schedule("autoregressive", basis, labels=labels,
                                   num_blocks=num_blocks, **kw)


def warp_schedule(schedule, member: dict, basis, labels: str, p: float):
    """γ_i(t) = γ_member,i(t^{p_i}), p_i = p^{ℓ̂_i}, ℓ̂ = labels mapped to [−1, 1]: a monotone
    per-component time warp with the member's end points (a non-linear path in γ̃)."""
    lab = np.asarray(basis.label(labels), np.float64)
    span = max(float(lab.max() - lab.min()), 1e-12)
    expo = jnp.asarray(float(p) ** (2.0 * (lab - lab.min()) / span - 1.0), jnp.float32)
    fam = {k: jnp.float32(v) for k, v in member.items()}

    def fn(t):
        # t^p from a floor of 1e-12 (no 0·∞ in β at t = 0 where p_i < 1)
        tw = jnp.power(jnp.clip(t, 1e-12, 1.0), expo)  # (D,)
        return jax.vmap(lambda ti, i: schedule.gamma(ti, fam)[i])(tw, jnp.arange(len(lab)))

    return schedules.make_schedule("function", basis, fn=fn)


def gamma_tilde_grid(schedule, family=None, ts=None) -> np.ndarray:
    """γ̃(t) on a t-grid, (T, D) float64."""
    ts = np.linspace(0.0, 1.0, T_GRID) if ts is None else ts
    fam = {k: jnp.float32(v) for k, v in (family or {}).items()} or None
    g = jax.vmap(lambda t: schedule.gamma(t, fam))(jnp.asarray(ts, jnp.float32))
    return np.asarray(g, np.float64) - np.asarray(schedule.rho, np.float64)


def path_distance(path_gt, members_gt) -> tuple[float, int]:
    """(distance, nearest member index): min over trained members j of the mean over the
    t-grid and components of |γ̃_path(t) − γ̃_j(t)| (log-SNR units)."""
    d = [float(np.mean(np.abs(path_gt - m))) for m in members_gt]
    return min(d), int(np.argmin(d))


# ------------------------------------------------------------------ per-block NLL of a batch
@functools.partial(jax.jit, static_argnames=("blocks", "num_blocks", "divergence", "num_probes",
                                             "rtol", "atol", "solver", "max_steps"))
def _ar_batch(model, x, rng, *, blocks, num_blocks, divergence, num_probes, rtol, atol, solver,
              max_steps):
    """Per-block NLL (nats, (B, K)) by windows and log p_0 (B,) by one full-interval solve
    with jump_ts at the window edges, same probes."""
    z0 = model.basis.encode(x)
    kw = dict(divergence=divergence, rng=rng, num_probes=num_probes, rtol=rtol, atol=atol,
              solver=solver, max_steps=max_steps)
    win = ar_likelihood.ode_block_log_likelihood(
        model.score_fn(), model.gamma_fn(), z0, blocks=np.asarray(blocks), num_blocks=num_blocks,
        **kw)
    full = likelihood.ode_log_likelihood(model.score_fn(), model.gamma_fn(), z0,
                                         jump_ts=model.jump_ts(), **kw)
    return win["nll"], full["logp"]


def ar_nll(model, x, *, levels, opts, seed, store) -> dict:
    """Per-block and total bits/dim of images x at the AR limit (chunks in `store`)."""
    blocks, k_count = ar_likelihood.ar_blocks(model.schedule)
    log_scale = np.log(np.asarray(model.basis.scale, np.float64))
    d = int(model.basis.dim)
    root = jax.random.PRNGKey(seed)
    bs = int(opts["batch_size"])
    per_block, totals, fulls = [], [], []
    solve = {k: v for k, v in opts.items() if k != "batch_size"}
    for c in range(0, len(x), bs):
        xb = np.asarray(x[c:c + bs], np.float32)
        n_real = len(xb)
        xb = np.concatenate([xb, np.repeat(xb[:1], bs - n_real, axis=0)])  # one compilation

        def compute(xb=xb, i=c // bs, n_real=n_real):
            nats, logp = _ar_batch(model, jnp.asarray(xb), jax.random.fold_in(root, i),
                                   blocks=tuple(blocks.tolist()), num_blocks=k_count, **solve)
            return {"nats": np.asarray(nats, np.float64)[:n_real],
                    "logp": np.asarray(logp, np.float64)[:n_real]}

        out = store.cached_arrays(f"ar_b{c // bs}", compute)
        bpd_k = ar_likelihood.block_bits_per_dim(out["nats"], blocks, k_count, log_scale,
                                                 levels=levels)
        per_block.append(bpd_k)
        totals.append(ar_likelihood.weighted_total(bpd_k, blocks, k_count))
        fulls.append(likelihood.bits_per_dim(out["logp"], float(log_scale.sum()), d,
                                             levels=levels))
    per_block, totals, fulls = (np.concatenate(v) for v in (per_block, totals, fulls))
    if not (np.all(np.isfinite(per_block)) and np.all(np.isfinite(fulls))):
        raise ValueError("non-finite NLL at the AR limit: try a tighter config.eval.rtol/atol")
    t_mean, t_se = nll.mean_sem(totals)
    return {
        "total_bpd": t_mean, "total_bpd_se": t_se,
        "per_block_bpd": [float(v) for v in per_block.mean(0)],
        "per_block_bpd_se": [nll.mean_sem(per_block[:, k])[1] for k in range(k_count)],
        "block_dims": np.bincount(blocks, minlength=k_count).tolist(),
        "num_blocks": k_count,
        "full_interval_bpd": float(np.mean(fulls)),
        "sum_minus_total_bpd": float(np.mean(totals - fulls)),
        "sum_minus_total_max_abs_bpd": float(np.max(np.abs(totals - fulls))),
        "block_order": "block 0 is generated first (lowest label)",
    }


# ------------------------------------------------------------------ oracle check
def oracle_ar_check(fit, basis, schedule, x, *, rtol=1e-6) -> float:
    """Largest |windowed Δ_k − closed form| in bits per block dimension, exact score and
    exact divergence of the data's Gaussian in `basis`, on the images x."""
    orc = baselines.gaussian_oracle(fit, basis)
    model = oracle_model(orc, basis, schedule)
    blocks, k_count = ar_likelihood.ar_blocks(schedule)
    z0 = basis.encode(jnp.asarray(x, jnp.float32))
    out = jax.jit(lambda z: ar_likelihood.ode_block_log_likelihood(
        model.score_fn(), model.gamma_fn(), z, blocks=blocks, num_blocks=k_count,
        divergence="exact", rtol=rtol, atol=rtol))(z0)
    exact = ar_likelihood.oracle_block_deltas(orc, model.gamma_fn(), out["z_edges"], blocks,
                                              k_count)
    dims = np.bincount(blocks, minlength=k_count)
    err = np.abs(np.asarray(out["delta"], np.float64) - exact) / (dims * math.log(2.0))
    return float(err.max())


# ------------------------------------------------------------------ the study
def _fd(model, fd_info, s, store, tag, num) -> float:
    def compute():
        gen = generation.generate(model, num, rng=jax.random.PRNGKey(int(s["seed"]) + 1000),
                                  solver=s["sampler"], steps=s["sampler_steps"],
                                  batch_size=int(s["batch_size"]))
        f = fd_info["extractor"](frechet.as_real_images(gen))
        return features.frechet_distance(*features.feature_stats(f), fd_info["ref_mean"],
                                         fd_info["ref_cov"])

    return float(store.cached_json(f"fd_{tag}", compute))


def _bpd_row(model, x, levels, opts, seed, store, tag) -> tuple[float, float]:
    res = nll.nll_bpd(model, x, seed=seed, levels=levels, store=store, chunk_prefix=tag, **opts)
    return nll.mean_sem(res["bpd"])


def run_study(spec, *, workdir, quick=False, sets=(), num_images=None, num_blocks=None,
              paths="family", stop=None, command=None) -> dict:
    """The study (module docstring). JSON keys: ar_limit {total_bpd, total_bpd_se,
    per_block_bpd, per_block_bpd_se, block_dims, sum_minus_total_bpd, …}, family_curve
    [{a, bpd, bpd_se, distance}], off_path [{path, kind, distance, nearest, bpd, bpd_se, fd}],
    oracle_ar_max_err_bpd, levels, seconds, command and settings."""
    t_start = time.time()
    extra = [f"{k}={v}" for k, v in QUICK_EXTRA.items()] if quick else []
    config, notes = family_study.study_config(spec, quick=quick, sets=[*extra, *sets])
    if paths not in ("family", "any"):
        raise ValueError(f"--paths {paths!r}: use family or any")
    if paths == "any":
        if "paths" not in config.train:
            raise ValueError("--paths any needs config.train.paths (any-path training), which "
                             "this gudjax does not have; use --paths family")
        config.train.paths = "any"  # random monotone paths between the family's end points
    s = eval_settings(config)
    names = schedules.family_params(config.schedule.name)
    fam_ranges = {k: tuple(float(u) for u in v) for k, v in dict(config.family).items()}
    if not fam_ranges:
        raise ValueError("config.family is empty: the study needs a trained family range")
    pname = names[0] if names[0] in fam_ranges else next(iter(fam_ranges))
    lo, hi = fam_ranges[pname]
    base = sweeps.family_member(config)
    levels = input_pipeline.levels(config.data)
    num = num_images or (QUICK_IMAGES if quick else None)
    test_u8, test_x = family_study.read_images(config, "test", num, int(s["seed"]), levels)
    opts = nll.settings_options(s)
    seed = int(s["seed"]) + 1

    result = train_and_evaluate(config, workdir)
    if result["preempted"]:
        raise chunks.Interrupted(0, f"training in {workdir} (checkpointed)")
    basis, schedule = result["basis"], result["schedule"]
    params = jax.device_get(result["state"]["ema_params"])
    model = network_model(result["graphdef"], params, basis, schedule)
    ar = ar_schedule(config, basis, num_blocks)

    # the trained family on a grid, for distances
    members = [{**base, pname: float(a)} for a in np.linspace(lo, hi, MEMBER_GRID)]
    members_gt = [gamma_tilde_grid(schedule, m) for m in members]

    def dist(sched, fam=None):
        d, j = path_distance(gamma_tilde_grid(sched, fam), members_gt)
        return d, members[j][pname]

    curve_a = [lo, hi, 2 * hi, 16 * hi] if quick else [lo, (lo + hi) / 2, hi, 1.5 * hi, 2 * hi,
                                                         4 * hi, 8 * hi, 16 * hi]
    warp_p = [2.0] if quick else [1.5, 3.0]
    with hold(workdir, "eval"):
        store = chunks.ChunkStore(os.path.join(workdir, "ar_chunks"), {
            "job": "ar_study", "gudjax": gudjax.__version__,
            "params": chunks.array_digest(jax.tree.leaves(params)),
            "test": chunks.array_digest([test_x]), "nll": {**opts, "levels": levels},
            "ar_blocks": np.asarray(ar.block).tolist(), "seed": seed,
            "sampler": [s["sampler"], s["sampler_steps"]]}, stop=stop)
        t0 = time.time()
        ar_model = network_model(result["graphdef"], params, basis, ar)
        ar_limit = ar_nll(ar_model, test_x, levels=levels, opts=opts, seed=seed, store=store)
        ar_limit["seconds"] = round(time.time() - t0, 1)
        log.info("ar study: AR limit %.4f bits/dim (%d blocks), sum - total %.2e",
                 ar_limit["total_bpd"], ar_limit["num_blocks"], ar_limit["sum_minus_total_bpd"])

        curve = []
        for a in curve_a:
            point = {**base, pname: float(a)}
            b, se = _bpd_row(model.with_family(point), test_x, levels, opts, seed, store,
                             "nll_p" + chunks.digest(point))
            curve.append({pname: float(a), "family": point, "bpd": b, "bpd_se": se,
                          "in_trained_range": bool(lo <= a <= hi),
                          "distance": dist(schedule, point)[0]})
            log.info("ar study: %s=%g %.4f bits/dim", pname, a, b)
        curve.append({pname: "AR limit", "bpd": ar_limit["total_bpd"],
                      "bpd_se": ar_limit["total_bpd_se"], "in_trained_range": False,
                      "distance": dist(ar)[0]})

        fd_infos = frechet.fd_setup(config, s, workdir)
        fd_info = fd_infos.get("fd")
        n_fd = int(s.get("fd_num_samples") or len(test_x))
        rows = []
        labels = config.schedule.labels
        specs = [(f"{pname}={hi:g} (trained edge)", "family", schedule, {**base, pname: hi})]
        specs += [(f"{pname}={f * hi:g} ({f:g}x beyond)", "beyond", schedule,
                   {**base, pname: f * hi}) for f in (1.5, 2.0)]
        specs += [(f"warp p={p:g} of {pname}={hi:g}", "warp",
                   warp_schedule(schedule, {**base, pname: hi}, basis, labels, p), {})
                  for p in warp_p]
        specs.append(("AR limit", "ar", ar, {}))
        for name, kind, sched, point in specs:
            t0 = time.time()
            m = network_model(result["graphdef"], params, basis, sched, point or None)
            tag = "p" + chunks.digest({"path": name})
            if kind == "ar":
                b, se = ar_limit["total_bpd"], ar_limit["total_bpd_se"]
            else:
                b, se = _bpd_row(m, test_x, levels, opts, seed, store,
                                 "nll_p" + chunks.digest(point) if point else f"nll_{tag}")
            d, near = dist(sched, point or None)
            fd = _fd(m, fd_info, s, store, tag, n_fd) if fd_info else None
            rows.append({"path": name, "kind": kind, "family": point or None, "distance": d,
                         f"nearest_{pname}": near, "bpd": b, "bpd_se": se, "fd": fd,
                         "seconds": round(time.time() - t0, 1)})
            if kind == "warp":
                rows[-1]["note"] = ("a `function` schedule: no jump_ts, the adaptive solver "
                                    "finds the warped kinks itself (slower, ~1e-3 nats/dim)")
            log.info("ar study: %s: distance %.3f, %.4f bits/dim, FD %s", name, d, b, fd)

    fit = baselines.fit_gaussian(input_pipeline.fit_batches(config.data, batch_size=256),
                                 levels=levels)
    n_orc = QUICK_ORACLE_IMAGES if quick else ORACLE_IMAGES
    oracle_err = oracle_ar_check(fit, basis, ar, test_x[:n_orc])
    out = {
        "format_version": 1,
        "gudjax": gudjax.__version__,
        "config": spec,
        "command": command,
        "quick": bool(quick),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "workdir": os.path.abspath(workdir),
        "dataset": config.data.name,
        "levels": levels,
        "paths": paths,
        "num_test_images": int(len(test_x)),
        "family_clip": notes["family_clip"],
        "config_fields_set": notes["fields"],
        "schedule": json.loads(config.schedule.to_json_best_effort()),
        "trained_family": {k: list(v) for k, v in fam_ranges.items()},
        "checkpoint_step": int(result["step"]),
        "nll_settings": {**nll_description(s), "units": f"bits/dim at {levels} levels"},
        "fd_settings": frechet.fd_settings(fd_info, s) if fd_info else None,
        "distance_definition": "min over a grid of trained members (21 points of the trained "
        "interval) of the mean over 201 times in [0, 1] and all components of "
        "|gamma_tilde_path(t) - gamma_tilde_member(t)| (log-SNR units)",
        "ar_limit": ar_limit,
        "family_curve": curve,
        "off_path": rows,
        "oracle_ar_max_err_bpd": oracle_err,
        "oracle_note": f"exact score of the training split's Gaussian in the run's basis, "
        f"exact divergence, rtol = atol = 1e-6 (1e-5 leaves ~3e-3), "
        f"{min(n_orc, len(test_x))} test images: "
        "max over images and blocks of |windowed divergence integral - closed-form "
        "conditional log-density difference| per block dimension, in bits",
        "chunks_computed": store.new,
        "chunks_reused": store.loaded,
    }
    out["seconds"] = round(time.time() - t_start, 1)
    return out


def plot(out: dict, path: str) -> str:
    """Quality (bits/dim, FD) vs distance from the training family; per-block bits/dim."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    rows = out["off_path"]
    for r in rows:
        ax1.errorbar([r["distance"]], [r["bpd"]], yerr=[r["bpd_se"] or 0.0], marker="o",
                     capsize=3, label=r["path"])
        if r["fd"] is not None:
            ax2.plot([r["distance"]], [r["fd"]], marker="o", ls="none", label=r["path"])
    curve = [c for c in out["family_curve"] if "family" in c]
    ax1.plot([c["distance"] for c in curve], [c["bpd"] for c in curve], "k:", lw=0.8,
             label="clipped family")
    ax1.set_xlabel("distance from the trained family (mean |Δγ̃|)")
    ax1.set_ylabel(f"NLL (bits/dim, {out['levels']} levels)")
    ax1.legend(fontsize=6)
    ax2.set_xlabel("distance from the trained family (mean |Δγ̃|)")
    ax2.set_ylabel("FD (classifier features)")
    ar = out["ar_limit"]
    k = np.arange(ar["num_blocks"])
    ax3.bar(k, ar["per_block_bpd"], yerr=ar["per_block_bpd_se"], capsize=2)
    ax3.set_xlabel("block (0 = generated first)")
    ax3.set_ylabel("bits per block dimension")
    ax3.set_title(f"AR limit: {ar['total_bpd']:.3f} bits/dim", fontsize=9)
    fig.suptitle(out["config"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def format_table(out: dict) -> str:
    ar = out["ar_limit"]
    lines = [f"{out['config']} ({out['dataset']}, {out['levels']} levels), "
             f"{out['num_test_images']} test images; bits/dim ± SE",
             f"AR limit ({ar['num_blocks']} blocks): {ar['total_bpd']:.4f} ± "
             f"{ar['total_bpd_se']:.4f}; per block "
             + " ".join(f"{v:.3f}" for v in ar["per_block_bpd"])
             + f"; sum - total {ar['sum_minus_total_bpd']:.2e}",
             "family curve: " + ", ".join(
                 f"{c[next(iter(c))]}: {c['bpd']:.3f}" for c in out["family_curve"]),
             f"{'path':>28} {'distance':>9} {'bpd':>15} {'FD':>8}"]
    for r in out["off_path"]:
        fd = f"{r['fd']:8.2f}" if r["fd"] is not None else "     n/a"
        se = r["bpd_se"] if r["bpd_se"] is not None else float("nan")
        lines.append(f"{r['path']:>28} {r['distance']:9.3f} {r['bpd']:7.3f}±{se:.3f} {fd}")
    lines.append(f"oracle per-block max error: {out['oracle_ar_max_err_bpd']:.2e} bits/dim")
    return "\n".join(lines)


def main(argv=None, *, configure_logging: bool = True) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="configs/X.py[:ARG]")
    p.add_argument("--quick", action="store_true", help="tiny run: minutes on a CPU")
    p.add_argument("--workdir", default=None, help="default workdirs/ar_study/<config>[_quick]")
    p.add_argument("--num_images", type=int, default=None,
                   help="test images (default: all; quick: 16)")
    p.add_argument("--num_blocks", type=int, default=None,
                   help="AR blocks (default: one per label value, or 8 by rank if > 16 values)")
    p.add_argument("--paths", default="family", choices=("family", "any"),
                   help="training paths: the soft family, or any path (config.train.paths)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="config field override, e.g. --set train.num_steps=1000")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    if configure_logging:
        family_study._setup_logging()
    stem = os.path.splitext(os.path.basename(args.config.partition(":")[0]))[0]
    workdir = args.workdir or os.path.join(
        "workdirs", "ar_study",
        stem + ("_any" if args.paths == "any" else "") + ("_quick" if args.quick else ""))
    command = "python -m experiments.ar_study " + " ".join(argv if argv else sys.argv[1:])
    try:
        with chunks.StopOnSigterm() as stop:
            out = run_study(args.config, workdir=workdir, quick=args.quick, sets=args.set,
                            num_images=args.num_images, num_blocks=args.num_blocks,
                            paths=args.paths, stop=stop, command=command)
    except chunks.Interrupted as e:
        print(f"ar study interrupted ({e}); run the same command again to resume")
        return 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    out["plot"] = plot(out, os.path.splitext(args.json)[0] + ".png")
    out = family_study.write_json(out, args.json)
    print(format_table(out), flush=True)
    print(f"wrote {args.json} and {out['plot']} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
