"""Sampler quality vs network calls (NFE): the Gaussian oracle, and FD of a trained model.

    python -m experiments.bench_samplers [--quick] --json PATH
    python -m experiments.bench_samplers --quick --json PATH \
        --workdir W [--config CONFIG[:arg]]      # adds FD rows (1000 samples)
    python -m experiments.bench_samplers --no-oracle --efficiency --json PATH --workdir W \
        [--config CONFIG[:arg]]                  # ms per network call vs a bare forward pass
(--config: default the workdir's own config.json, the config it was trained with.)

Oracle rows (exact score, `experiments.oracle_check`'s 8×8×1 Gaussian and fitted bases), for
every sampler of `gudjax.generation.SOLVERS` (those of `gudjax.solvers` and the
full-covariance `ddim_cov`, `dpmpp_2m_cov` of `gudjax.gaussian_flow`, one call per step) and
NFE ∈ {5, 10, 20, 50, 100, 200} (with --quick {5, 10, 20}, plus Euler–Maruyama and Heun at
100), on three schedules:
  standard        PCA, white prior, soft a = 1 (variance labels): standard diffusion,
  soft            PCA, whitened, soft a = 3 clipped (component-wise windows),
  near_sequential pixel, whitened, column b = 0.9 (columns generated nearly one by one).
`oracle_cov_err` = ‖Ĉ − C‖_F/‖C‖_F of the samples in image space. Deterministic samplers run
the 2D sigma points of the exact p_1 (the flow is affine for the oracle's linear score, so
this is their exact output covariance; `floor` = 0). Stochastic ones ('sde', 'ddim_sde') run
n exact p_1 samples; `floor` is the expected Monte-Carlo error of an n-sample covariance and
`cov_err_debiased` = √max(err² − floor², 0). Steps per sampler: the most with
`generation.nfe(sampler, steps)` ≤ NFE (`nfe` in the row is the actual count). A sampler entry
may name its time grid, `dpmpp_2m_g@arc` (`solvers.TIME_GRIDS`; `--time-grid G` sets it for
every entry without one; none: the sampler's default); the row's `time_grid` says which.

FD rows (`--workdir`): the trained model's samples (1000, `--fd-samples`) through
`generation.generate`, the project's classifier FD against the test split (`gudjax.frechet`),
samples saved per point in W/bench_samplers/{sampler}@{grid}_nfe{n}[_seed{k}].npz (images in
[−1, 1]); `--fd-seeds K` samples every point with K seeds and reports the mean FD ± SE.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import oracle_check as oc
from gudjax import gaussian_flow, generation, schedules, solvers
from gudjax.oracle import GaussianOracle

NFES = (5, 10, 20, 50, 100, 200)
QUICK_NFES = (5, 10, 20)
#: Extra points of --quick: the references the targets compare with.
QUICK_EXTRA = (("sde", 100), ("ode", 100))
SCHEDULES = {
    "standard": ("pca", False, "soft", dict(labels="variance", a=1.0)),
    "soft": ("pca", True, "soft", dict(labels="variance", a=3.0, clip=True)),
    "near_sequential": ("pixel", True, "column", dict(b=0.9)),
}
SHAPE = (8, 8, 1)


def steps_for(solver: str, nfe: int) -> int:
    """The most steps with at most `nfe` network calls (at least 1)."""
    steps = 1
    while generation.nfe(solver, steps + 1) <= nfe:
        steps += 1
    return steps


def oracle_setup(name: str):
    basis_name, whiten, family, kw = SCHEDULES[name]
    mu, cov = oc.gaussian(SHAPE)
    basis = oc.fitted_basis(basis_name, SHAPE).with_prior(whiten)
    schedule = schedules.make_schedule(family, basis, **kw)
    return basis, schedule, GaussianOracle.from_data(basis, mu, cov), cov


#: Every sampler of `gudjax.generation`. The full-covariance ones (`gudjax.gaussian_flow`)
#: take the moments estimated from the same 4000 samples the bases are fitted to (as the '_g'
#: samplers take the fitted bases' variances) on the oracle, and the training split's
#: (`experiment.fit_or_load_moments`, stored in the workdir) for a trained model.
COV_SAMPLERS = gaussian_flow.SAMPLERS
ORACLE_SAMPLERS = generation.SOLVERS


def parse_sampler(entry: str, time_grid: str | None = None) -> tuple[str, str]:
    """'name' or 'name@grid' → (sampler, time grid); `time_grid` (None: the sampler's
    default) for an entry without '@'. One-line errors for unknown names."""
    solver, _, grid = entry.partition("@")
    if solver not in ORACLE_SAMPLERS:
        raise ValueError(
            f"unknown --samplers entry {solver!r}; allowed: {', '.join(ORACLE_SAMPLERS)}"
        )
    grid = grid or time_grid or generation.default_time_grid(solver)
    return solver, solvers.check_time_grid(grid, "--samplers/--time-grid time grid")


@functools.partial(jax.jit, static_argnames=("solver", "steps", "time_grid"))
def _z0(oracle, schedule, z1, rng, *, solver, steps, time_grid=None):
    gamma_fn = lambda t: schedule.gamma(t)
    return solvers.run(
        solver, rng, oracle.score_fn(gamma_fn), gamma_fn, z1, steps, time_grid=time_grid,
        data_var=jnp.exp(schedule.rho),
    )


def fit_moments(name: str, n_fit: int = 4000, seed: int = 0):
    """(mean (D,), covariance (D, D)) in component space of schedule `name`'s basis, from the
    n_fit samples `oracle_check.fitted_basis` fits the bases to."""
    basis_name, whiten, _, _ = SCHEDULES[name]
    mu, cov = oc.gaussian(SHAPE, seed)
    x = np.random.default_rng(seed + 1).multivariate_normal(mu, cov, size=n_fit)
    basis = oc.fitted_basis(basis_name, SHAPE, n_fit, seed).with_prior(whiten)
    z = np.asarray(basis.encode(jnp.asarray(x.reshape(n_fit, *SHAPE), jnp.float32)), np.float64)
    return z.mean(0), np.cov(z, rowvar=False)


@functools.partial(jax.jit, static_argnames=("order",))
def _z0_cov(oracle, schedule, z1, flow, *, order):
    gamma_fn = lambda t: schedule.gamma(t)
    return gaussian_flow.sample(oracle.score_fn(gamma_fn), gamma_fn, z1, flow, order=order)


def oracle_rows(nfes, n_mc: int, extra=(), *, names=None, samplers=None, time_grid=None,
                log=print) -> list[dict]:
    """Rows for the `names` of SCHEDULES (all) × `samplers` (all; entries 'name' or
    'name@grid', see `parse_sampler`) × nfes, plus `extra` ((entry, nfe) pairs)."""
    rows = []
    samplers = ORACLE_SAMPLERS if samplers is None else tuple(samplers)
    for name in SCHEDULES if names is None else names:
        basis, schedule, oracle, cov = oracle_setup(name)
        moments = None
        z_only = oracle.z_only()
        g1 = schedule.gamma(1.0)
        points = oracle.sigma_points(g1)
        mc = oracle.sample(jax.random.key(7), g1, n_mc)
        points_list = [(s, n) for s in samplers for n in nfes] + list(extra)
        for entry, target in points_list:
            solver, grid = parse_sampler(entry, time_grid)
            t0 = time.perf_counter()
            steps = steps_for(solver, target)
            if solver in COV_SAMPLERS:
                stochastic = False
                moments = fit_moments(name) if moments is None else moments
                flow = gaussian_flow.grid_flow(schedule.gamma, steps, grid, *moments)
                z = _z0_cov(z_only, schedule, points, flow, order=COV_SAMPLERS[solver])
            else:
                stochastic = solvers.SAMPLERS[solver][2]
                z = _z0(z_only, schedule, mc if stochastic else points, jax.random.key(3),
                        solver=solver, steps=steps, time_grid=grid)
            x = np.asarray(basis.decode(z), np.float64).reshape(z.shape[0], -1)
            err = oc.cov_rel_error(x, cov, population=not stochastic)
            floor = oc.mc_floor(cov, n_mc) if stochastic else 0.0
            row = dict(
                sampler=solver, schedule=name,
                nfe=generation.nfe(solver, steps),
                nfe_target=target, steps=steps,
                time_grid=grid,
                oracle_cov_err=err, floor=floor,
                cov_err_debiased=math.sqrt(max(err * err - floor * floor, 0.0))
                if math.isfinite(err) else err,
                n=int(z.shape[0]), seconds=time.perf_counter() - t0,
            )
            rows.append(row)
            log(f"{name:16s} {solver + '@' + grid:18s} nfe={row['nfe']:3d} err={err:.4f} "
                f"floor={floor:.4f} ({row['seconds']:.1f} s)")
    return rows


def load_model(workdir: str, config_path: str | None = None):
    """(config, ScoreModel of the EMA parameters, step) of a trained workdir; the config is
    CONFIG[:ARG] or, with None, the one the workdir was trained with (its config.json)."""
    import ml_collections

    from gudjax import experiment, run, sweeps
    from gudjax.config_base import load_config_file
    from gudjax.score_model import network_model

    if config_path is None:
        config = ml_collections.ConfigDict(
            experiment.read_config_json(os.path.join(workdir, "config.json")))
    else:
        path, _, arg = config_path.partition(":")
        config = load_config_file(path, arg or None)
    basis, schedule, graphdef, state, step = run.load_trained(config, workdir)
    model = network_model(graphdef, state["ema_params"], basis, schedule,
                          sweeps.family_member(config))
    return config, model, step


def efficiency(model, *, batch: int = 16, steps: int = 10, repeats: int = 3) -> dict:
    """Sampler seconds per network call vs one bare jitted score call at the same batch,
    timed round-robin in one process (the ratios hold on a loaded machine)."""
    from experiments.bench_common import interleaved_medians
    from gudjax import runtime

    one = runtime.batch_mesh(jax.local_devices()[:1])
    d = model.basis.dim
    z = jax.random.normal(jax.random.key(0), (batch, d))
    score = jax.jit(lambda m, z, t: m.score_fn()(z, t))
    calls = {"forward": lambda: score(model, z, jnp.float32(0.5))}
    names = [s for s in generation.SOLVERS if s not in COV_SAMPLERS or model.moments is not None]
    for solver in names:
        fn = functools.partial(generation.sample_batch, num=batch, solver=solver, steps=steps,
                               mesh=one)
        flow = generation.cov_flow(model, solver, steps, None) if solver in COV_SAMPLERS else None
        calls[solver] = functools.partial(fn, model, jax.random.PRNGKey(1), flow=flow)
    for c in calls.values():
        jax.block_until_ready(c())  # compile
    t = interleaved_medians(calls, repeats=repeats, warmup=1)
    rows = []
    for solver in names:
        n = generation.nfe(solver, steps)
        per_call = t[solver] / n
        rows.append(dict(sampler=solver, steps=steps, nfe=n, batch=batch,
                         seconds=t[solver], ms_per_nfe=1e3 * per_call,
                         ratio_to_forward=per_call / t["forward"]))
    return {"forward_ms": 1e3 * t["forward"], "batch": batch, "rows": rows}


def fd_rows(workdir: str, config_path: str, nfes, num: int, *, samplers=None, time_grid=None,
            seeds: int = 1, log=print) -> list[dict]:
    """FD vs NFE of the trained model in `workdir` for `samplers` ('name' or 'name@grid';
    None: all), samples saved per point and seed as
    W/bench_samplers/<sampler>@<grid>_nfe<N>[_seed<k>].npz (seed 0 has no suffix). With
    `seeds` > 1 every point is sampled with seeds 0 … seeds − 1 and the row's `fd` is their
    mean, `fd_se` its standard error and `fd_seeds` the values: between seeds the FD of 1000
    digits samples moves by about ±1.5, more than the 5% bar. A file that exists with
    `num` images is not sampled again: its FD is recomputed from the file (row `reused`
    True when every seed was), so a stopped run resumes point by point."""
    from gudjax import evaluate, experiment, features, frechet

    config, model, step = load_model(workdir, config_path)
    s = evaluate.eval_settings(config)
    info = frechet.fd_setup(config, s, workdir)["fd"]
    out_dir = os.path.join(workdir, "bench_samplers")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    entries = tuple(solvers.SAMPLERS) if samplers is None else tuple(samplers)
    for solver, grid in (parse_sampler(e, time_grid) for e in entries):
        m = experiment.sampling_model(model, config, workdir, solver, "--samplers")
        for target in nfes:
            steps = steps_for(solver, target)
            nfe = generation.nfe(solver, steps)
            t0 = time.perf_counter()
            fds, reused = [], []
            for seed in range(seeds):
                suffix = f"_seed{seed}" if seed else ""
                path = os.path.join(out_dir, f"{solver}@{grid}_nfe{nfe}{suffix}.npz")
                images = None
                if os.path.exists(path):
                    with np.load(path) as f:
                        images = f["images"] if f["images"].shape[0] == num else None
                reused.append(images is not None)
                if images is None:
                    images = generation.generate(
                        m, num, rng=jax.random.PRNGKey(seed), solver=solver, steps=steps,
                        batch_size=min(num, 250), time_grid=grid)
                    np.savez_compressed(path, images=images)
                fds.append(float(features.frechet_distance(
                    *features.feature_stats(info["extractor"](frechet.as_real_images(images))),
                    info["ref_mean"], info["ref_cov"],
                )))
            se = float(np.std(fds, ddof=1) / math.sqrt(seeds)) if seeds > 1 else None
            rows.append(dict(sampler=solver, time_grid=grid, nfe=nfe, steps=steps,
                             schedule=config.schedule.name, fd=float(np.mean(fds)), fd_se=se,
                             fd_seeds=fds, step=int(step), num=num, reused=all(reused),
                             seconds=time.perf_counter() - t0))
            err = f" ± {se:.3f}" if se is not None else ""
            log(f"FD {_label(rows[-1]):16s} nfe={nfe:3d} fd={rows[-1]['fd']:.3f}{err} "
                f"({rows[-1]['seconds']:.0f} s)")
    return rows


def _label(row: dict) -> str:
    """'sampler', or 'sampler@grid' when the row's grid is not the sampler's default."""
    grid = row.get("time_grid")
    default = generation.default_time_grid(row["sampler"])
    return row["sampler"] if grid in (None, default) else f"{row['sampler']}@{grid}"


def fd_summary(rows: list[dict], *, ref=("sde", 200), within: float = 0.05) -> dict:
    """Per sampler, the fewest network calls whose FD is within `within` (5%) of the FD of
    `ref` (Euler–Maruyama at 200 NFE); None where no point gets there. Empty without `ref`."""
    fd_rows_ = [r for r in rows if "fd" in r]
    refs = [r["fd"] for r in fd_rows_ if (_label(r), r["nfe"]) == ref]
    if not refs:
        return {}
    bar = (1.0 + within) * refs[0]
    out = {"reference": dict(sampler=ref[0], nfe=ref[1], fd=refs[0]), "bar": bar,
           "nfe_within": {}}
    for solver in dict.fromkeys(_label(r) for r in fd_rows_):
        ok = sorted(r["nfe"] for r in fd_rows_ if _label(r) == solver and r["fd"] <= bar)
        out["nfe_within"][solver] = ok[0] if ok else None
    return out


def plot_fd(rows: list[dict], path: str, summary: dict) -> None:
    """FD vs NFE (log x), one line per sampler, the 5% bar dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    fd_rows_ = [r for r in rows if "fd" in r]
    for solver in dict.fromkeys(_label(r) for r in fd_rows_):
        pts = sorted((r["nfe"], r["fd"], r.get("fd_se") or 0.0)
                     for r in fd_rows_ if _label(r) == solver)
        x, y, e = zip(*pts, strict=True)
        ax.errorbar(x, y, yerr=e if any(e) else None, marker="o", ms=3, capsize=2,
                    label=solver)
    if summary:
        ax.axhline(summary["bar"], ls="--", c="k", lw=0.8,
                   label=f"EM@{summary['reference']['nfe']} FD + 5%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network calls (NFE)")
    ax.set_ylabel("FD (classifier features)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", required=True)
    p.add_argument("--workdir")
    p.add_argument("--config", default=None,
                   help="CONFIG[:ARG] of --workdir (default: the workdir's own config.json)")
    p.add_argument("--fd-samples", type=int, default=1000)
    p.add_argument("--fd-seeds", type=int, default=1,
                   help="sample every FD point with this many seeds; FD = their mean ± SE")
    p.add_argument("--n-mc", type=int, default=None)
    p.add_argument("--efficiency", action="store_true",
                   help="with --workdir: sampler time per network call vs a bare forward pass")
    p.add_argument("--no-oracle", action="store_true")
    p.add_argument("--nfes", help="comma-separated NFE list (default: the preset's)")
    p.add_argument("--samplers", help="comma-separated samplers, each 'name' or 'name@grid'")
    p.add_argument("--time-grid", help=f"time grid of entries without '@' "
                   f"({', '.join(solvers.TIME_GRIDS)}; default: each sampler's own)")
    p.add_argument("--schedules", help=f"comma-separated subset of {', '.join(SCHEDULES)}")
    a = p.parse_args(argv)
    nfes = QUICK_NFES if a.quick else NFES
    if a.nfes:
        nfes = tuple(int(n) for n in a.nfes.split(","))
    samplers = a.samplers.split(",") if a.samplers else None
    names = a.schedules.split(",") if a.schedules else None
    for entry in samplers or ():
        parse_sampler(entry, a.time_grid)
    if a.time_grid:
        solvers.check_time_grid(a.time_grid, "--time-grid")
    for bad in set(names or ()) - set(SCHEDULES):
        raise ValueError(f"unknown --schedules entry {bad!r}; allowed: {', '.join(SCHEDULES)}")
    n_mc = a.n_mc or (8000 if a.quick else 20000)
    t0 = time.time()
    extra = QUICK_EXTRA if a.quick and samplers is None else ()
    rows = [] if a.no_oracle else oracle_rows(
        nfes, n_mc, extra, names=names, samplers=samplers, time_grid=a.time_grid
    )
    eff = None
    if a.workdir and a.efficiency:
        from gudjax import experiment

        config, model, _ = load_model(a.workdir, a.config)
        if model.basis.dim <= gaussian_flow.MAX_DIM:  # the full-covariance samplers too
            model = model.with_moments(
                *experiment.fit_or_load_moments(config, a.workdir, model.basis))
        eff = efficiency(model)
        for r in eff["rows"]:
            print(f"{r['sampler']:11s} {r['ms_per_nfe']:8.2f} ms/NFE  "
                  f"{r['ratio_to_forward']:.2f}x forward ({eff['forward_ms']:.2f} ms)")
    elif a.workdir:
        rows += fd_rows(a.workdir, a.config, nfes, a.fd_samples, samplers=samplers,
                        time_grid=a.time_grid, seeds=a.fd_seeds)
        if not fd_summary(rows):  # no reference (Euler–Maruyama@200) among the rows
            rows += fd_rows(a.workdir, a.config, (200,), a.fd_samples, samplers=["sde"],
                            seeds=a.fd_seeds)
    out = dict(rows=rows, efficiency=eff, nfes=list(nfes), n_mc=n_mc, quick=a.quick,
               wall_seconds=time.time() - t0, devices=str(jax.devices()[0].platform))
    if any("fd" in r for r in rows):
        out["fd_summary"] = fd_summary(rows)
        png = os.path.splitext(a.json)[0] + "_fd.png"
        plot_fd(rows, png, out["fd_summary"])
        for solver, n in out["fd_summary"].get("nfe_within", {}).items():
            print(f"{solver:11s} within 5% of EM@200 FD from NFE {n}")
        print(f"FD vs NFE plot: {png}")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {a.json} ({len(rows)} rows, {out['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
