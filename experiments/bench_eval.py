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

NLL: the jitted batch function behind `gudjax.nll.nll_bpd` (the --mode=eval path):
PF-ODE with Hutchinson divergence (1 Rademacher probe), Tsit5, rtol = atol = 1e-5; one NFE =
one linearised network call plus one Jacobian-vector product for the whole batch.
Sampling: the batch function behind `gudjax.generation.generate`; SDE = N network calls,
Heun = 2N. Both on one device (a one-device mesh).
Both are compiled ahead of time (`.lower(...).compile()`, compile seconds reported
separately). The NLL is timed on one call (long enough to amortise the first-call
overhead); each sampler on its second call. Wall clock, results fetched to the host.
"""

from __future__ import annotations

import argparse
import platform
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.bench_common import aot_compile, random_images, timed, write_json
from gudjax import bases, generation, nll, runtime, schedules
from gudjax.models import count_params, create_model, default_model_config
from gudjax.score_model import network_model


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


NLL_SETUP = dict(divergence="hutchinson", num_probes=1, solver="tsit5", max_steps=8192)
SAMPLERS = (("sde", "SDE Euler-Maruyama", 1), ("ode", "Heun PF-ODE", 2))


def measure_nll(model, x, *, tol: float, seed: int = 3) -> dict:
    """Seconds per image of the adaptive PF-ODE NLL (the jitted batch function behind
    `nll.nll_bpd`) on the images x (B, H, W, C): one call after AOT compilation."""
    rng = jax.random.PRNGKey(seed)
    x = jnp.asarray(x)
    one = runtime.batch_mesh(jax.local_devices()[:1])
    compile_s, run = aot_compile(
        nll.bpd_batch, model, x, rng, rtol=tol, atol=tol, mesh=one, **NLL_SETUP
    )
    t_nll, (bpd, nfe) = timed(run, model, x, rng)
    nfe = int(np.max(nfe))
    return {
        "batch": int(x.shape[0]),
        "estimator": "PF-ODE, Hutchinson (1 probe)",
        "solver": NLL_SETUP["solver"],
        "rtol": tol,
        "atol": tol,
        "nfe": nfe,
        "seconds_per_batch": t_nll,
        "seconds_per_image": t_nll / x.shape[0],
        "ms_per_nfe": 1e3 * t_nll / max(nfe, 1),
        "compile_s": compile_s,
        "bpd_mean": float(np.mean(bpd)),
    }


def measure_sampling(model, *, batch: int, steps: int, repeats: int = 1, seed: int = 2) -> list:
    """Images/s of the fixed-step samplers behind `generation.generate` (SDE: N network calls,
    Heun: 2N): AOT compiled, one warm-up call, then the median of `repeats` timed calls."""
    rows = []
    one = runtime.batch_mesh(jax.local_devices()[:1])
    for solver, label, evals in SAMPLERS:
        rng = jax.random.PRNGKey(seed)
        compile_s, run = aot_compile(
            generation.sample_batch, model, rng, num=batch, solver=solver, steps=steps, mesh=one
        )
        timed(run, model, rng)  # warm-up: first-call overhead is large next to a short run
        runs = [timed(run, model, rng) for _ in range(max(1, repeats))]
        t = float(np.median([r[0] for r in runs]))
        imgs = runs[-1][1]
        rows.append(
            {
                "sampler": solver,
                "name": label,
                "steps": steps,
                "nfe": evals * steps,
                "batch": batch,
                "seconds": t,
                "images_per_s": batch / t,
                "ms_per_nfe": 1e3 * t / (evals * steps),
                "compile_s": compile_s,
                "finite": bool(np.all(np.isfinite(imgs))),
            }
        )
    return rows


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
    model = network_model(graphdef, params, basis, schedule, {"a": 1.0})
    x = random_images(nll_batch, shape, seed=0)
    tol = 1e-3 if quick else 1e-5

    nll = measure_nll(model, x, tol=tol)
    sampling_rows = measure_sampling(model, batch=sample_batch, steps=steps)
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
    write_json(args.json, result)
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
