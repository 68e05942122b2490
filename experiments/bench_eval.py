"""Benchmark of the evaluation paths: NLL time per image, and sampling images/s for a
100-step reverse SDE (Euler–Maruyama) against a 100-step Heun PF-ODE.

    python -m experiments.bench_eval [--json PATH] [--quick] [--steps N] [--nll-batch B]

Setup (32×32×3, `--quick`: 8×8×1 with a tiny network, 10 steps,
NLL tolerances 1e-3: a smoke test): pixel basis with the white prior,
soft schedule ordered by column (a = 1, unclipped), and a CPU-sized γ-conditioned U-Net
(ch 32, ch_mult (1, 2, 2), one ResBlock per level, attention and cross-attention at 8×8).
The weights are random: the layers that are zero-initialised (ResBlock outputs, attention
outputs, conv_out) are filled with N(0, 0.02²) so that ε̂ ≠ 0. An untrained score makes the
adaptive solver take a different number of steps than a trained one, so besides the
seconds per image the table gives the number of function evaluations (NFE) and the cost
per NFE, which is what transfers to a trained model.

NLL: the jitted batch function behind `gudjax.evaluate.nll_bpd` (the --mode=eval path):
PF-ODE with Hutchinson divergence (1 Rademacher probe), Tsit5, rtol = atol = 1e-5; one NFE =
one linearised network call plus one Jacobian-vector product for the whole batch.
Sampling: the function behind `gudjax.evaluate.generate`; SDE = N network calls, Heun = 2N.
Both are compiled ahead of time (`.lower(...).compile()`, compile seconds reported
separately). The NLL is timed on one call (long enough to amortise the first-call
overhead); each sampler on its second call. Wall clock, results fetched to the host.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gudjax import bases, evaluate, schedules
from gudjax.models import count_params, create_model, default_model_config


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench_eval", description=__doc__.split("\n")[0]
    )
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--quick", action="store_true", help="8×8×1, tiny network, 10 steps")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 100)")
    p.add_argument("--nll-batch", type=int, default=None, help="images per NLL batch")
    p.add_argument("--sample-batch", type=int, default=None, help="images per sampler batch")
    return p.parse_args(argv)


def model_config(quick: bool) -> ml_collections.ConfigDict:
    m = default_model_config()
    if quick:
        m.ch, m.ch_mult, m.num_res_blocks = 8, (1,), 1
        m.attn_resolutions, m.cross_attn_resolutions = (), ()
        m.token_dim, m.num_heads = 8, 1
    else:
        m.ch, m.ch_mult, m.num_res_blocks = 32, (1, 2, 2), 1
        m.attn_resolutions, m.cross_attn_resolutions = (8,), (8,)
        m.token_dim, m.num_heads = 32, 2
    m.dropout = 0.0
    return m


def fill_zero_layers(params, rng, std: float = 0.02):
    """Random values in the all-zero weight tensors (zero-initialised output layers)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(rng, len(leaves))
    out = [
        std * jax.random.normal(k, x.shape, x.dtype) if x.ndim > 1 and not np.any(x) else x
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def random_images(n: int, shape, seed: int = 0) -> np.ndarray:
    """Smooth random images in [−1, 1] (neighbouring pixels correlated)."""
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, *shape))
    x = 0.5 * (x + np.roll(x, 1, axis=1))
    return (0.5 * (x + np.roll(x, 1, axis=2))).astype(np.float32)


def aot_compile(jitted, *args, **static):
    """(compile seconds, the compiled executable) of a jitted function for these arguments."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    return time.perf_counter() - t0, compiled


def timed(compiled, *args):
    """(seconds of one call, outputs fetched to the host) of a compiled executable."""
    t0 = time.perf_counter()
    out = jax.device_get(compiled(*args))
    return time.perf_counter() - t0, out


def main(argv=None) -> dict:
    args = parse_args(argv)
    quick = args.quick
    shape = (8, 8, 1) if quick else (32, 32, 3)
    steps = args.steps or (10 if quick else 100)
    nll_batch = args.nll_batch or (4 if quick else 16)
    sample_batch = args.sample_batch or (8 if quick else 64)
    basis = bases.make_basis("pixel", shape)
    schedule = schedules.make_schedule("soft", basis, labels="column", a=1.0)
    mcfg = model_config(quick)
    graphdef, params = create_model(
        mcfg, image_shape=shape, num_groups=basis.num_groups, rng=jax.random.PRNGKey(0)
    )
    params = fill_zero_layers(params, jax.random.PRNGKey(1))
    model = evaluate.network_model(graphdef, params, basis, schedule, {"a": 1.0})
    x = random_images(nll_batch, shape)
    tol = 1e-3 if quick else 1e-5

    nll_static = dict(
        divergence="hutchinson", num_probes=1, rtol=tol, atol=tol, solver="tsit5", max_steps=8192
    )
    rng = jax.random.PRNGKey(3)
    compile_s, run = aot_compile(evaluate._bpd_batch, model, jnp.asarray(x), rng, **nll_static)
    t_nll, (bpd, nfe) = timed(run, model, jnp.asarray(x), rng)
    nfe = int(nfe)
    nll = {
        "batch": nll_batch,
        "estimator": "PF-ODE, Hutchinson (1 probe)",
        "solver": "tsit5",
        "rtol": tol,
        "atol": tol,
        "nfe": nfe,
        "seconds_per_batch": t_nll,
        "seconds_per_image": t_nll / nll_batch,
        "ms_per_nfe": 1e3 * t_nll / max(nfe, 1),
        "compile_s": compile_s,
        "bpd_mean": float(np.mean(bpd)),
    }
    sampling_rows = []
    for solver, label, evals in (("sde", "SDE Euler-Maruyama", 1), ("ode", "Heun PF-ODE", 2)):
        rng = jax.random.PRNGKey(2)
        compile_s, run = aot_compile(
            evaluate._generate, model, rng, num=sample_batch, solver=solver, steps=steps
        )
        timed(run, model, rng)  # warm-up: first-call overhead is large next to a short run
        t, imgs = timed(run, model, rng)
        sampling_rows.append(
            {
                "sampler": solver,
                "name": label,
                "steps": steps,
                "nfe": evals * steps,
                "batch": sample_batch,
                "seconds": t,
                "images_per_s": sample_batch / t,
                "ms_per_nfe": 1e3 * t / (evals * steps),
                "compile_s": compile_s,
                "finite": bool(np.all(np.isfinite(imgs))),
            }
        )
    result = {
        "quick": quick,
        "shape": list(shape),
        "dim": basis.dim,
        "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}) × "
        f"{jax.device_count()}, evaluated on one",
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "model": {
            "params": count_params(params),
            "ch": mcfg.ch,
            "ch_mult": list(mcfg.ch_mult),
            "num_res_blocks": mcfg.num_res_blocks,
        },
        "basis": "pixel (white prior)",
        "schedule": "soft, labels=column, a=1, unclipped",
        "nll": nll,
        "sampling": sampling_rows,
    }
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def format_table(r: dict) -> str:
    n = r["nll"]
    lines = [
        f"bench_eval | {'×'.join(map(str, r['shape']))} (D={r['dim']}) | {r['device']} | "
        f"U-Net {r['model']['params']:,} params (random weights)",
        f"NLL  {n['estimator']}, {n['solver']} rtol={n['rtol']:g}: {n['seconds_per_image']:.3f} "
        f"s/image (batch {n['batch']}, NFE {n['nfe']}, {n['ms_per_nfe']:.1f} ms/NFE, "
        f"compile {n['compile_s']:.1f} s)",
    ]
    for s in r["sampling"]:
        lines.append(
            f"{s['name']:<20} {s['steps']} steps (NFE {s['nfe']}): {s['images_per_s']:.2f} "
            f"images/s (batch {s['batch']}, {s['ms_per_nfe']:.1f} ms/NFE, compile "
            f"{s['compile_s']:.1f} s)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
