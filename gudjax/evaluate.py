"""Evaluation of a trained model (`--mode=eval`): NLL in bits/dim, Gaussian baseline,
Fréchet distance, and sweeps over the schedule family of one network.

NLL (SPEC §1, §7). Test images k (uint8) are dequantised once with a fixed seed,
x = 2(k + u)/256 − 1, u ~ U[0, 1), and the same x serve every family member and the
baseline (common random numbers: differences between rows are not dequantisation noise).
    z_0 = U(x − μ)/s,   log p(z_0) = log N(z_1; 0, I) + ∫_0^1 ∇·f dt   (PF-ODE, diffrax),
    log p(x) = log p(z_0) − Σ_i log s_i,   bpd = −log p(x)/(D ln 2) + 7,
with the EMA parameters, the divergence by Hutchinson (Rademacher probes, fixed along each
trajectory and identical for every family member) or exactly, and the solver tolerances
of config.eval. Reported: mean and standard error (std/√n) over images; with Hutchinson the
error includes the probe noise. bpd is an upper bound on the discrete NLL (Jensen over u).

Baseline: the best Gaussian model of the data, N(μ, C) with μ, C the mean and covariance of
the uniformly dequantised training images in pixel space: μ = mean of the centred values
(E u = ½) and C = Cov(centred values) + δ·I, δ = (2/256)²/12 = `bases.MIN_VARIANCE` (the
dequantisation noise is independent of the image; this floors every eigenvalue at δ, as
the basis fitting floors variances). Its bpd is closed form on the same dequantised test
images: −log N(x; μ, C)/(D ln 2) + 7. It is cross-checked through the same likelihood code:
the Gaussian oracle (SPEC §8) with this μ, C in the model's basis and schedule, its exact
score and exact terminal marginal, on the first `baseline_ode_images` images; that number
is log p_0 (the Gaussian convolved with the schedule's σ(0) noise), so it sits within
~1e-4 nats/dim of the closed form. Every model NLL has this floor to beat.

Fréchet distance (`gudjax.features`): generated images (EMA params, config sampler and
steps) are quantised to uint8 like real images, mapped back with centre dequantisation,
and compared with the test images in the features of a small classifier trained on the
same data set: "FD-<dataset>-classifier", not FID. With config.eval.inception_weights (a
local .npz of pytorch-fid's Inception weights, `gudjax.inception`) the same samples also give
"FID" in standard InceptionV3 pool-3 features, reported under "fid" with the weights file's
sha256 (config.eval.features="inception": FID alone). `fd_train_vs_test` (train images vs test
images, same counts) is the floor a perfect model would reach with these sample sizes.

Devices: NLL batches and sampler batches are split over all local devices (a 1-D mesh on the
batch axis, `batch_mesh`; jit with NamedSharding, the model replicated); see `nll_bpd` and
`generate` for how the numbers compare with one-device numbers (samples: equal up to float
round-off; NLL: to the solver tolerance).

Sweeps: config.eval.sweep = "a=0:2:5" (5 points from 0 to 2), "a=0,0.5,1", or a grid
"a=0,1,2;b=0.3,0.5" (first parameter slowest). Every point is evaluated from the same
network (family parameters are traced data: one compilation for all points), on the same
dequantised images with the same Hutchinson probes, and its FD samples start from the same
noise (common random numbers, so differences between points are not sampling noise). A point
outside the trained range config.family is evaluated with a logged warning. A point where
every γ_i(t) is identical is marked as standard diffusion: with the white prior
(unwhitened basis) that is standard white-noise diffusion, with the variance-matched prior
(whitened basis) it is standard diffusion of the whitened components (equal log-SNR,
prior N(0, data covariance in the basis)).

Outputs in the workdir: eval.json (format in `write_report`), eval_sweep.png for sweeps,
and a table on stdout.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gudjax
from gudjax import bases, input_pipeline, likelihood, sampling, schedules, step
from gudjax.oracle import GaussianOracle

log = logging.getLogger("gudjax")
Array = Any

MODEL_KINDS = ("network", "oracle")


# ------------------------------------------------------------------ the model interface
@dataclasses.dataclass(frozen=True)
class ScoreModel:
    """One member of a schedule family with its score: all that sampling and NLL need.

    A pytree (passes through jax.jit; family values are traced, so sweeping them never
    recompiles). Data: params (network parameters, or the `GaussianOracle` for 'oracle'),
    basis, schedule, family (dict name → scalar). Static: kind ('network' | 'oracle'),
    graphdef (network only), exact_prior (oracle only: use the exact terminal marginal
    p_1 instead of N(0, I) as the prior of the likelihood).
    """

    kind: str
    graphdef: Any
    exact_prior: bool
    params: Any
    basis: Any
    schedule: Any
    family: dict

    @property
    def fam(self) -> dict | None:
        return self.family or None

    def gamma_fn(self):
        """t ↦ γ(t) (D,) of this family member."""
        return lambda t: self.schedule.gamma(t, self.fam)

    def score_fn(self):
        """score_fn(z (B, D), t) = ∇_z log p_t(z) (= −ε̂/σ for the network)."""
        if self.kind == "network":
            return step.make_score_fn(
                self.graphdef, self.params, self.basis, self.schedule, self.fam
            )
        return self.params.score_fn(self.gamma_fn())

    def prior_logp(self):
        """The prior of the likelihood at t = 1: None (= N(0, I)) or the oracle's exact p_1."""
        if self.kind == "oracle" and self.exact_prior:
            return self.params.prior_logp(self.gamma_fn())
        return None

    def jump_ts(self):
        return sampling.schedule_kinks(self.schedule, self.fam)

    def with_family(self, family: Mapping) -> ScoreModel:
        return dataclasses.replace(self, family=_family_arrays(family))


jax.tree_util.register_dataclass(
    ScoreModel,
    data_fields=["params", "basis", "schedule", "family"],
    meta_fields=["kind", "graphdef", "exact_prior"],
)


def _family_arrays(family: Mapping | None) -> dict:
    return {k: jnp.asarray(float(v), jnp.float32) for k, v in (family or {}).items()}


def _on_one_device(tree):
    """Host copy placed on the first device (replicated checkpoint arrays would make jit
    run the whole evaluation once per device); the batched paths re-place it on their mesh."""
    return jax.device_put(jax.device_get(tree), jax.devices()[0])


# ------------------------------------------------------------------ batches over devices
def batch_mesh(devices: Sequence | None = None) -> jax.sharding.Mesh:
    """1-D mesh over the local devices (default: all of them), axis "data" (`step.AXIS`)."""
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (step.AXIS,))


def row_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Leading (batch) axis split over the mesh, other axes whole; valid for any rank."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(step.AXIS))


def replicate_on(tree, mesh: jax.sharding.Mesh):
    """Every leaf copied to every device of the mesh (model parameters, basis, schedule)."""
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.device_put(tree, rep)


def sharded_score_fn(score_fn, rows):
    """score_fn with its input and output pinned to the batch sharding `rows` (None: as is).

    Pins what XLA's propagation cannot infer: e.g. Hutchinson probes (P, B, D) are drawn
    inside the likelihood code without a sharding, and the Jacobian-vector products through
    the network would then run on the whole batch on every device. The constraint is linear,
    so its JVP pins the tangents (the probes) too, and vmap keeps B as the sharded axis.
    """
    if rows is None:
        return score_fn

    def fn(z, t):
        z = jax.lax.with_sharding_constraint(z, rows)
        return jax.lax.with_sharding_constraint(score_fn(z, t), rows)

    return fn


def padded_size(n: int, mesh: jax.sharding.Mesh) -> int:
    """n rounded up to a multiple of the number of devices in the mesh."""
    k = mesh.devices.size
    return -(-int(n) // k) * k


def pad_rows(x: np.ndarray, size: int, mode: str = "first") -> np.ndarray:
    """x (n, ...) padded to (size, ...): repeats of row 0 ('first') or zeros ('zeros')."""
    x = np.asarray(x)
    m = size - x.shape[0]
    if m <= 0:
        return x
    fill = np.repeat(x[:1], m, axis=0) if mode == "first" else np.zeros((m, *x.shape[1:]), x.dtype)
    return np.concatenate([x, fill])


def network_model(graphdef, params, basis, schedule, family: Mapping | None = None) -> ScoreModel:
    """The trained network (pass the EMA parameters) as a `ScoreModel`."""
    params, basis, schedule = _on_one_device((params, basis, schedule))
    return ScoreModel("network", graphdef, False, params, basis, schedule, _family_arrays(family))


def oracle_model(
    oracle: GaussianOracle,
    basis,
    schedule,
    family: Mapping | None = None,
    *,
    exact_prior: bool = True,
) -> ScoreModel:
    """The Gaussian oracle's exact score as a `ScoreModel` (the network's stand-in in tests)."""
    return ScoreModel(
        "oracle", None, bool(exact_prior), oracle.z_only(), basis, schedule, _family_arrays(family)
    )


# ------------------------------------------------------------------ NLL
def dequantize_uniform(images_uint8, seed: int) -> np.ndarray:
    """x = 2(k + u)/256 − 1 with u ~ U[0, 1) from np.random.default_rng(seed), float32."""
    return input_pipeline.to_model_input(
        images_uint8, dequantize="uniform", rng=np.random.default_rng(seed)
    )


@functools.partial(
    jax.jit,
    static_argnames=("divergence", "num_probes", "rtol", "atol", "solver", "max_steps", "rows"),
)
def _bpd_batch(
    model: ScoreModel, x, rng, *, divergence, num_probes, rtol, atol, solver, max_steps, rows=None
):
    basis = model.basis
    if rows is not None:  # the batch split over devices (GSPMD partitions the whole solve)
        x = jax.lax.with_sharding_constraint(x, rows)
    out = likelihood.ode_log_likelihood(
        sharded_score_fn(model.score_fn(), rows),
        model.gamma_fn(),
        basis.encode(x),
        prior_logp=model.prior_logp(),
        divergence=divergence,
        rng=rng,
        num_probes=num_probes,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        jump_ts=model.jump_ts(),
    )
    bpd = likelihood.bits_per_dim(out["logp"], basis, basis.dim)
    if rows is not None:
        bpd = jax.lax.with_sharding_constraint(bpd, rows)
    return bpd, out["nfe"]


def nll_bpd(
    model: ScoreModel,
    x,
    *,
    seed: int = 0,
    batch_size: int = 64,
    divergence: str = "hutchinson",
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
    mesh: jax.sharding.Mesh | None = None,
) -> dict:
    """Bits/dim of dequantised images x (N, H, W, C) ∈ [−1, 1] under `model`.

    Returns {'bpd': (N,) float64, 'nfe': (num_batches,)}. Batches of `batch_size` (the last
    one padded with repeats of its first row, so every batch shares one compilation);
    Hutchinson probes come from fold_in(PRNGKey(seed), batch index), identical for every
    model evaluated on the same x.

    Devices: each batch is split over `mesh` (default `batch_mesh()`: all local devices) on
    its leading axis, the model replicated (jit + NamedSharding; XLA partitions the solve).
    A batch whose size is not a multiple of the device count is padded with more repeats of
    its first row. The images, probes and solver are the same on any number of devices; the
    adaptive solver takes one step-size sequence per batch (its error norm is over the whole
    batch, a cross-device reduction). Partitioned matmuls round differently, and round-off
    (or, when `batch_size` is not a multiple of the device count, the extra padding rows) can
    change an accept/reject decision of that shared controller, so the result agrees with the
    one-device result to the solver tolerance, not bitwise (measured on the 4×4 oracle:
    ≤ 1.2e-4 bpd at rtol = atol = 1e-4, ≤ 3e-5 at 1e-5).
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.basis.shape):
        raise ValueError(
            f"images have shape {x.shape}, expected (N, {', '.join(map(str, model.basis.shape))})"
        )
    mesh = batch_mesh() if mesh is None else mesh
    rows = row_sharding(mesh)
    model = replicate_on(model, mesh)
    n = x.shape[0]
    bs = max(1, min(int(batch_size), n))
    size = padded_size(bs, mesh)
    root = jax.random.PRNGKey(seed)
    bpd, nfe = [], []
    for i, lo in enumerate(range(0, n, bs)):
        chunk = x[lo : lo + bs]
        m = chunk.shape[0]
        b, e = _bpd_batch(
            model,
            jax.device_put(pad_rows(chunk, size), rows),
            jax.random.fold_in(root, i),
            divergence=divergence,
            num_probes=int(num_probes),
            rtol=float(rtol),
            atol=float(atol),
            solver=solver,
            max_steps=int(max_steps),
            rows=rows,
        )
        b = np.asarray(b, np.float64)[:m]
        if not np.all(np.isfinite(b)):
            raise ValueError(
                f"non-finite NLL in batch {i}: the PF-ODE diverged; try a tighter "
                "config.eval.rtol/atol or another config.eval.solver"
            )
        bpd.append(b)
        nfe.append(int(e))
    return {"bpd": np.concatenate(bpd), "nfe": np.asarray(nfe)}


def mean_sem(values) -> tuple[float, float]:
    """(mean, standard error std/√n with ddof = 1) of a 1-D sample."""
    v = np.asarray(values, np.float64)
    sem = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(np.mean(v)), sem


# ------------------------------------------------------------------ Gaussian baseline
@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """N(mean, cov) of dequantised images in pixel space (float64): cov = V diag(w) Vᵀ."""

    mean: np.ndarray  # (D,)
    eigvals: np.ndarray  # (D,) ascending, all >= floor
    eigvecs: np.ndarray  # (D, D) columns
    num_images: int
    floor: float

    @property
    def cov(self) -> np.ndarray:
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    def logpdf(self, x) -> np.ndarray:
        """log N(x; μ, C) for images (N, H, W, C) or (N, D), float64 (N,)."""
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        r = (x - self.mean) @ self.eigvecs
        d = self.mean.size
        return -0.5 * (
            np.sum(r * r / self.eigvals, -1)
            + np.sum(np.log(self.eigvals))
            + d * math.log(2.0 * math.pi)
        )

    def bpd(self, x) -> np.ndarray:
        """Closed-form bits/dim: −log N(x; μ, C)/(D ln 2) + 7."""
        return -self.logpdf(x) / (self.mean.size * math.log(2.0)) + 7.0


def fit_gaussian(batches_uint8, *, floor: float = bases.MIN_VARIANCE) -> GaussianFit:
    """Mean and covariance of uniformly dequantised images from uint8 batches (one pass).

    μ = mean of the centred values 2(k + ½)/256 − 1; C = Cov(centred) + floor·I, i.e. the
    covariance of the dequantised images (u independent, Var u·(2/256)² = floor); eigenvalues
    below the floor after round-off are raised to it.
    """
    n, s1, s2 = 0, None, None
    for b in batches_uint8:
        x = np.asarray(input_pipeline.to_model_input(b), np.float64).reshape(len(b), -1)
        if s1 is None:
            s1, s2 = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        n += len(x)
        s1 += x.sum(0)
        s2 += x.T @ x
    if n < 2:
        raise ValueError("the Gaussian baseline needs at least 2 training images")
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    w = np.maximum(np.maximum(w, 0.0) + floor, floor)
    return GaussianFit(mean=mean, eigvals=w, eigvecs=v, num_images=n, floor=float(floor))


def gaussian_oracle(fit: GaussianFit, basis) -> GaussianOracle:
    """The Gaussian oracle of `fit` in a basis (float32, for the likelihood code)."""
    return GaussianOracle.from_data(basis, fit.mean, fit.cov)


# ------------------------------------------------------------------ generation
@functools.partial(jax.jit, static_argnames=("num", "solver", "steps", "rows"))
def _generate(model: ScoreModel, rng, *, num, solver, steps, rows=None):
    k1, k2 = jax.random.split(rng)
    z1 = jax.random.normal(k1, (num, model.basis.dim))
    if rows is not None:  # the batch split over devices; the noise values do not change
        z1 = jax.lax.with_sharding_constraint(z1, rows)
    score_fn = sharded_score_fn(model.score_fn(), rows)
    if solver == "sde":
        z0 = sampling.sde_sample(k2, score_fn, model.gamma_fn(), z1, steps)
    else:
        z0 = sampling.ode_sample(score_fn, model.gamma_fn(), z1, steps)
    x = jnp.clip(model.basis.decode(z0), -1.0, 1.0)
    return x if rows is None else jax.lax.with_sharding_constraint(x, rows)


SOLVERS = ("sde", "ode")
#: Fréchet entries of an eval row: classifier features, standard FID (Inception pool-3)
FD_KEYS = ("fd", "fid")


def generate(
    model: ScoreModel,
    num: int,
    *,
    rng,
    solver: str = "sde",
    steps: int = 250,
    batch_size: int = 64,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> np.ndarray:
    """`num` images in [−1, 1] (num, H, W, C): reverse SDE (Euler–Maruyama) or Heun PF-ODE,
    in batches of `batch_size` (one compilation; batch i uses fold_in(rng, i)).

    Each batch is split over `mesh` (default: all local devices), padded to a multiple of the
    device count. The result does not depend on the number of devices: with JAX's
    partitionable threefry (the default) a random draw of shape (B', D) agrees with one of
    shape (B, D) on the first B rows and is the same under any sharding, and the samplers act
    per image. `progress` logs one line per batch.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown sampler '{solver}'; allowed: {', '.join(SOLVERS)}")
    mesh = batch_mesh() if mesh is None else mesh
    rows = row_sharding(mesh)
    model = replicate_on(model, mesh)
    bs = max(1, min(int(batch_size), int(num)))
    size = padded_size(bs, mesh)
    num_batches = -(-int(num) // bs)
    out = []
    t0 = time.time()
    for i in range(num_batches):
        x = _generate(
            model, jax.random.fold_in(rng, i), num=size, solver=solver, steps=int(steps), rows=rows
        )
        out.append(np.asarray(x)[:bs])
        if progress:
            done = min((i + 1) * bs, int(num))
            log.info(
                "sampling: %d/%d images (%.1f s, %d device%s)",
                done,
                int(num),
                time.time() - t0,
                mesh.devices.size,
                "s" if mesh.devices.size > 1 else "",
            )
    return np.concatenate(out)[:num]


def as_real_images(x) -> np.ndarray:
    """Generated x → uint8 → centre-dequantised x: processed exactly like real test images."""
    return input_pipeline.to_model_input(input_pipeline.to_uint8(x))


# ------------------------------------------------------------------ sweeps and the family
def _parse_values(name: str, text: str) -> list[float]:
    text = text.strip()
    try:
        if ":" in text:
            lo, hi, num = text.split(":")
            num = int(num)
            if num < 1:
                raise ValueError
            return [float(v) for v in np.linspace(float(lo), float(hi), num)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"config.eval.sweep: cannot read values {text!r} of '{name}'; use 'lo:hi:num' or "
            "'v1,v2,...'"
        ) from None


def parse_sweep(spec, param_names: Sequence[str]) -> list[dict[str, float]]:
    """Family points of a sweep spec: 'a=0:2:5', 'a=0,1,2', 'a=0,1;b=0.3,0.5' (grid, first
    parameter slowest) or a mapping {name: [values]}. Empty → []."""
    if not spec:
        return []
    if isinstance(spec, str):
        axes = {}
        for part in spec.split(";"):
            if not part.strip():
                continue
            name, eq, values = part.partition("=")
            if not eq:
                raise ValueError(
                    f"config.eval.sweep: cannot read {part.strip()!r}; use e.g. 'a=0:2:5' or "
                    "'a=0,1;b=0.3,0.5'"
                )
            axes[name.strip()] = _parse_values(name.strip(), values)
    else:
        axes = {str(k): [float(v) for v in np.atleast_1d(vals)] for k, vals in dict(spec).items()}
    for name, values in axes.items():
        if name not in param_names:
            raise ValueError(
                f"config.eval.sweep: the schedule has no family parameter '{name}'; allowed: "
                f"{', '.join(param_names) or 'none'}"
            )
        if not values:
            raise ValueError(f"config.eval.sweep: no values for '{name}'")
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


def out_of_range(point: Mapping, trained: Mapping, schedule_defaults: Mapping) -> list[str]:
    """Descriptions of family values outside what the network was trained on."""
    bad = []
    for k, v in point.items():
        if k in trained:
            lo, hi = (float(u) for u in trained[k])
            if not lo - 1e-9 <= v <= hi + 1e-9:
                bad.append(
                    f"{k}={v:g} outside the trained range config.family.{k}=[{lo:g}, {hi:g}]"
                )
        elif k in schedule_defaults and abs(float(schedule_defaults[k]) - v) > 1e-9:
            bad.append(
                f"{k}={v:g} but the network was trained at the fixed {k}="
                f"{float(schedule_defaults[k]):g} (config.family has no {k})"
            )
    return bad


def standard_diffusion_label(schedule, basis, family: Mapping | None) -> str | None:
    """How a family member equals standard diffusion, or None.

    Exactly when every γ_i(t) is the same function of t (`schedules.is_standard_diffusion`):
    white prior → 'standard diffusion (white noise)'; variance-matched prior →
    'standard diffusion, variance-matched prior (equal log-SNR)'.
    """
    fam = {k: jnp.asarray(v, jnp.float32) for k, v in (family or {}).items()} or None
    if not schedules.is_standard_diffusion(schedule, fam):
        return None
    if basis.whiten:
        return "standard diffusion, variance-matched prior (equal log-SNR)"
    return "standard diffusion (white noise)"


# ------------------------------------------------------------------ config
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
    if s["sampler"] not in SOLVERS:
        raise ValueError(
            f"unknown config.eval.sampler {s['sampler']!r}; allowed: {', '.join(SOLVERS)}"
        )
    for name in ("batch_size", "num_probes", "sampler_steps", "max_steps"):
        if int(s[name]) < 1:
            raise ValueError(f"config.eval.{name}={s[name]!r} must be a positive integer")
    for name in ("num_images", "fd_num_samples", "fd_num_reference"):
        if s.get(name) is not None and int(s[name]) < (2 if name.startswith("fd") else 1):
            raise ValueError(f"config.eval.{name}={s[name]!r} is too small (None = whole split)")
    sched = config.schedule.name
    if sched not in schedules.FAMILY_PARAMS:
        raise ValueError(
            f"unknown config.schedule.name '{sched}'; allowed: {', '.join(schedules.SCHEDULES)}"
        )
    s["points"] = parse_sweep(s.get("sweep"), schedules.FAMILY_PARAMS[sched])
    return s


# ------------------------------------------------------------------ the evaluation run
def evaluate_trained(
    config, workdir: str, *, basis, schedule, graphdef, params, step_: int
) -> dict:
    """Evaluate restored EMA `params` (see the module docstring); writes eval.json."""
    s = eval_settings(config)
    from gudjax.train import family_member

    names = schedules.FAMILY_PARAMS[config.schedule.name]
    base = family_member(config)
    points = [{**base, **p} for p in s["points"]] or [base]
    trained = dict(config.get("family", {}))
    defaults = {k: config.schedule[k] for k in names if k in config.schedule}
    model = network_model(graphdef, params, basis, schedule)
    dataset = config.data.name
    t_start = time.time()

    # -- data: dequantised test images (fixed u), same x for every row and the baseline
    test_u8 = _read_split(config.data, s.get("split", "test"), s.get("num_images"))
    x = dequantize_uniform(test_u8, int(s["seed"]))
    log.info("eval: %d %s %s images, %d family point(s)", len(x), dataset, s["split"], len(points))

    # -- baseline
    fit = fit_gaussian(input_pipeline.fit_batches(config.data, batch_size=256))
    g_bpd = fit.bpd(x)
    g_mean, g_sem = mean_sem(g_bpd)
    baseline = {
        "name": "gaussian",
        "description": "N(mu, C), mean and covariance of the uniformly dequantised training "
        "images in pixel space (C = Cov + (2/256)^2/12 I); closed form on the same test images",
        "train_images": fit.num_images,
        "eigenvalue_floor": fit.floor,
        "num_images": int(len(x)),
        "bpd": g_mean,
        "bpd_sem": g_sem,
    }
    k = min(int(s.get("baseline_ode_images") or 0), len(x))
    if k:
        baseline["ode_check"] = _baseline_ode_check(
            fit, basis, schedule, points[0], x[:k], g_bpd[:k], s
        )

    # -- FD: features, reference statistics, noise floor
    fd_infos = _fd_setup(config, s, workdir)  # {"fd": classifier, "fid": Inception}

    # -- the rows
    rows = []
    nll_desc = _nll_description(s)
    for point in points:
        t0 = time.time()
        warnings = out_of_range(point, trained, defaults)
        for w in warnings:
            log.warning("eval: family point %s: %s (evaluating anyway)", _fmt_point(point), w)
        m = model.with_family(point)
        res = nll_bpd(
            m,
            x,
            seed=int(s["seed"]) + 1,
            batch_size=int(s["batch_size"]),
            divergence=s["divergence"],
            num_probes=int(s["num_probes"]),
            rtol=float(s["rtol"]),
            atol=float(s["atol"]),
            solver=s["solver"],
            max_steps=int(s["max_steps"]),
        )
        mean, sem = mean_sem(res["bpd"])
        row = {
            "family": {k_: float(v) for k_, v in point.items()},
            "standard_diffusion": standard_diffusion_label(schedule, basis, point),
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
            },
        }
        if fd_infos:  # one set of samples, compared in every feature space
            any_info = next(iter(fd_infos.values()))
            gen = generate(
                m,
                int(any_info["num_generated"]),
                rng=jax.random.fold_in(jax.random.PRNGKey(int(s["seed"])), 1000),
                solver=s["sampler"],
                steps=s["sampler_steps"],
                batch_size=int(s["batch_size"]),
            )
            gen = as_real_images(gen)
            from gudjax.features import feature_stats, frechet_distance

            for key, info in fd_infos.items():
                feats = info["extractor"](gen)
                fd = frechet_distance(*feature_stats(feats), info["ref_mean"], info["ref_cov"])
                row[key] = {"name": info["extractor"].name, "value": fd, **_fd_record(info, s)}
        row["seconds"] = round(time.time() - t0, 2)
        rows.append(row)
        log.info("eval: %s", _row_line(row))

    report = {
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
            "dequantization": "uniform",
            "dequantization_seed": int(s["seed"]),
            "units": "bits/dim (+7 for 8-bit data in [-1, 1])",
        },
        "baseline": baseline,
        "fd_settings": None,  # replaced below when the classifier FD is computed
        **{f"{key}_settings": _fd_settings(info, s) for key, info in fd_infos.items()},
        "rows": rows,
        "seconds": round(time.time() - t_start, 1),
    }
    if len(points) > 1 and jax.process_index() == 0:
        report["plot"] = plot_sweep(report, os.path.join(workdir, "eval_sweep.png"))
    if jax.process_index() == 0:
        write_report(report, os.path.join(workdir, "eval.json"))
        print(format_table(report), flush=True)
    return report


def _baseline_ode_check(fit, basis, schedule, point, x, data_bpd, s) -> dict:
    """The Gaussian baseline through the likelihood code: the oracle's exact score and exact
    p_1 prior in the model's basis and schedule. The PF-ODE gives log p_0, the data Gaussian
    convolved with the schedule's σ(0) noise: checked against p_0 in closed form; the gap
    p_0 − data Gaussian (finite γ(0)) is reported next to it."""
    k = len(x)
    orc = gaussian_oracle(fit, basis)
    div = "exact" if basis.dim <= 256 else s["divergence"]
    ode = nll_bpd(
        oracle_model(orc, basis, schedule, point),
        x,
        seed=int(s["seed"]),
        batch_size=min(k, int(s["batch_size"])),
        divergence=div,
        num_probes=int(s["num_probes"]),
        rtol=float(s["rtol"]),
        atol=float(s["atol"]),
        solver=s["solver"],
        max_steps=int(s["max_steps"]),
    )
    fam = _family_arrays(point) or None
    lp0 = orc.logp_x0(x, lambda t: schedule.gamma(t, fam))
    p0_bpd = -lp0 / (basis.dim * math.log(2.0)) + 7.0
    return {
        "num_images": k,
        "family": {n: float(v) for n, v in point.items()},
        "divergence": div,
        "bpd_ode": float(np.mean(ode["bpd"])),
        "bpd_p0_closed_form": float(np.mean(p0_bpd)),
        "max_abs_diff_bpd": float(np.max(np.abs(ode["bpd"] - p0_bpd))),
        "bpd_data_gaussian": float(np.mean(data_bpd)),
        "p0_minus_data_gaussian_bpd": float(np.mean(p0_bpd - data_bpd)),
        "note": "PF-ODE with the oracle's exact score and p_1 prior vs the exact log p_0 "
        "(max_abs_diff_bpd: solver error); p_0 is the data Gaussian plus the schedule's "
        "sigma(0) noise, hence p0_minus_data_gaussian_bpd",
    }


def _read_split(data_config, split: str, max_examples) -> np.ndarray:
    parts = list(
        input_pipeline.eval_batches(
            data_config, split=split, batch_size=512, max_examples=max_examples
        )
    )
    return np.concatenate(parts)


def _nll_description(s) -> dict:
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


def _fd_setup(config, s, workdir) -> dict:
    """Feature extractors with their reference statistics, keyed by report entry:
    'fd' = FD-<dataset>-classifier, 'fid' = standard FID (Inception pool-3). Each carries the
    train-vs-test floor (train images vs test images, same counts)."""
    from gudjax import features

    kinds = features.feature_extractors(s)
    if not kinds:
        return {}
    extractors = {}
    if "classifier" in kinds:
        cache = s.get("classifier_dir") or os.path.join(workdir, "fd_classifier")
        extractors["fd"] = features.load_or_train_classifier(
            config.data,
            cache,
            steps=int(s["classifier_steps"]),
            batch_size=int(s["classifier_batch_size"]),
            lr=float(s["classifier_lr"]),
            seed=int(s["classifier_seed"]),
            max_train_examples=s.get("classifier_train_examples"),
        )
    if "inception" in kinds:
        from gudjax import inception

        extractors["fid"] = inception.InceptionFeatures(
            s["inception_weights"], batch_size=int(s.get("inception_batch_size") or 64)
        )
        log.info("FID features: %s", extractors["fid"].describe())
    ref_u8 = _read_split(config.data, s["split"], s.get("fd_num_reference"))
    ref_x = input_pipeline.to_model_input(ref_u8)
    n_gen = int(s.get("fd_num_samples") or len(ref_u8))
    train_x = input_pipeline.to_model_input(_read_split(config.data, "train", len(ref_u8)))
    out = {}
    for key, extractor in extractors.items():
        ref_mean, ref_cov = features.feature_stats(extractor(ref_x))
        floor = features.frechet_distance(
            *features.feature_stats(extractor(train_x)), ref_mean, ref_cov
        )
        out[key] = {
            "extractor": extractor,
            "ref_mean": ref_mean,
            "ref_cov": ref_cov,
            "num_reference": int(len(ref_u8)),
            "num_generated": n_gen,
            "fd_train_vs_test": {
                "value": floor,
                "num_train": int(len(train_x)),
                "num_test": int(len(ref_u8)),
            },
        }
    return out


def _fd_record(fd_info, s) -> dict:
    """What is written next to every Fréchet number: extractor, counts, sampler, steps."""
    return {
        "feature_extractor": fd_info["extractor"].describe(),
        "num_generated": fd_info["num_generated"],
        "num_reference": fd_info["num_reference"],
        "reference": f"{s['split']} split, centre dequantisation",
        "sampler": s["sampler"],
        "steps": s["sampler_steps"],
        "generated_processing": "clipped to [-1, 1], quantised to uint8, centre dequantised",
    }


def _fd_settings(fd_info, s) -> dict:
    ex = fd_info["extractor"]
    return {
        "name": ex.name,
        **_fd_record(fd_info, s),
        "fd_train_vs_test": fd_info["fd_train_vs_test"],
        "extractor_details": ex.info,
    }


# ------------------------------------------------------------------ reporting
def write_report(report: dict, path: str) -> str:
    """eval.json: {format_version, gudjax, workdir, checkpoint_step, params, dataset, split,
    image_shape, dim, basis, schedule, trained_family, sweep, nll_settings, baseline
    {bpd, bpd_sem, ode_check, ...}, fd_settings {name, feature_extractor, num_generated,
    num_reference, sampler, steps, fd_train_vs_test, extractor_details}, fid_settings
    (same fields, standard FID; only with config.eval.inception_weights), rows [{family,
    standard_diffusion,
    in_trained_range, warnings, nll {bpd, bpd_sem, num_images, estimator, solver, rtol,
    atol, nfe_mean, gaussian_baseline_bpd, beats_baseline}, fd {name, value,
    feature_extractor, num_generated, num_reference, sampler, steps}, fid {same, standard FID},
    seconds}], plot}. fd_settings is None when the classifier FD is off."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=_json_default)
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, np.generic | np.ndarray | jax.Array):
        return np.asarray(o).tolist()
    return str(o)


def _fmt_point(point: Mapping) -> str:
    return " ".join(f"{k}={v:g}" for k, v in point.items()) or "(fixed schedule)"


def _row_line(row) -> str:
    nll = row["nll"]
    out = f"{_fmt_point(row['family'])}: NLL {nll['bpd']:.4f} ± {nll['bpd_sem']:.4f} bpd"
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
    header = (
        [*names, "NLL bpd", "± sem", "NFE"]
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
