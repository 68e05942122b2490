"""Micro-benchmark of the maths layer: basis transforms and one sampler step without a network.

    python -m experiments.bench_maths [--json PATH] [--quick]

Measures, for every registered basis at 32×32×3 with batch 256 (`--quick`: 8×8×1, batch 16):
  encode  z = U(x − μ)/s   and   decode  x = Uᵀ(s ⊙ z) + μ
as jit-compiled functions, reported as images per second (median over repeats after warm-up).
The bases are fitted on random data first (PCA: the D×D covariance and its eigenvectors, so
its transform is a dense 3072×3072 matmul); the fit time is reported too.

Then the cost of one reverse-SDE Euler–Maruyama step (docs/maths.md §6) for a soft schedule at the
same D and batch, with the network replaced by the exact ε̂ of N(0, I) data (ε̂ = σ ⊙ z, a few
flops): γ and β by jax.jvp of the schedule, the score s = −ε̂/σ, and
    z ← z + h·(½β ⊙ z + β ⊙ s) + √(βh) ⊙ ξ,   h = 1/N,   t ← t − h.
Timed as one jitted call (includes dispatch) and per step inside a lax.scan of N steps, and
split into drawing ξ ~ N(0, I) and the rest (on CPU the threefry draw dominates).

The step is written here from gudjax.process on purpose: it is the maths floor under any
sampler, so the real sampler's overhead can be read off against it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_common import median_seconds, write_json
from gudjax import bases, process
from gudjax.schedules import make_schedule


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench_maths", description=__doc__.split("\n")[0]
    )
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--quick", action="store_true", help="small shapes (8×8×1, batch 16)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    p.add_argument("--bases", default=None, help="comma-separated subset of the bases")
    return p.parse_args(argv)


def random_images(rng: np.random.Generator, n: int, shape) -> np.ndarray:
    """Random data in [-1, 1] with some spatial correlation (a smoothed noise field)."""
    x = rng.uniform(-1, 1, size=(n, *shape))
    x = 0.5 * (x + np.roll(x, 1, axis=1))  # correlate neighbouring pixels
    return x.astype(np.float32)


def bench_basis(name: str, shape, batch: int, n_fit: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    basis = bases.fit_basis(name, [random_images(rng, n_fit, shape)], whiten=True)
    jax.block_until_ready(basis)
    fit_s = time.perf_counter() - t0
    x = jnp.asarray(random_images(rng, batch, shape))
    encode = jax.jit(lambda b, x: b.encode(x))
    decode = jax.jit(lambda b, z: b.decode(z))
    t0 = time.perf_counter()
    z = jax.block_until_ready(encode(basis, x))
    jax.block_until_ready(decode(basis, z))
    compile_s = time.perf_counter() - t0
    err = float(jnp.max(jnp.abs(decode(basis, z) - x)))
    t_enc = median_seconds(encode, basis, x, repeats=repeats)
    t_dec = median_seconds(decode, basis, z, repeats=repeats)
    return {
        "basis": name,
        "encode_ms": 1e3 * t_enc,
        "decode_ms": 1e3 * t_dec,
        "encode_img_per_s": batch / t_enc,
        "decode_img_per_s": batch / t_dec,
        "fit_s": fit_s,
        "compile_s": compile_s,
        "round_trip_max_err": err,
    }


def em_update(schedule, z, t, h, noise):
    """The deterministic part of one reverse-SDE Euler–Maruyama step, t → t − h, given ξ."""
    st = process.noise_state(schedule, t)  # γ and β (jvp) at t
    eps_hat = st.sigma * z  # stands in for the network: exact for N(0, I) data
    score = process.eps_to_score(eps_hat, st.sigma)
    drift = 0.5 * st.beta * z + st.beta * score  # −(reverse drift), stepping backwards in t
    return z + h * drift + jnp.sqrt(st.beta * h) * noise


def em_step(schedule, z, t, h, key):
    """One reverse-SDE Euler–Maruyama step from t to t − h (no network: ε̂ = σ ⊙ z)."""
    return em_update(schedule, z, t, h, jax.random.normal(key, z.shape, z.dtype))


def bench_sampler_step(dim: int, batch: int, n_steps: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    rho = np.log(rng.uniform(1e-3, 1.0, dim)).astype(np.float32)  # unwhitened-like
    schedule = make_schedule("soft", dim=dim, rho=rho, labels=-rho, a=0.7)
    z = jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32)
    key = jax.random.key(0)
    h = jnp.float32(1.0 / n_steps)

    one = jax.jit(em_step)

    @jax.jit
    def scan(schedule, z, key):
        def body(z, i):
            t = 1.0 - i.astype(jnp.float32) * h
            return em_step(schedule, z, t, h, jax.random.fold_in(key, i)), None

        z, _ = jax.lax.scan(body, z, jnp.arange(n_steps))
        return z

    t_one = median_seconds(one, schedule, z, jnp.float32(0.5), h, key, repeats=repeats)
    # where the time goes: drawing ξ (threefry) vs the update arithmetic with γ, β
    draw = jax.jit(lambda key: jax.random.normal(key, z.shape, z.dtype))
    t_draw = median_seconds(draw, key, repeats=repeats)
    update = jax.jit(em_update)
    t_update = median_seconds(update, schedule, z, jnp.float32(0.5), h, z, repeats=repeats)
    t_scan = median_seconds(scan, schedule, z, key, repeats=max(3, repeats // 4), warmup=1)
    out = jax.block_until_ready(scan(schedule, z, key))
    return {
        "schedule": "soft (a = 0.7, unclipped)",
        "dim": dim,
        "batch": batch,
        "n_steps": n_steps,
        "step_single_call_us": 1e6 * t_one,
        "step_in_scan_us": 1e6 * t_scan / n_steps,
        "noise_draw_us": 1e6 * t_draw,
        "update_without_noise_us": 1e6 * t_update,
        "final_std": float(jnp.std(out)),  # N(0, I) data: ≈ 1
    }


def format_table(result: dict) -> str:
    lines = [
        f"device: {result['device']}   shape {tuple(result['shape'])}   batch {result['batch']}",
        f"{'basis':8s} {'encode img/s':>14s} {'decode img/s':>14s} {'enc ms':>8s} {'dec ms':>8s} "
        f"{'fit s':>7s} {'err':>9s}",
    ]
    for r in result["bases"]:
        lines.append(
            f"{r['basis']:8s} {r['encode_img_per_s']:14,.0f} {r['decode_img_per_s']:14,.0f} "
            f"{r['encode_ms']:8.3f} {r['decode_ms']:8.3f} {r['fit_s']:7.2f} "
            f"{r['round_trip_max_err']:9.1e}"
        )
    s = result["sampler"]
    lines.append(
        f"EM step, {s['schedule']}, D={s['dim']}, batch {s['batch']}: "
        f"{s['step_single_call_us']:.1f} us per jitted call, "
        f"{s['step_in_scan_us']:.1f} us per step in a lax.scan of {s['n_steps']}"
    )
    lines.append(
        f"  of which: drawing the N(0, I) noise {s['noise_draw_us']:.1f} us, "
        f"update arithmetic incl. gamma/beta (jvp) {s['update_without_noise_us']:.1f} us"
    )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        shape, batch, n_fit, repeats, n_steps = (8, 8, 1), 16, 128, args.repeats or 5, 20
    else:
        shape, batch, n_fit, repeats, n_steps = (32, 32, 3), 256, 1024, args.repeats or 20, 100
    names = bases.registered_bases() if args.bases is None else tuple(args.bases.split(","))
    for name in names:
        bases.get_spec(name)  # one-line error for an unknown name
    dim = int(np.prod(shape))
    dev = jax.devices()[0]
    result = {
        "device": f"{dev.platform}:{dev.device_kind}",
        "jax": jax.__version__,
        "host": platform.node(),
        "shape": list(shape),
        "batch": batch,
        "repeats": repeats,
        "quick": bool(args.quick),
        "bases": [bench_basis(n, shape, batch, n_fit, repeats) for n in names],
        "sampler": bench_sampler_step(dim, batch, n_steps, repeats),
    }
    print(format_table(result))
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
