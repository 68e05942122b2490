"""Evaluation of a trained model (`--mode=eval`): NLL in bits/dim, Gaussian baseline,
Fréchet distance, and sweeps over the schedule family of one network.

The pieces: `gudjax.nll` (dequantised test images, PF-ODE bits/dim, docs/maths.md §7),
`gudjax.bound` (the variational bound and its three terms, §10.1),
`gudjax.baselines` (the best Gaussian of the data and its PF-ODE cross-check, §8, and the
independent per-pixel categorical),
`gudjax.frechet` (FD-<dataset>-classifier and FID, with the train-vs-test floor),
`gudjax.sweeps` (family points, out-of-range warnings, standard-diffusion labels, §10),
`gudjax.report` (eval.json, the table, eval_sweep.png). This module runs them:
`eval_settings` (config.eval with one-line errors) and `evaluate_trained`.

Everything is measured at the data set's own number of levels L (`input_pipeline.levels`:
digits 17, 8-bit data 256), with one bits/dim definition (`likelihood.bits_per_dim`).
Every family point is evaluated from the same network with the EMA parameters (family
parameters are traced data: one compilation for all points), on the same dequantised
images with the same Hutchinson probes, and its FD samples start from the same noise
(common random numbers, so differences between points are not sampling noise). A point
outside the trained range config.family is evaluated with a logged warning.

Devices: NLL and sampler batches are split over all local devices and run per device
(`gudjax.runtime`); samples do not depend on the device count (up to float round-off), the
NLL agrees with one-device numbers to the solver tolerance.

Outputs in the workdir: eval.json (format in `report.write_report`), eval_sweep.png for
sweeps, and a table on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np

import gudjax
from gudjax import (
    baselines,
    bound,
    chunks,
    experiment,
    features,
    frechet,
    gaussian_flow,
    generation,
    input_pipeline,
    likelihood,
    nll,
    report,
    sampling,
    schedules,
    sweeps,
)
from gudjax.score_model import network_model

log = logging.getLogger("gudjax")


def eval_settings(config) -> dict:
    """config.eval with defaults filled in and one-line errors for bad values."""
    from gudjax.features import check_feature_config

    e = config.get("eval", None)
    if e is None:
        from gudjax.config_base import base_config

        e = base_config().eval
    check_feature_config(e)
    s = {k: e.get(k) for k in e.keys()}
    if s.get("divergence") not in likelihood.DIVERGENCES:
        raise ValueError(
            f"unknown config.eval.divergence {s.get('divergence')!r}; allowed: "
            f"{', '.join(likelihood.DIVERGENCES)}"
        )
    if s.get("solver") not in sampling.ADAPTIVE_SOLVERS:
        raise ValueError(
            f"unknown config.eval.solver {s.get('solver')!r}; allowed: "
            f"{', '.join(sampling.ADAPTIVE_SOLVERS)}"
        )
    s["sampler"] = s.get("sampler") or config.sample.get("solver", "sde")
    s["sampler_steps"] = int(s.get("sampler_steps") or config.sample.get("steps", 250))
    generation.check_solver(s["sampler"], "config.eval.sampler")
    for name in ("batch_size", "num_probes", "sampler_steps", "max_steps"):
        if int(s[name]) < 1:
            raise ValueError(f"config.eval.{name}={s[name]!r} must be a positive integer")
    for name in ("num_images", "fd_num_samples", "fd_num_reference"):
        if s.get(name) is not None and int(s[name]) < (2 if name.startswith("fd") else 1):
            raise ValueError(f"config.eval.{name}={s[name]!r} is too small (None = whole split)")
    names = schedules.family_params(config.schedule.name)
    s["points"] = sweeps.parse_sweep(s.get("sweep"), names)
    return s


def nll_description(s) -> dict:
    est = (
        f"Hutchinson ({s['num_probes']} Rademacher probe{'s' if int(s['num_probes']) > 1 else ''})"
        if s["divergence"] == "hutchinson"
        else "exact divergence"
    )
    return {
        "estimator": f"PF-ODE, {est}",
        "divergence": s["divergence"],
        "num_probes": int(s["num_probes"]),
        "solver": s["solver"],
        "rtol": float(s["rtol"]),
        "atol": float(s["atol"]),
    }


def eval_chunk_store(config, workdir: str, params, x, stop=None) -> chunks.ChunkStore:
    """The store of finished eval chunks, `<workdir>/eval_chunks/<key>/`: keyed by the
    parameters' bytes, the images, the device count and the config (all but eval.sweep,
    so that added sweep points reuse the finished ones)."""
    cfg = json.loads(config.to_json_best_effort())
    cfg.get("eval", {}).pop("sweep", None)
    key = {
        "job": "eval",
        "gudjax": gudjax.__version__,
        "params": chunks.array_digest(jax.tree.leaves(jax.device_get(params))),
        "images": chunks.array_digest([x]),
        "devices": jax.device_count(),
        "config": cfg,
    }
    return chunks.ChunkStore(
        os.path.join(workdir, "eval_chunks"), key, stop=stop, write=jax.process_index() == 0
    )


def evaluate_trained(
    config, workdir: str, *, basis, schedule, graphdef, params, step_: int, stop=None
) -> dict:
    """Evaluate restored EMA `params` (see the module docstring); writes eval.json.

    Finished chunks (NLL batches, bound, baseline check, FD per family point) are stored
    as they finish (`eval_chunk_store`) and reused by a restart; with `stop` (a
    `chunks.StopOnSigterm`) SIGTERM raises `chunks.Interrupted` after the current chunk."""
    s = eval_settings(config)
    names = schedules.family_params(config.schedule.name)
    base = sweeps.family_member(config)
    points = [{**base, **p} for p in s["points"]] or [base]
    trained = dict(config.get("family", {}))
    defaults = {k: config.schedule[k] for k in names if k in config.schedule}
    model = network_model(graphdef, params, basis, schedule)
    gaussian_flow.check_dim(s["sampler"], basis.dim, "config.eval.sampler")
    dataset = config.data.name
    t_start = time.time()

    # -- data: dequantised test images (fixed u), same x for every row and the baseline
    levels = input_pipeline.levels(config.data)
    test_u8 = frechet.read_split(config.data, s.get("split", "test"), s.get("num_images"))
    x = nll.dequantize_uniform(test_u8, int(s["seed"]), levels)
    log.info("eval: %d %s %s images, %d family point(s)", len(x), dataset, s["split"], len(points))
    store = eval_chunk_store(config, workdir, params, x, stop)

    # -- baselines (fitted on the train split, at the data's levels)
    fit = baselines.fit_gaussian(
        input_pipeline.fit_batches(config.data, batch_size=256), levels=levels
    )
    g_bpd = fit.bpd(x)
    g_mean, g_sem = nll.mean_sem(g_bpd)
    cat = baselines.fit_categorical(
        input_pipeline.fit_batches(config.data, batch_size=256), levels=levels
    )
    c_mean, c_sem = nll.mean_sem(cat.bpd(test_u8))
    baseline = {
        "name": "gaussian",
        "description": f"N(mu, C), mean and covariance of the uniformly dequantised training "
        f"images in pixel space (C = Cov + (2/{levels})^2/12 I); closed form on the same test "
        "images",
        "train_images": fit.num_images,
        "eigenvalue_floor": fit.floor,
        "num_images": int(len(x)),
        "bpd": g_mean,
        "bpd_sem": g_sem,
    }
    k = min(int(s.get("baseline_ode_images") or 0), len(x))
    if k:
        baseline["ode_check"] = store.cached_json(
            "baseline_ode_check",
            lambda: baselines.ode_check(fit, basis, schedule, points[0], x[:k], g_bpd[:k], s),
        )

    baselines_out = {
        "levels": levels,
        "gaussian_bpd": g_mean,
        "gaussian_bpd_se": g_sem,
        "categorical_bpd": c_mean,
        "categorical_bpd_se": c_sem,
        "categorical_description": f"independent per-pixel {levels}-way categorical, add-1/2 "
        "smoothing, fitted on the train split; exact discrete NLL of the same test images",
    }
    bound_num_t = int(s.get("bound_num_t") or 0)

    # -- FD: features, reference statistics, noise floor
    fd_infos = frechet.fd_setup(config, s, workdir)  # {"fd": classifier, "fid": Inception}

    # -- the rows
    rows = []
    nll_desc = nll_description(s)
    for point in points:
        t0 = time.time()
        warnings = sweeps.out_of_range(point, trained, defaults)
        for w in warnings:
            log.warning("eval: family point %s: %s (evaluating anyway)", report.fmt_point(point), w)
        m = model.with_family(point)
        tag = "p" + chunks.digest({k_: float(v) for k_, v in point.items()})
        res = nll.nll_bpd(
            m,
            x,
            seed=int(s["seed"]) + 1,
            levels=levels,
            **nll.settings_options(s),
            store=store,
            chunk_prefix=f"nll_{tag}",
        )
        mean, sem = nll.mean_sem(res["bpd"])
        row = {
            "family": {k_: float(v) for k_, v in point.items()},
            "standard_diffusion": sweeps.standard_diffusion_label(schedule, basis, point),
            "in_trained_range": not warnings,
            "warnings": warnings,
            "nll": {
                "bpd": mean,
                "bpd_sem": sem,
                "num_images": int(len(x)),
                **nll_desc,
                "nfe_mean": float(np.mean(res["nfe"])),
                "gaussian_baseline_bpd": g_mean,
                "beats_baseline": bool(mean < g_mean),
                "categorical_baseline_bpd": c_mean,
            },
        }
        if bound_num_t:
            row["bound"] = store.cached_json(
                f"bound_{tag}", lambda m=m: bound_record(m, x, s, levels, bound_num_t)
            )
        if fd_infos:  # one set of samples, compared in every feature space

            def fd_values(m=m):
                any_info = next(iter(fd_infos.values()))
                gen = generation.generate(
                    experiment.sampling_model(m, config, workdir, s["sampler"],
                                              "config.eval.sampler"),
                    int(any_info["num_generated"]),
                    rng=jax.random.fold_in(jax.random.PRNGKey(int(s["seed"])), 1000),
                    solver=s["sampler"],
                    steps=s["sampler_steps"],
                    batch_size=int(s["batch_size"]),
                )
                gen = frechet.as_real_images(gen)
                return {
                    key: features.frechet_distance(
                        *features.feature_stats(info["extractor"](gen)),
                        info["ref_mean"],
                        info["ref_cov"],
                    )
                    for key, info in fd_infos.items()
                }

            fds = store.cached_json(f"fd_{tag}", fd_values)
            for key, info in fd_infos.items():
                row[key] = {
                    "name": info["extractor"].name,
                    "value": fds[key],
                    **frechet.fd_record(info, s),
                }
        row["seconds"] = round(time.time() - t0, 2)
        rows.append(row)
        log.info("eval: %s", report.row_line(row))

    log.info(
        "eval: %d chunk(s) computed, %d reused from an earlier start (%s)",
        store.new,
        store.loaded,
        store.directory,
    )
    out = {
        "format_version": 1,
        "gudjax": gudjax.__version__,
        "workdir": workdir,
        "checkpoint_step": int(step_),
        "params": "ema",
        "dataset": dataset,
        "split": s["split"],
        "image_shape": list(basis.shape),
        "dim": basis.dim,
        "basis": {"name": basis.kind, "whiten": basis.whiten, **dict(basis.options)},
        "schedule": json.loads(config.schedule.to_json_best_effort()),
        "trained_family": {k_: [float(u) for u in v] for k_, v in trained.items()},
        "sweep": s.get("sweep") or None,
        "nll_settings": {
            **nll_desc,
            "num_images": int(len(x)),
            "levels": levels,
            "dequantization": "uniform",
            "dequantization_seed": int(s["seed"]),
            "units": f"bits/dim at {levels} levels (+log2(L/2) for data in [-1, 1])",
        },
        "baseline": baseline,
        "baselines": baselines_out,
        "fd_settings": None,  # replaced below when the classifier FD is computed
        **{f"{key}_settings": frechet.fd_settings(info, s) for key, info in fd_infos.items()},
        "rows": rows,
        "seconds": round(time.time() - t_start, 1),
    }
    if len(points) > 1 and jax.process_index() == 0:
        out["plot"] = report.plot_sweep(out, os.path.join(workdir, "eval_sweep.png"))
    if jax.process_index() == 0:
        report.write_report(out, os.path.join(workdir, "eval.json"))
        print(report.format_table(out), flush=True)
    return out


def bound_record(model, x, s, levels: int, num_t: int) -> dict:
    """The variational bound of one family member with its three terms (bits/dim ± SE)."""
    out = bound.bound_terms(
        model,
        x,
        seed=int(s["seed"]) + 2,
        num_t=num_t,
        batch_size=int(s["batch_size"]),
        levels=levels,
    )
    mean, sem = nll.mean_sem(out["bpd"])
    terms = {}
    for k, v in out["terms"].items():
        terms[k], terms[f"{k}_se"] = nll.mean_sem(v)
    return {"bpd": mean, "bpd_se": sem, "num_t": int(num_t), "terms": terms}
