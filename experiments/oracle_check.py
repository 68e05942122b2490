"""Gaussian-oracle check of bases × priors × schedules × samplers × likelihood (docs/maths.md §8).

    python -m experiments.oracle_check [--quick | --preset {full,test,quick}] [--json PATH]

Data: a random image-like Gaussian x ~ N(μ_x, C) (`oracle.random_gaussian`, 8×8×1, plus
one 8×8×3 row). Every registered basis is fitted (`fit_basis`) to 4000 samples of it, so
PCA/whitening statistics come from data, while the oracle is built from the TRUE μ_x, C.
Rows: every basis × {white, whitened} × schedules
    scalar_linear | soft a=1 (variance labels) | soft a=3 clipped (variance labels)
    | column b=0.5 (pixel only) | haar_column a=0.5 b=0.5 (haar only)
plus haar, 8×8×3, whitened, haar_column. Per row:
  nll     max over test points x ~ N(μ_x, C) of |log p̂(x) − log p_0(x)| / D in nats/dim, with
          log p̂ from the PF-ODE likelihood (Tsit5, rtol = atol = 1e-5, exact divergence, the
          exact terminal marginal p_1 as prior, the schedule's kinks as jump times) and
          log p_0 the exact t = 0 marginal (`GaussianOracle.logp_x0`, float64);
  sde     ‖Ĉ − C‖_F / ‖C‖_F of the sample covariance in x-space (z0 decoded with
          `basis.decode`) from the reverse SDE (Euler–Maruyama) started from n exact samples
          of p_1;
  ode     the same for the Heun PF-ODE started from the 2D sigma points of p_1 (exact mean and
          covariance). The oracle's score is linear, so the discretised flow is affine and the
          points' covariance after it IS the sampler's output covariance: this column is the
          ODE sampler's discretisation error alone, free of Monte-Carlo noise;
  ode mc  (full preset) the Heun PF-ODE from the same n exact samples as the SDE;
  std     for "white, soft a=1, variance labels": whether every component shares one γ(t)
          exactly (`is_standard_diffusion`), which must hold for every basis.
Thresholds: nll < 1e-3 nats/dim, every covariance error < 5%, std holds, everything finite;
the command exits with status 1 if any row fails.

Error budget (worst rows; bias from propagating the covariance exactly through the discrete
samplers): Monte-Carlo error of an n-sample covariance ≈ sqrt((tr(C)² + ‖C‖_F²)/n)/‖C‖_F
≈ 1.55% at n = 20000 (99th percentile 2.5%; 8×8×3: 1.9%, 2.8%), 2.4% at n = 8000 (99th
percentile 4.1%); Euler–Maruyama bias 2.2% / 1.7% / 0.9% at 200 / 250 / 500 steps; Heun
bias 2.0% / 1.1% at 60 / 100 steps (first order at the kinks of clipped schedules). The
likelihood in float32 reaches ~1e-5 nats/dim on smooth schedules and 1e-4–6e-4 on unwhitened
clipped ones (tiny-variance components: the float32 Σ_t⁻¹ limits it).

Presets (wall times on 2 idle CPU cores, 2026-11-23): full (n = 20000, 500 EM / 200 Heun
steps, 8 test points, + "ode mc"; 6.5 min), test (what tests/test_oracle.py runs: n = 20000,
200 / 60 steps, 4 points, Euler–Maruyama on the first row of each prior in a group, Heun on
every row), quick (n = 8000, 150 / 50 steps, 2 points; about 1 min, a
smoke run whose covariance errors can cross 5% by chance).

Speed: everything in z-space depends on the basis only through the oracle's (m, K) and the
schedule's arrays. Rows of one schedule kind and image shape form a group whose likelihoods
and samples are computed by one jitted call each (likelihoods row after row in a lax.map,
samples vmapped), with the oracles and schedules passed as stacked pytree arguments (one
compilation per kind, reused across bases and priors) and the random draws shared across
the group (`z_samples`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import bases, schedules
from gudjax.likelihood import ode_log_likelihood
from gudjax.oracle import GaussianOracle, random_gaussian
from gudjax.sampling import ode_sample, schedule_kinks, sde_sample

NLL_THRESHOLD = 1e-3  # nats/dim
COV_THRESHOLD = 0.05  # relative Frobenius error


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sample sizes and step counts of one check."""

    n_samples: int = 20000  # samples per sampler (covariance estimate)
    sde_steps: int = 500
    ode_steps: int = 200  # Heun steps (2 score evaluations each)
    n_test: int = 8  # test points for the likelihood
    n_fit: int = 4000  # samples the bases are fitted on
    ode_mc: bool = False  # also run Heun from the n Monte-Carlo samples (column "ode mc")
    #: Euler–Maruyama on every row (True) or on the first row of each prior in a group (False;
    #: the other rows report "-"). The SDE's z-space dynamics depend on the basis only
    #: through the oracle's (m, K), which the exact-covariance Heun column checks on every row.
    sde_every_row: bool = True
    rtol: float = 1e-5
    atol: float = 1e-5
    seed: int = 0


#: The reported check: Monte-Carlo floor ≈ 1.5% (99th percentile 2.5%), EM bias ≤ 0.9%,
#: Heun bias ≤ 0.9%.
FULL = Settings(ode_mc=True)
#: What tests/test_oracle.py runs: the same n (so the same Monte-Carlo margin), Euler–Maruyama
#: on the first row of each prior per group, fewer steps: EM bias ≤ 2.2% at 200 steps, Heun
#: ≤ 2.0% at 60 steps (worst rows, from propagating the covariance exactly through the
#: discrete samplers).
TEST = Settings(n_samples=20000, sde_steps=200, ode_steps=60, n_test=4, sde_every_row=False)
#: A fast smoke run: Monte-Carlo floor ≈ 2.4% (99th percentile ≈ 4.1%) and EM bias ≤ 2.9%,
#: so a row can cross 5% on the covariance by chance; use FULL or TEST for a verdict.
QUICK = Settings(n_samples=8000, sde_steps=150, ode_steps=50, n_test=2)
PRESETS = {"full": FULL, "test": TEST, "quick": QUICK}


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    label: str
    name: str
    kwargs: tuple  # (key, value) pairs for make_schedule
    only_basis: str | None = None
    example: bool = False  # use the family's own `example(basis)` (registry rows)


SCHEDULE_SPECS = (
    ScheduleSpec("scalar_linear", "scalar_linear", ()),
    ScheduleSpec("soft a=1", "soft", (("labels", "variance"), ("a", 1.0))),
    ScheduleSpec("soft a=3 clip", "soft", (("labels", "variance"), ("a", 3.0), ("clip", True))),
    ScheduleSpec("column b=0.5", "column", (("b", 0.5),), only_basis="pixel"),
    ScheduleSpec(
        "haar_column a=.5 b=.5", "haar_column", (("a", 0.5), ("b", 0.5)), only_basis="haar"
    ),
)
#: Every registered family without a row above gets one through its own `example()`, so a
#: newly registered family is in the table without editing this file.
SCHEDULE_SPECS += tuple(
    ScheduleSpec(f"{name} example", name, (), example=True)
    for name in schedules.registered_schedules()
    if name not in {s.name for s in SCHEDULE_SPECS}
)
SPEC_BY_LABEL = {s.label: s for s in SCHEDULE_SPECS}


@dataclasses.dataclass(frozen=True)
class RowSpec:
    basis: str
    shape: tuple
    whiten: bool
    schedule: str  # a ScheduleSpec label

    @property
    def name(self) -> str:
        shape = "x".join(str(s) for s in self.shape)
        prior = "whitened" if self.whiten else "white"
        return f"{self.basis}-{shape}-{prior}-{self.schedule.replace(' ', '_')}"


#: The registry rows (a family's own `example`) run on these bases, both priors; the unit
#: tests run them on `TEST_EXAMPLE_BASES` only (the suite's time budget).
EXAMPLE_BASES = ("pixel", "haar")
TEST_EXAMPLE_BASES = ("haar",)


def row_specs(basis_names=None, example_bases=EXAMPLE_BASES) -> list[RowSpec]:
    """All rows: every basis × {white, whitened} × applicable schedule (the registry rows on
    `example_bases`), + one 8×8×3 row."""
    names = bases.registered_bases() if basis_names is None else tuple(basis_names)
    rows = []
    for name in names:
        for whiten in (False, True):
            for spec in SCHEDULE_SPECS:
                if spec.example and name not in example_bases:
                    continue
                if spec.only_basis in (None, name):
                    rows.append(RowSpec(name, (8, 8, 1), whiten, spec.label))
    if "haar" in names:
        rows.append(RowSpec("haar", (8, 8, 3), True, "haar_column a=.5 b=.5"))
    return rows


# ------------------------------------------------------------------ cached set-up
@functools.cache
def gaussian(shape: tuple, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The test Gaussian (μ_x (D,), C (D, D)) for an image shape."""
    return random_gaussian(seed + 1000 * shape[-1], shape)


@functools.cache
def fitted_basis(name: str, shape: tuple, n_fit: int = 4000, seed: int = 0) -> bases.Basis:
    """Basis `name` (white prior) fitted to n_fit samples of the test Gaussian."""
    mu_x, C = gaussian(shape, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.multivariate_normal(mu_x, C, size=n_fit).reshape(n_fit, *shape)
    return bases.fit_basis(name, [x.astype(np.float32)], whiten=False)


def make_row_schedule(spec: ScheduleSpec, basis) -> schedules.Schedule:
    if spec.example:
        return schedules.get_family(spec.name).example(basis)
    return schedules.make_schedule(spec.name, basis, **dict(spec.kwargs))


def standard_diffusion_identity(basis_name: str, shape=(8, 8, 1), seed: int = 0) -> bool:
    """Unwhitened, a = 1, variance labels: do all components share one γ(t) exactly?"""
    basis = fitted_basis(basis_name, tuple(shape), seed=seed).with_prior(False)
    return schedules.is_standard_diffusion(
        schedules.make_schedule("soft", basis, labels="variance", a=1.0)
    )


# ------------------------------------------------------------------ jitted z-space work
def _gamma_fn(schedule):
    return lambda t: schedule.gamma(t)


def _z_samples_one(oracle, schedule, rng, n, sde_steps, ode_steps, kinds):
    gamma_fn = _gamma_fn(schedule)
    score_fn = oracle.score_fn(gamma_fn)
    gamma1 = gamma_fn(1.0)
    k_prior, k_sde = jax.random.split(rng)
    out = {}
    if "ode" in kinds:
        out["ode"] = ode_sample(score_fn, gamma_fn, oracle.sigma_points(gamma1), ode_steps)
    if "sde" in kinds or "ode_mc" in kinds:
        z1 = oracle.sample(k_prior, gamma1, n)
    if "sde" in kinds:
        out["sde"] = sde_sample(k_sde, score_fn, gamma_fn, z1, sde_steps)
    if "ode_mc" in kinds:
        out["ode_mc"] = ode_sample(score_fn, gamma_fn, z1, ode_steps)
    return out


#: The sampling loops (n samples × hundreds of steps) are compiled with XLA's full backend
#: optimisation even in a process whose default is lower (the test suite compiles without it:
#: its many small programs then compile faster, while these loops would run ~2.5× slower).
OPTIMISED = {"xla_backend_optimization_level": 3}


@functools.partial(jax.jit, static_argnames=("n", "sde_steps", "ode_steps", "kinds"),
                   compiler_options=OPTIMISED)
def z_samples(oracles, schedules_, rng, *, n: int, sde_steps: int, ode_steps: int,
              kinds: tuple = ("sde", "ode")):
    """z0 samples for a group of R rows at once, a dict of (R, ·, D) arrays, one per name in
    `kinds`:

      sde     reverse SDE (Euler–Maruyama) from n exact samples z1 ~ p_1;
      ode     Heun PF-ODE from the 2D sigma points of p_1 (`GaussianOracle.sigma_points`,
              exact mean and covariance): the oracle's score is linear, so the discretised
              flow is affine and the points' covariance after it is exactly the sampler's
              output covariance — its error is pure discretisation error, no Monte Carlo;
      ode_mc  Heun from the same n exact samples as the SDE.
    `oracles` / `schedules_` are R z-space oracles / schedules of one kind stacked along a
    leading axis. The rows are vmapped with ONE unbatched key, so the Gaussian draws (z1 and
    the SDE noise of every step) are generated once and shared by all rows of the group
    (common random numbers): each row is still an exact Monte-Carlo estimate, and the
    random-number cost, most of the SDE's, is paid once per group.
    """
    return jax.vmap(lambda o, s: _z_samples_one(o, s, rng, n, sde_steps, ode_steps, kinds))(
        oracles, schedules_
    )


def _z_log_likelihood_one(oracle, schedule, z0, rtol, atol):
    gamma_fn = _gamma_fn(schedule)
    out = ode_log_likelihood(
        oracle.score_fn(gamma_fn),
        gamma_fn,
        z0,
        prior_logp=oracle.prior_logp(gamma_fn),
        rtol=rtol,
        atol=atol,
        jump_ts=schedule_kinks(schedule),
    )
    return out["logp"], out["nfe"]


@functools.partial(jax.jit, static_argnames=("rtol", "atol"))
def z_log_likelihood(oracles, schedules_, z0, *, rtol: float, atol: float):
    """PF-ODE log p(z0) (R, B) with the exact p_1 as prior, and evaluations (R,), for R rows.

    Adaptive Tsit5 with exact divergence and the schedule's kinks as jump times; the rows of
    a group run one after another in one compiled loop (lax.map), each with its own step
    sizes. Not vmap: a vmapped adaptive solve pays every row's bookkeeping at every step of
    the slowest row, 72 s instead of 2.7 s for the 10 clipped-soft rows on 2 CPU cores.
    """
    return jax.lax.map(
        lambda args: _z_log_likelihood_one(*args, rtol, atol), (oracles, schedules_, z0)
    )


def cov_rel_error(x: np.ndarray, C: np.ndarray, *, population: bool = False) -> float:
    """‖Ĉ − C‖_F / ‖C‖_F for samples x (n, D) (float64; population = normalise by n)."""
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        return float("inf")
    Ch = np.cov(x, rowvar=False, bias=population)
    return float(np.linalg.norm(Ch - C) / np.linalg.norm(C))


def mc_floor(C: np.ndarray, n: int) -> float:
    """Expected relative Frobenius error of an n-sample covariance of N(·, C)."""
    fro2 = np.sum(C * C)
    return float(np.sqrt((np.trace(C) ** 2 + fro2) / n / fro2))


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# ------------------------------------------------------------------ rows
@dataclasses.dataclass
class _Row:
    spec: RowSpec
    basis: bases.Basis
    schedule: schedules.Schedule
    oracle: GaussianOracle
    mu_x: np.ndarray
    C: np.ndarray
    x_test: np.ndarray
    result: dict


def _setup(row: RowSpec, settings: Settings) -> _Row:
    """Fitted basis, schedule, oracle and likelihood test points of one row."""
    shape = tuple(row.shape)
    mu_x, C = gaussian(shape, settings.seed)
    basis = fitted_basis(row.basis, shape, settings.n_fit, settings.seed).with_prior(row.whiten)
    schedule = make_row_schedule(SPEC_BY_LABEL[row.schedule], basis)
    oracle = GaussianOracle.from_data(basis, mu_x, C)
    g = np.random.default_rng(settings.seed + sum(map(ord, row.name)))
    x_test = g.multivariate_normal(mu_x, C, size=settings.n_test).reshape(-1, *shape)
    std = None
    if not row.whiten and row.schedule == "soft a=1":
        std = bool(schedules.is_standard_diffusion(schedule))
    result = dict(
        row=row.name,
        basis=row.basis,
        shape=list(shape),
        prior="whitened" if row.whiten else "white",
        schedule=row.schedule,
        standard_diffusion=std,
        gamma0_min=float(jnp.min(schedule.gamma(0.0))),
        mc_floor=mc_floor(C, settings.n_samples),
    )
    return _Row(row, basis, schedule, oracle, mu_x, C, x_test.astype(np.float32), result)


def _group_key(r: _Row):
    return (r.schedule.kind, r.schedule.clip, tuple(r.spec.shape))


def _run_group(key, members: list[_Row], settings: Settings) -> float:
    """Fill in the likelihood and sample numbers of one group; returns its wall time."""
    t_start = time.time()
    oracles = _stack([m.oracle.z_only() for m in members])
    scheds = _stack([m.schedule for m in members])
    # likelihood
    z_test = jnp.stack([m.basis.encode(jnp.asarray(m.x_test)) for m in members])
    logp_z, nfe = z_log_likelihood(oracles, scheds, z_test, rtol=settings.rtol, atol=settings.atol)
    for i, m in enumerate(members):
        log_scale_sum = float(np.sum(np.log(np.asarray(m.basis.scale, np.float64))))
        logp_x = np.asarray(logp_z[i], np.float64) - log_scale_sum
        ref = m.oracle.logp_x0(m.x_test, _gamma_fn(m.schedule))
        err = float(np.max(np.abs(logp_x - ref)) / m.basis.dim)
        m.result["nll_err"] = err if np.isfinite(err) else float("inf")
        m.result["nll_nfe"] = int(nfe[i])
    t_nll = time.time() - t_start
    # samples: the Heun column on every row; Euler–Maruyama (and "ode mc") on every row or on
    # the first row of each prior (settings.sde_every_row)
    seed = settings.seed + sum(map(ord, "/".join(map(str, key))))
    rng = jax.random.key(seed)
    steps = dict(n=settings.n_samples, sde_steps=settings.sde_steps,
                 ode_steps=settings.ode_steps)
    mc_kinds = ("sde", "ode_mc") if settings.ode_mc else ("sde",)
    first_of_prior: dict = {}
    for i, m in enumerate(members):
        first_of_prior.setdefault(m.spec.whiten, i)
    sub = list(range(len(members))) if settings.sde_every_row else sorted(first_of_prior.values())
    if len(sub) == len(members):  # one compiled call for everything
        z_all = z_mc = z_samples(oracles, scheds, rng, kinds=("ode", *mc_kinds), **steps)
    else:
        z_all = z_samples(oracles, scheds, rng, kinds=("ode",), **steps)
        z_mc = z_samples(_stack([members[i].oracle.z_only() for i in sub]),
                         _stack([members[i].schedule for i in sub]), rng, kinds=mc_kinds,
                         **steps)
    for i, m in enumerate(members):
        d = m.basis.dim
        scale = math.sqrt(np.trace(m.C))
        res = m.result
        samples = {"ode": z_all["ode"][i]}
        if i in sub:
            samples.update({k: z_mc[k][sub.index(i)] for k in mc_kinds})
        for name in ("ode", *mc_kinds):
            if name not in samples:
                res[f"{name}_cov_err"] = res[f"{name}_mean_err"] = None
                continue
            x = np.asarray(m.basis.decode(samples[name])).reshape(-1, d)
            res[f"{name}_cov_err"] = cov_rel_error(x, m.C, population=(name == "ode"))
            res[f"{name}_mean_err"] = float(np.linalg.norm(x.mean(0) - m.mu_x) / scale)
    elapsed = time.time() - t_start
    for m in members:
        res = m.result
        res["seconds"] = elapsed / len(members)
        res["group_seconds"] = dict(likelihood=t_nll, samples=elapsed - t_nll)
        errs = [res[f"{k}_cov_err"] for k in ("ode", *mc_kinds)]
        cov_ok = all(e < COV_THRESHOLD for e in errs if e is not None)
        res["passed"] = bool(
            res["nll_err"] < NLL_THRESHOLD and cov_ok and res["standard_diffusion"] is not False
        )
    return elapsed


def run_rows(rows, settings: Settings = FULL, log=None) -> list[dict]:
    """Every number of the given rows (see the module docstring), in the order given.

    Rows of one schedule kind and image shape form a group: their likelihoods and samples are
    computed by one compiled call each (`z_log_likelihood`, `z_samples`); the samples are then
    decoded per row with its own basis.
    """
    prepared = [_setup(row, settings) for row in rows]
    groups: dict = {}
    for r in prepared:
        groups.setdefault(_group_key(r), []).append(r)
    for key, members in groups.items():
        elapsed = _run_group(key, members, settings)
        if log:
            t = members[0].result["group_seconds"]
            log(
                f"  {len(members):2d} row(s) of {key[0]}{' clipped' if key[1] else ''} "
                f"{'x'.join(map(str, key[2]))}: {elapsed:.1f} s "
                f"(likelihood {t['likelihood']:.1f} s, samples {t['samples']:.1f} s)"
            )
    return [r.result for r in prepared]


def run_row(row: RowSpec, settings: Settings = FULL) -> dict:
    """One row on its own (`run_rows` shares the sampling work across rows)."""
    return run_rows([row], settings)[0]


def run_check(settings: Settings = FULL, rows=None, log=print) -> dict:
    rows = row_specs() if rows is None else rows
    t0 = time.time()
    results = run_rows(rows, settings, log=log)
    identity = {
        name: standard_diffusion_identity(name, seed=settings.seed)
        for name in sorted({r.basis for r in rows})
    }
    prior_rows = run_prior_rows(settings)
    control = run_prior_row(*PRIOR_CONTROL, settings)
    passed = (
        all(r["passed"] for r in results + prior_rows)
        and all(identity.values())
        and not control["passed"]
    )
    return dict(
        settings=dataclasses.asdict(settings),
        thresholds=dict(
            nll_nats_per_dim=NLL_THRESHOLD, cov_rel_err=COV_THRESHOLD, log_var_err=VAR_THRESHOLD
        ),
        rows=results,
        prior_start_rows=prior_rows,
        prior_start_control=control,
        standard_diffusion_identity=identity,
        passed=bool(passed),
        wall_seconds=time.time() - t0,
    )


# ------------------------------------------------------------------ the product's own start
#: Rows that start where the product starts: samples from N(0, I) and the likelihood with the
#: N(0, I) prior, on a strongly anisotropic Gaussian (component variances 1e-6 … 1) in
#: UNWHITENED bases. They agree with the exact answers only up to the prior term, which is
#: reported; a schedule that never reaches the prior fails them (the control row does).
PRIOR_ROWS = (
    ("pixel", ScheduleSpec("column b=0.5", "column", (("b", 0.5),))),
    ("pixel", ScheduleSpec("scalar_linear", "scalar_linear", ())),
    ("pca", ScheduleSpec("soft a=0.5", "soft", (("labels", "variance"), ("a", 0.5)))),
    ("haar", ScheduleSpec("haar_column a=.5 b=.5", "haar_column", (("a", 0.5), ("b", 0.5)))),
)
#: The same column row with the window-only end points (γ_end ≤ γ̃_noise): must FAIL.
PRIOR_CONTROL = ("pixel", ScheduleSpec("column b=0.5, window end points", "column",
                                       (("b", 0.5), ("gamma_end", -100.0))))
#: Worst |log(sample variance / exact variance)| over the z components (n = 20000: the
#: Monte-Carlo standard error of one log-variance is ≈ 0.01).
VAR_THRESHOLD = 0.1


@functools.cache
def anisotropic_gaussian(shape=(8, 8, 1), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(μ_x, C) with pixel variances from 1 down to 1e-6 (shuffled) and smooth correlations:
    C = diag(√λ) R diag(√λ), R = 0.7·(squared-exponential kernel, 2 px) + 0.3·I."""
    d = math.prod(shape)
    rng = np.random.default_rng(seed + 77)
    lam = np.geomspace(1.0, 1e-6, d)[rng.permutation(d)]
    h, w = shape[:2]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.repeat(np.stack([rows.ravel(), cols.ravel()], 1), shape[2], axis=0).astype(float)
    k = np.exp(-np.sum((pos[:, None] - pos[None]) ** 2, -1) / (2 * 2.0**2))
    R = 0.7 * k + 0.3 * np.eye(d)
    C = np.sqrt(lam)[:, None] * R * np.sqrt(lam)[None, :]
    return np.zeros(d), 0.5 * (C + C.T)


def _prior_basis(name: str, shape=(8, 8, 1)) -> bases.Basis:
    mu_x, C = anisotropic_gaussian(tuple(shape))
    x = np.random.default_rng(5).multivariate_normal(mu_x, C, size=4000).reshape(-1, *shape)
    return bases.fit_basis(name, [x.astype(np.float32)], whiten=False)


@functools.partial(jax.jit, static_argnames=("n", "sde_steps"), compiler_options=OPTIMISED)
def _prior_start_samples(oracle, schedule, rng, *, n, sde_steps):
    gamma_fn = _gamma_fn(schedule)
    k1, k2 = jax.random.split(rng)
    z1 = jax.random.normal(k1, (n, oracle.dim))  # the product's start, not p_1
    return sde_sample(k2, oracle.score_fn(gamma_fn), gamma_fn, z1, sde_steps)


@functools.partial(jax.jit, static_argnames=("rtol", "atol"))
def _prior_start_nll(oracle, schedule, z0, *, rtol, atol):
    gamma_fn = _gamma_fn(schedule)
    out = ode_log_likelihood(
        oracle.score_fn(gamma_fn), gamma_fn, z0, divergence="exact", rtol=rtol, atol=atol,
        jump_ts=schedule_kinks(schedule), max_steps=16384,
    )  # prior_logp None: log N(z_1; 0, I), the product's prior
    return out["logp"], out["nfe"]


def run_prior_row(basis_name: str, spec: ScheduleSpec, settings: Settings = TEST) -> dict:
    """NLL with the N(0, I) prior and SDE samples from N(0, I) vs the exact answers."""
    t0 = time.time()
    mu_x, C = anisotropic_gaussian()
    basis = _prior_basis(basis_name)
    orc = GaussianOracle.from_data(basis, mu_x, C)
    sched = make_row_schedule(spec, basis)
    rep = schedules.endpoint_report(sched)
    d = basis.dim
    # exact prior term for this data: ½ Σ (α² E z0² + σ² − 1 − log σ²) at t = 1
    g1 = np.asarray(sched.gamma(1.0), np.float64)
    m2 = np.asarray(orc.m, np.float64) ** 2 + np.diag(np.asarray(orc.K, np.float64))
    kl = schedules.prior_kl(g1, np.log(m2))
    prior_nats = float(np.sum(kl) / d)
    rng = np.random.default_rng(settings.seed + 11)
    x = rng.multivariate_normal(mu_x, C, size=settings.n_test).reshape(-1, *basis.shape)
    z0 = basis.encode(jnp.asarray(x, jnp.float32))
    logp, nfe = _prior_start_nll(orc.z_only(), sched, z0, rtol=settings.rtol, atol=settings.atol)
    exact = orc.logp_x0(x, _gamma_fn(sched))
    model = np.asarray(logp, np.float64) - float(orc.log_scale_sum)
    nll_diff = float(np.mean(model - exact) / d)  # E[log N(z1) − log p_1(z1)] / D ∈ [−KL, 0]
    z = np.asarray(
        _prior_start_samples(orc.z_only(), sched, jax.random.PRNGKey(settings.seed + 3),
                             n=settings.n_samples, sde_steps=settings.sde_steps),
        np.float64,
    )
    _, cov0 = orc.marginal(_gamma_fn(sched)(0.0))
    var_exact = np.diag(np.asarray(cov0, np.float64))
    log_var_err = np.abs(np.log(z.var(0) / var_exact))
    xs = np.asarray(basis.decode(jnp.asarray(z, jnp.float32)), np.float64).reshape(len(z), -1)
    cov_err = float(np.linalg.norm(np.cov(xs.T) - C) / np.linalg.norm(C))
    passed = (
        abs(nll_diff) <= prior_nats + NLL_THRESHOLD
        and float(log_var_err.max()) < VAR_THRESHOLD
        and cov_err < COV_THRESHOLD
        and rep["num_below"] == 0
    )
    return dict(
        row=f"{basis_name}-white-{spec.label.replace(' ', '_')}",
        basis=basis_name,
        schedule=spec.label,
        worst_sigma2_at_1=rep["worst_sigma2_at_1"],
        prior_term_nats_per_dim=prior_nats,
        prior_term_bpd=prior_nats / math.log(2.0),
        nll_n01_minus_exact=nll_diff,
        nll_nfe=int(nfe),
        worst_log_var_err=float(log_var_err.max()),
        sde_cov_err=cov_err,
        seconds=time.time() - t0,
        passed=bool(passed),
    )


def run_prior_rows(settings: Settings = TEST, rows=PRIOR_ROWS) -> list[dict]:
    return [run_prior_row(name, spec, settings) for name, spec in rows]


PRIOR_HEADER = (
    f"{'basis':7s} {'schedule':34s} {'σ²(1) min':>9s} {'prior bpd':>9s} {'N(0,I)−exact':>12s} "
    f"{'var err':>8s} {'sde cov':>8s} {'sec':>5s}  ok"
)


def format_prior_row(r: dict) -> str:
    return (
        f"{r['basis']:7s} {r['schedule']:34s} {r['worst_sigma2_at_1']:9.2e} "
        f"{r['prior_term_bpd']:9.5f} {r['nll_n01_minus_exact']:12.2e} "
        f"{r['worst_log_var_err']:8.3f} {100 * r['sde_cov_err']:7.2f}% {r['seconds']:5.1f}  "
        f"{'ok' if r['passed'] else 'FAIL'}"
    )


# ------------------------------------------------------------------ output
HEADER = (
    f"{'basis':7s} {'shape':6s} {'prior':8s} {'schedule':22s} {'nll err':>9s} {'nfe':>5s} "
    f"{'sde cov':>8s} {'ode cov':>8s} {'ode mc':>8s} {'std':>4s} {'sec':>5s}  ok"
)


def format_row(r: dict) -> str:
    std = {None: "", True: "yes", False: "NO"}[r["standard_diffusion"]]
    shape = "x".join(map(str, r["shape"]))
    def pct(key):
        v = r.get(key)
        return f"{'-':>8s}" if v is None else f"{100 * v:7.2f}%"

    return (
        f"{r['basis']:7s} {shape:6s} {r['prior']:8s} {r['schedule']:22s} {r['nll_err']:9.2e} "
        f"{r['nll_nfe']:5d} {pct('sde_cov_err')} {pct('ode_cov_err')} "
        f"{pct('ode_mc_cov_err')} {std:>4s} {r['seconds']:5.1f}  {'ok' if r['passed'] else 'FAIL'}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples and steps (= --preset quick)"
    )
    parser.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="full",
        help="sample sizes and step counts (full: the reported check; test: "
        "what the unit tests run; quick: a fast smoke run)",
    )
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    preset = "quick" if args.quick else args.preset
    settings = PRESETS[preset]
    print(
        f"Gaussian oracle check ({preset}): n={settings.n_samples} "
        f"samples, SDE {settings.sde_steps} Euler–Maruyama steps, ODE {settings.ode_steps} Heun "
        f"steps, {settings.n_test} likelihood points (Tsit5 rtol={settings.rtol})"
    )
    out = run_check(settings, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(HEADER)
    for r in out["rows"]:
        print(format_row(r))
    print(
        "standard-diffusion identity (white, soft a=1, variance labels): "
        + ", ".join(
            f"{k}={'yes' if v else 'NO'}" for k, v in out["standard_diffusion_identity"].items()
        )
    )
    print("\nthe product's start (N(0, I) samples and prior; unwhitened, variances 1e-6 … 1):")
    print(PRIOR_HEADER)
    for r in out["prior_start_rows"]:
        print(format_prior_row(r))
    print(format_prior_row(out["prior_start_control"]) + "  (control: must FAIL)")
    floor = out["rows"][0]["mc_floor"] if out["rows"] else float("nan")
    print(f"Monte-Carlo floor of the covariance error (8x8x1): {100 * floor:.2f}%")
    n_fail = sum(not r["passed"] for r in out["rows"])
    print(
        f"{len(out['rows']) - n_fail}/{len(out['rows'])} rows passed "
        f"(nll < {NLL_THRESHOLD:g} nats/dim, cov < {100 * COV_THRESHOLD:g}%); "
        f"wall time {out['wall_seconds']:.1f} s"
    )
    out["preset"] = preset
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
