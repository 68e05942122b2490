"""The one sampling entry point: `generate`, unconditional or with known components.

Every caller (training's sample grids, --mode=sample, evaluation's Fréchet samples,
inpainting and image extension in `gudjax.conditional`, the benchmarks) goes through
`generate(model, num, rng=..., solver=..., steps=...)` with a `score_model.ScoreModel`.

Samplers (docs/maths.md §6), from z_1 ~ N(0, I) at t = 1 to t = 0 in the model's basis:
'sde' Euler–Maruyama on the reverse SDE (`sampling.sde_sample`), 'ode' Heun on the PF-ODE
(`sampling.ode_sample`); images x = Uᵀ(s ⊙ z_0) + μ clipped to [−1, 1]. With
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
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import runtime, sampling, solvers
from gudjax.score_model import ScoreModel

log = logging.getLogger("gudjax")

#: 'sde', 'ode' (above); 'ddim', 'ddim_sde' (η = config.sample.eta), 'dpmpp_2m', 'heun' (the
#: per-component exponential integrators of `gudjax.solvers`, docs/maths.md §10.5) and their
#: '_g' forms with the component variances e^ρ as the exact linear part.
SOLVERS = tuple(solvers.SAMPLERS)


def check_solver(solver: str, field: str = "config.sample.solver") -> str:
    """One-line error unless `solver` is one of `SOLVERS`; returns it."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown {field} {solver!r}; allowed: {', '.join(SOLVERS)}")
    return solver


@functools.partial(
    jax.jit, static_argnames=("num", "solver", "steps", "mesh", "time_grid", "eta")
)
def sample_batch(
    model: ScoreModel, rng, mask=None, z0=None, *, num, solver, steps, mesh, time_grid=None,
    eta=1.0,
):
    """One batch of `num` images (num, H, W, C) in [−1, 1] on `mesh` (num a multiple of its
    device count): z_1 from split(rng)[0], the sampler's own noise from split(rng)[1].
    `mask` (D,) or (num, D) and `z0` (num, D): known components (None: unconditional).
    `time_grid`: `solvers.TIME_GRIDS` (None: the sampler's default); `eta`: 'ddim_sde' only."""
    d = model.basis.dim
    b = num // runtime.num_devices(mesh)
    k1, k2 = jax.random.split(rng)
    normal = functools.partial(runtime.global_draw, jax.random.normal)
    known = mask is not None

    def body(model, k1, k2, *known_parts):
        z1 = normal(k1, (b, d), jnp.float32)
        score_fn, gamma_fn = model.score_fn(), model.gamma_fn()
        kn = sampling.Known(*known_parts) if known else None
        z = solvers.run(
            solver, k2, score_fn, gamma_fn, z1, steps, time_grid=time_grid, eta=eta, known=kn,
            normal=normal, data_var=jnp.exp(model.schedule.rho),
        )
        return jnp.clip(model.basis.decode(z), -1.0, 1.0)

    args, specs = (model, k1, k2), [runtime.WHOLE] * 3
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
    compilation; batch i uses fold_in(rng, i)). `solver`: one of `SOLVERS`; `steps`: sampler
    steps (`solvers.nfe` network calls); `time_grid`: where the steps go
    (`solvers.TIME_GRIDS`, None: the sampler's default); `eta`: noise of 'ddim_sde'.
    `known`: `sampling.Known(mask (D,) or (num, D), z0 (num, D))` in component space
    (conditioning by replacement) or None. `mesh`: default all local devices
    (`runtime.batch_mesh`); the result does not depend on it. `progress` logs each batch.
    """
    check_solver(solver)
    if time_grid is not None:
        solvers.check_time_grid(time_grid)
    num, d = int(num), model.basis.dim
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
