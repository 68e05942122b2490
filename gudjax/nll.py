"""Negative log-likelihood in bits/dim through the PF-ODE (docs/maths.md §7).

Test images (stored uint8 k, level l = round(k·(L − 1)/255) at the data's L levels) are
dequantised once with a fixed seed, x = 2(l + u)/L − 1, u ~ U[0, 1) (`dequantize_uniform`),
and the same x serve every family member, the bound and the baselines (common random
numbers: differences between rows are not dequantisation noise).
    z_0 = U(x − μ)/s,   log p(z_0) = log N(z_1; 0, I) + ∫_0^1 ∇·f dt   (PF-ODE, diffrax),
    log p(x) = log p(z_0) − Σ_i log s_i,   bpd = −log p(x)/(D ln 2) + log₂(L/2),
with the divergence by Hutchinson (Rademacher probes, fixed along each trajectory and
identical for every family member) or exactly. `mean_sem` gives the mean and standard error
(std/√n) over images; with Hutchinson the error includes the probe noise. bpd is an upper
bound on the discrete NLL (Jensen over u).

Devices: each batch runs PER DEVICE (`runtime.per_device`): every device solves the PF-ODE
of its own rows with its own adaptive step sizes, and the probes are drawn with the global
batch shape and sliced (`runtime.global_draw`), so images and probes do not depend on the
device count; see `nll_bpd` for how the numbers compare with one-device numbers.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import jax
import numpy as np

from gudjax import input_pipeline, likelihood, runtime
from gudjax.score_model import ScoreModel

log = logging.getLogger("gudjax")


def dequantize_uniform(images_uint8, seed: int, levels: int = 256) -> np.ndarray:
    """x = 2(l + u)/L − 1 with u ~ U[0, 1) from np.random.default_rng(seed), float32
    (l = `input_pipeline.to_levels`(k, L))."""
    return input_pipeline.to_model_input(
        images_uint8, levels=levels, dequantize="uniform", rng=np.random.default_rng(seed)
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "divergence",
        "num_probes",
        "rtol",
        "atol",
        "solver",
        "max_steps",
        "mesh",
        "levels",
    ),
)
def bpd_batch(
    model: ScoreModel,
    x,
    rng,
    *,
    divergence,
    num_probes,
    rtol,
    atol,
    solver,
    max_steps,
    mesh,
    levels=256,
):
    """(bpd (B,), nfe (devices,)) of one batch x (B, H, W, C) on `mesh` (B a multiple of its
    device count): the PF-ODE likelihood of each device's rows, probes from `rng`."""
    rademacher = functools.partial(runtime.global_draw, jax.random.rademacher, axis=1)

    def body(model, x, rng):
        basis = model.basis
        out = likelihood.ode_log_likelihood(
            model.score_fn(),
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
            rademacher=rademacher,
        )
        bpd = likelihood.bits_per_dim(out["logp"], basis, basis.dim, levels=levels)
        return bpd, out["nfe"][None]

    specs = (runtime.WHOLE, runtime.ROWS, runtime.WHOLE)
    return runtime.per_device(body, mesh, specs, (runtime.ROWS, runtime.ROWS))(model, x, rng)


def settings_options(s) -> dict:
    """The `nll_bpd` solver keywords from evaluation settings (config.eval with its defaults):
    batch_size, divergence, num_probes, rtol, atol, solver, max_steps."""
    return dict(
        batch_size=int(s["batch_size"]),
        divergence=s["divergence"],
        num_probes=int(s["num_probes"]),
        rtol=float(s["rtol"]),
        atol=float(s["atol"]),
        solver=s["solver"],
        max_steps=int(s["max_steps"]),
    )


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
    levels: int = 256,
    store=None,
    chunk_prefix: str = "nll",
) -> dict:
    """Bits/dim of dequantised images x (N, H, W, C) ∈ [−1, 1] under `model`, for data
    with `levels` grey levels (`likelihood.bits_per_dim`).

    Returns {'bpd': (N,) float64, 'nfe': (num_batches,)} (nfe of a batch: the most vector
    field evaluations any device took). Batches of `batch_size` (the last one padded with
    repeats of its first row, so every batch shares one compilation); Hutchinson probes come
    from fold_in(PRNGKey(seed), batch index), identical for every model evaluated on the
    same x.

    Devices: each batch is split over `mesh` (default `runtime.batch_mesh()`: all local
    devices) on its leading axis, padded with more repeats of its first row to a multiple
    of the device count, the model replicated; each device integrates its own rows with its
    own adaptive step-size sequence (`bpd_batch`). The images, probes and solver are the
    same on any number of devices, but the controller's error norm runs over the rows a
    device holds, so the step sizes (and round-off) depend on how the batch is split: the
    result agrees with the one-device result to the solver tolerance, not bitwise.

    With a `store` (`gudjax.chunks.ChunkStore`) each batch's result is stored as chunk
    `<chunk_prefix>_b<index>` as it finishes and loaded instead of recomputed on a restart
    (the batches and their probes do not depend on which batches were done before).
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.basis.shape):
        raise ValueError(
            f"images have shape {x.shape}, expected (N, {', '.join(map(str, model.basis.shape))})"
        )
    mesh = runtime.batch_mesh() if mesh is None else mesh
    model = runtime.replicate(model, mesh)
    n = x.shape[0]
    bs = max(1, min(int(batch_size), n))
    root = jax.random.PRNGKey(seed)
    bpd, nfe = [], []

    def one_batch(c):
        b, e = bpd_batch(
            model,
            c.arrays[0],
            jax.random.fold_in(root, c.index),
            divergence=divergence,
            num_probes=int(num_probes),
            rtol=float(rtol),
            atol=float(atol),
            solver=solver,
            max_steps=int(max_steps),
            mesh=mesh,
            levels=int(levels),
        )
        b = np.asarray(b, np.float64)[: c.num_real]
        if not np.all(np.isfinite(b)):
            raise ValueError(
                f"non-finite NLL in batch {c.index}: the PF-ODE diverged; try a tighter "
                "config.eval.rtol/atol or another config.eval.solver"
            )
        return {"bpd": b, "nfe": np.int64(np.max(np.asarray(e)))}

    num_batches = -(-n // bs)
    for c in runtime.padded_chunks(n, bs, (x,), mesh=mesh, pad="first"):
        t0 = time.time()
        if store is None:
            out = one_batch(c)
        else:
            out = store.cached_arrays(f"{chunk_prefix}_b{c.index}", lambda c=c: one_batch(c))
        bpd.append(out["bpd"])
        nfe.append(int(out["nfe"]))
        # progress of a long evaluation (a stored batch takes ~0 s)
        log.info("NLL %s: batch %d/%d, %.4f bits/dim, %d function evaluations, %.0f s",
                 chunk_prefix, c.index + 1, num_batches, float(np.mean(out["bpd"])),
                 nfe[-1], time.time() - t0)
    return {"bpd": np.concatenate(bpd), "nfe": np.asarray(nfe)}


def mean_sem(values) -> tuple[float, float]:
    """(mean, standard error std/√n with ddof = 1) of a 1-D sample."""
    v = np.asarray(values, np.float64)
    sem = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(np.mean(v)), sem
