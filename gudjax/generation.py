"""The one sampling entry point: `generate`, unconditional or with known components.

Every caller (training's sample grids, --mode=sample, evaluation's Fréchet samples,
inpainting and image extension in `gudjax.conditional`, the benchmarks) goes through
`generate(model, num, rng=..., solver=..., steps=...)` with a `score_model.ScoreModel`.

Samplers (docs/maths.md §6), from z_1 ~ N(0, I) at t = 1 to t = 0 in the model's basis:
'sde' Euler–Maruyama on the reverse SDE (`sampling.sde_sample`), 'ode' Heun on the PF-ODE
(`sampling.ode_sample`), the few-step samplers of `gudjax.solvers` and
`gudjax.gaussian_flow` (§10.5; the latter's step maps are built on the host first, from
the model's data moments); images x = Uᵀ(s ⊙ z_0) + μ clipped to [−1, 1]. With
`known = sampling.Known(mask, z0)` the known components are replaced at every step by the
forward-noised truth α_i(t) z0_i + σ_i(t) ε_i (conditioning by replacement, §6).

Devices: each batch of `batch_size` images is padded to a multiple of the device count
and runs PER DEVICE (`runtime.per_device`, the model replicated, the rows split). All noise
is drawn with the global batch shape and sliced per device (`runtime.global_draw`), and the
samplers act per image, so the result does not depend on the number of devices (equal up
to float round-off): with JAX's partitionable threefry a draw of shape (B', D) agrees with
one of shape (B, D) on the first B rows.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import gaussian_flow, runtime, sampling, solvers
from gudjax.score_model import ScoreModel

log = logging.getLogger("gudjax")

#: 'sde', 'ode' (above); 'ddim', 'ddim_sde' (η = config.sample.eta), 'dpmpp_2m', 'heun' (the
#: per-component exponential integrators of `gudjax.solvers`, docs/maths.md §10.5), their
#: '_g' forms with the component variances e^ρ as the exact linear part, and 'ddim_cov',
#: 'dpmpp_2m_cov' (`gudjax.gaussian_flow`: the Gaussian flow of the data's full covariance as
#: the linear part; they need the model's `moments`).
SOLVERS = (*solvers.SAMPLERS, *gaussian_flow.SAMPLERS)


def check_solver(solver: str, field: str = "config.sample.solver") -> str:
    """One-line error unless `solver` is one of `SOLVERS`; returns it."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown {field} {solver!r}; allowed: {', '.join(SOLVERS)}")
    return solver


def nfe(solver: str, steps: int) -> int:
    """Network calls of `solver` (one of `SOLVERS`) with `steps` steps."""
    return int(steps) if solver in gaussian_flow.SAMPLERS else solvers.nfe(solver, steps)


def default_time_grid(solver: str) -> str:
    """The time grid `solver` uses when none is given."""
    if solver in gaussian_flow.SAMPLERS:
        return gaussian_flow.DEFAULT_TIME_GRID
    return solvers.default_time_grid(solver)


_FLOWS: dict = {}  # (steps, grid, digest of moments and γ) → GaussianFlow, the last few
_MAX_FLOWS = 4


def cov_flow(model: ScoreModel, solver: str, steps: int, time_grid: str | None):
    """The per-step maps of the full-covariance `solver` for `model` (host, float64); the
    last few are kept, so repeated calls (extension windows, training's sample grids) reuse
    them."""
    gaussian_flow.check_dim(solver, model.basis.dim)
    if model.moments is None:
        raise ValueError(
            f"sampler {solver!r} needs the data's mean and covariance in component space: "
            "build the model with .with_moments(mean, cov) (the runs do this from the "
            "training split, cached in <workdir>/data_moments.npz)"
        )
    mean, cov = (np.asarray(a, np.float64) for a in model.moments)
    grid = time_grid or default_time_grid(solver)
    gamma_fn = model.gamma_fn()
    probe = np.asarray(jax.jit(jax.vmap(gamma_fn))(jnp.linspace(0.0, 1.0, 257)), np.float64)
    digest = hashlib.sha256(b"".join(a.tobytes() for a in (mean, cov, probe))).hexdigest()
    key = (int(steps), grid, digest)
    if key not in _FLOWS:
        while len(_FLOWS) >= _MAX_FLOWS:
            _FLOWS.pop(next(iter(_FLOWS)))
        _FLOWS[key] = gaussian_flow.grid_flow(gamma_fn, steps, grid, mean, cov)
    return _FLOWS[key]


@functools.partial(
    jax.jit, static_argnames=("num", "solver", "steps", "mesh", "time_grid", "eta")
)
def sample_batch(
    model: ScoreModel, rng, mask=None, z0=None, flow=None, *, num, solver, steps, mesh,
    time_grid=None, eta=1.0,
):
    """One batch of `num` images (num, H, W, C) in [−1, 1] on `mesh` (num a multiple of its
    device count): z_1 from split(rng)[0], the sampler's own noise from split(rng)[1].
    `mask` (D,) or (num, D) and `z0` (num, D): known components (None: unconditional).
    `time_grid`: `solvers.TIME_GRIDS` (None: the sampler's default); `eta`: 'ddim_sde' only.
    `flow`: the `gaussian_flow.GaussianFlow` of a full-covariance sampler (`cov_flow`)."""
    d = model.basis.dim
    b = num // runtime.num_devices(mesh)
    k1, k2 = jax.random.split(rng)
    normal = functools.partial(runtime.global_draw, jax.random.normal)
    known = mask is not None
    if (flow is not None) != (solver in gaussian_flow.SAMPLERS):
        raise ValueError(f"sampler {solver!r}: pass flow= exactly for {gaussian_flow.SAMPLERS}")

    def body(model, k1, k2, *extra):
        z1 = normal(k1, (b, d), jnp.float32)
        score_fn, gamma_fn = model.score_fn(), model.gamma_fn()
        fl, known_parts = (extra[0], extra[1:]) if flow is not None else (None, extra)
        kn = sampling.Known(*known_parts) if known else None
        if fl is not None:
            z = gaussian_flow.sample(
                score_fn, gamma_fn, z1, fl, order=gaussian_flow.SAMPLERS[solver], rng=k2,
                known=kn, normal=normal,
            )
        else:
            z = solvers.run(
                solver, k2, score_fn, gamma_fn, z1, steps, time_grid=time_grid, eta=eta,
                known=kn, normal=normal, data_var=jnp.exp(model.schedule.rho),
            )
        return jnp.clip(model.basis.decode(z), -1.0, 1.0)

    args, specs = (model, k1, k2), [runtime.WHOLE] * 3
    if flow is not None:
        args += (flow,)
        specs += [runtime.WHOLE]
    if known:
        args += (mask, z0)
        specs += [runtime.ROWS if mask.ndim == 2 else runtime.WHOLE, runtime.ROWS]
    return runtime.per_device(body, mesh, tuple(specs), runtime.ROWS)(*args)


def generate(
    model: ScoreModel,
    num: int,
    *,
    rng,
    solver: str = "sde",
    steps: int = 250,
    batch_size: int = 64,
    mesh: jax.sharding.Mesh | None = None,
    known: sampling.Known | None = None,
    progress: bool = False,
    time_grid: str | None = None,
    eta: float = 1.0,
) -> np.ndarray:
    """`num` images in [−1, 1] (num, H, W, C) numpy, in batches of `batch_size` (one
    compilation; batch i uses fold_in(rng, i)). `solver`: one of `SOLVERS` (the '_cov' ones
    need `model.moments`); `steps`: sampler steps (`nfe` network calls); `time_grid`: where
    the steps go (`solvers.TIME_GRIDS`, None: the sampler's default); `eta`: noise of
    'ddim_sde'.
    `known`: `sampling.Known(mask (D,) or (num, D), z0 (num, D))` in component space
    (conditioning by replacement) or None. `mesh`: default all local devices
    (`runtime.batch_mesh`); the result does not depend on it. `progress` logs each batch.
    """
    check_solver(solver)
    if time_grid is not None:
        solvers.check_time_grid(time_grid)
    num, d = int(num), model.basis.dim
    flow = None
    if solver in gaussian_flow.SAMPLERS:
        t_flow = time.time()
        flow = cov_flow(model, solver, int(steps), time_grid)
        if progress:
            log.info("sampling: %s step maps for %d steps (D = %d) in %.1f s", solver,
                     int(steps), d, time.time() - t_flow)
    mesh = runtime.batch_mesh() if mesh is None else mesh
    mask = z0 = mask_rows = None
    if known is not None:
        mask = np.asarray(known.mask, bool)
        z0 = np.asarray(known.z0, np.float32)
        if mask.shape not in ((d,), (num, d)):
            raise ValueError(
                f"component mask has shape {tuple(mask.shape)}; allowed: ({d},) or ({num}, {d})"
            )
        if z0.shape != (num, d):
            raise ValueError(f"known values have shape {tuple(z0.shape)}; expected ({num}, {d})")
        mask_rows = mask if mask.ndim == 2 else None
        mask = runtime.replicate(mask, mesh) if mask.ndim == 1 else None
    model = runtime.replicate(model, mesh)
    flow = None if flow is None else runtime.replicate(flow, mesh)
    bs = max(1, min(int(batch_size), num))
    n_dev = runtime.num_devices(mesh)
    out = []
    t0 = time.time()
    for c in runtime.padded_chunks(num, bs, (z0, mask_rows), mesh=mesh):
        z0_c, rows_c = c.arrays
        x = sample_batch(
            model,
            jax.random.fold_in(rng, c.index),
            rows_c if rows_c is not None else mask,
            z0_c,
            flow,
            num=c.size,
            solver=solver,
            steps=int(steps),
            mesh=mesh,
            time_grid=time_grid,
            eta=float(eta),
        )
        out.append(np.asarray(x)[: c.num_real])
        if progress:
            log.info(
                "sampling: %d/%d images (%.1f s, %d device%s)",
                c.start + c.num_real,
                num,
                time.time() - t0,
                n_dev,
                "s" if n_dev > 1 else "",
            )
    if not out:
        return np.zeros((0, *model.basis.shape), np.float32)
    return np.concatenate(out)
