"""Sample quality of a trained workdir per family member, and column completion.

    python -m experiments.columns_study --workdir W [--points "b=0,0.3,0.5"] \\
        [--num 1000] [--complete 2,4] [--json PATH] [--quick]

The config is the one the workdir was trained with (its config.json: the run's identity).

For every family point (default: the config's member): `--num` unconditional samples (the
config's sampler and steps) and their Fréchet distance to the test split in the features of the
project's digit classifier ("FD-<dataset>-classifier", `gudjax.features`; not FID), next to the
train-vs-test floor at the same counts.

`--complete K,...` (pixel basis): column completion of test images. The left K columns are
kept, the rest generated with replacement conditioning (`conditional.inpaint`, mask "left:K").
Reported per K: FD of the completed images, and the mean squared error over the generated
pixels against the real ones, next to the MSE of the Gaussian conditional mean
E[x_unknown | x_known] under the full-covariance Gaussian fitted to the train split (the best
linear predictor; a sampler that draws from the true conditional has twice the MMSE in
expectation, so the ratio to this number, not 1, is what to compare). Writes completion grids
(`completion_left<K>.png`: input, completion, original) into the workdir.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from gudjax import (
    baselines,
    conditional,
    experiment,
    features,
    frechet,
    input_pipeline,
    nll,
    plotting,
    run,
)
from gudjax.evaluate import eval_settings
from gudjax.generation import generate
from gudjax.score_model import network_model
from gudjax.sweeps import family_member, parse_sweep

log = logging.getLogger("gudjax")
PARAMS = {"ema": "ema_params", "raw": "params"}


def _fd(extractor, ref_stats, images) -> float:
    return features.frechet_distance(*features.feature_stats(extractor(images)), *ref_stats)


def gaussian_conditional_mean(fit: baselines.GaussianFit, x: np.ndarray, known: np.ndarray):
    """E[x_u | x_k] = μ_u + C_uk C_kk⁻¹ (x_k − μ_k) per image; known (D,) bool, x (N, D)."""
    cov, mu = fit.cov, fit.mean
    k, u = known, ~known
    gain = np.linalg.solve(cov[np.ix_(k, k)], cov[np.ix_(k, u)]).T  # (U, K)
    out = np.array(x, np.float64)
    out[:, u] = mu[u] + (x[:, k] - mu[k]) @ gain.T
    return out


def run_study(
    workdir, *, points=None, num=1000, complete=(), seed=0, params="ema", nll_images=0
) -> dict:
    t0 = time.time()
    config = ml_collections.ConfigDict(
        experiment.read_config_json(os.path.join(workdir, "config.json"))
    )
    s = eval_settings(config)
    basis, schedule, graphdef, state, step = run.load_trained(config, workdir)
    base = family_member(config)
    pts = [{**base, **p} for p in parse_sweep(points, schedule.param_names)] or [base]
    extractor = features.load_or_train_classifier(
        config.data,
        s.get("classifier_dir") or f"{workdir}/fd_classifier",
        steps=int(s["classifier_steps"]),
        batch_size=int(s["classifier_batch_size"]),
        lr=float(s["classifier_lr"]),
        seed=int(s["classifier_seed"]),
        max_train_examples=s.get("classifier_train_examples"),
    )
    levels = input_pipeline.levels(config.data)
    test_u8 = frechet.read_split(config.data, "test", None)
    test_x = input_pipeline.to_model_input(test_u8)  # the features see 256-level centres
    ref = features.feature_stats(extractor(test_x))
    train_x = input_pipeline.to_model_input(frechet.read_split(config.data, "train", num))
    out = {
        "config": os.path.join(workdir, "config.json"),
        "workdir": workdir,
        "checkpoint_step": int(step),
        "basis": {"name": basis.kind, "whiten": bool(basis.whiten)},
        "schedule": config.schedule.name,
        "sampler": s["sampler"],
        "steps": int(s["sampler_steps"]),
        "levels": int(levels),
        "params": params,
        "nll_images": int(nll_images),
        "num_samples": int(num),
        "num_reference": int(len(test_x)),
        "feature_extractor": extractor.describe(),
        "fd_train_vs_test": _fd(extractor, ref, train_x),
        "rows": [],
    }
    model = network_model(graphdef, state[PARAMS[params]], basis, schedule)
    if nll_images:
        x_nll = nll.dequantize_uniform(test_u8[:nll_images], int(s["seed"]), levels)
    for i, point in enumerate(pts):
        m = model.with_family(point)
        gen = generate(
            m, num, rng=jax.random.fold_in(jax.random.PRNGKey(seed), i), solver=s["sampler"],
            steps=int(s["sampler_steps"]), batch_size=256,
        )
        gen = frechet.as_real_images(gen, levels)
        fd = _fd(extractor, ref, gen)
        row = {"family": {k: float(v) for k, v in point.items()}, "fd": fd}
        if nll_images:
            res = nll.nll_bpd(
                m, x_nll, seed=int(s["seed"]) + 1, levels=levels, **nll.settings_options(s)
            )
            row["nll_bpd"], row["nll_bpd_se"] = nll.mean_sem(res["bpd"])
        log.info("columns study: %s FD %.4g", point, fd)
        tag = "_".join(f"{k}{v:g}" for k, v in point.items()) or "default"
        np.savez_compressed(f"{workdir}/study_samples_{tag}.npz", images=gen)
        out["rows"].append(row)
    if complete:
        fit = baselines.fit_gaussian(
            input_pipeline.fit_batches(config.data, batch_size=256), levels=levels
        )
        real = input_pipeline.to_model_input(test_u8, levels=levels)  # the model's inputs
        n = len(real)
        flat = real.reshape(n, -1).astype(np.float64)
        out["completion"] = []
        for k in complete:
            mask = conditional.parse_mask_spec(f"left:{k}", basis.shape)
            res = conditional.inpaint(
                model.with_family(base), real, mask, rng=jax.random.PRNGKey(seed + 100 + k),
                solver=s["sampler"], steps=int(s["sampler_steps"]),
            )
            done = np.asarray(res["images"], np.float64)
            unknown = ~mask.reshape(-1)
            mse = float(np.mean((done.reshape(n, -1)[:, unknown] - flat[:, unknown]) ** 2))
            done = frechet.as_real_images(done, levels)
            cond = gaussian_conditional_mean(fit, flat, ~unknown)
            mse_gauss = float(np.mean((cond[:, unknown] - flat[:, unknown]) ** 2))
            row = {
                "known_columns": int(k),
                "family": {kk: float(v) for kk, v in base.items()},
                "fd": _fd(extractor, ref, done),
                "mse_generated": mse,
                "mse_gaussian_conditional_mean": mse_gauss,
                "num_images": int(n),
            }
            out["completion"].append(row)
            log.info("columns study: completion left:%d %s", k, row)
            if jax.process_index() == 0:
                show = min(n, 8)
                masked = np.where(mask, real[:show], 0.0)
                tiles = np.stack([masked, done[:show], real[:show]], 1).reshape(
                    -1, *basis.shape
                )
                plotting.save_image_grid(tiles, f"{workdir}/completion_left{k}.png", ncols=3 * 4)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a trained workdir (its config.json is used)")
    p.add_argument("--points", default="", help='family points, e.g. "b=0,0.3,0.5"')
    p.add_argument("--num", type=int, default=1000, help="unconditional samples per point")
    p.add_argument("--complete", default="", help="known left columns, e.g. 2,4")
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="128 samples per point")
    p.add_argument("--params", choices=tuple(PARAMS), default="ema",
                   help="ema (the default everywhere) or raw (the optimiser's parameters: for "
                   "runs shorter than the EMA horizon 1/(1 − ema_decay))")
    p.add_argument("--nll", type=int, default=0, metavar="N",
                   help="also the PF-ODE NLL (bits/dim at the data's levels) of N test images")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    complete = tuple(int(v) for v in args.complete.split(",") if v.strip())
    out = run_study(
        args.workdir, points=args.points, num=128 if args.quick else args.num,
        complete=complete, params=args.params, nll_images=args.nll,
    )
    print(f"{out['config']} step {out['checkpoint_step']}: {out['feature_extractor']}")
    print(f"FD train vs test (floor, {out['num_samples']} vs {out['num_reference']}): "
          f"{out['fd_train_vs_test']:.4g}")
    for r in out["rows"]:
        nll_txt = (f", NLL {r['nll_bpd']:.3f} ± {r['nll_bpd_se']:.3f} bits/dim"
                   if "nll_bpd" in r else "")
        print(f"  {r['family']}: FD {r['fd']:.4g}{nll_txt}")
    for r in out.get("completion", []):
        print(f"  completion left:{r['known_columns']}: FD {r['fd']:.4g}, MSE generated "
              f"{r['mse_generated']:.4f} vs Gaussian conditional mean "
              f"{r['mse_gaussian_conditional_mean']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
