"""A few-step sampler whose linear part is the Gaussian flow of the data's full covariance.

The '_g' samplers of `gudjax.solvers` take a Gaussian with a DIAGONAL covariance (the basis
variances) as the exact linear part. That is the right linear part only where the basis
decorrelates the data; where the components are correlated and generated one group after
another (column schedules in pixel space), the diagonal frame is unstable at few steps
(docs/maths.md §10.5). Here the linear part is the probability-flow ODE of the Gaussian
N(m, K) with the data's mean m and full covariance K in component space (D × D):

    dz/dt = −½ β ⊙ (z + s),   s = s_G + (s − s_G),   s_G(z, t) = −K_t⁻¹ (z − α ⊙ m),
    K_t = diag(α) K diag(α) + diag(σ²),   s − s_G = (α/σ²) ⊙ (x̂ − x̂_G),
    x̂_G(z, t) = m + K diag(α) K_t⁻¹ (z − α ⊙ m)          (the Gaussian's posterior mean).

Between two grid times t > s the linear ODE dz/du = L(u) z + b(u) + B(u) ⊙ r, with
L = −½ diag(β)(I − K_u⁻¹), b = −½ β ⊙ K_u⁻¹(α ⊙ m), B = −½ β ⊙ α/σ² and the residual
r = x̂ − x̂_G held fixed over the step, has the exact solution

    z_s = Φ z_t + c + M r,   [Φ | c | M] = Y(s),   dY/du = L Y + [0 | b | diag(B)],
    Y(t) = [I | 0 | 0],

which `gaussian_flow` integrates once per time grid (float64, classical Runge–Kutta with
about `SUBSTEPS_PER_UNIT_TIME` substeps per unit of t, spread over the intervals by their
length, on the host; D³ work per substep, so it suits D up to a few hundred on a CPU). The
sampler (`sample`) then costs one network call per step plus two D × D products: for
Gaussian data with covariance K it is exact at any number of steps; for other data the
network's departure from the Gaussian is integrated to first order (DDIM-like) or second
order (multistep on r with the mean log-SNR step ratio, as DPM-Solver++(2M)).

A component whose γ does not change over a step (β = 0 there) has an identity row in Φ and
zero rows in c and M; the sampler returns it unchanged, bit for bit (an explicit `where`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import sampling, solvers

Array = Any
#: Runge–Kutta substeps of the precompute per unit of t (each interval gets its share, at
#: least MIN_SUBSTEPS): on the near-sequential oracle with the exact moments the maps are then
#: exact to ~0.1% at 5–20 steps, far below the error of estimated moments.
SUBSTEPS_PER_UNIT_TIME = 1024
MIN_SUBSTEPS = 16
#: The samplers of this module: name → order of the residual's integration (1: held fixed
#: over a step, DDIM-like; 2: the multistep of DPM-Solver++(2M)). One network call per step.
SAMPLERS = {"ddim_cov": 1, "dpmpp_2m_cov": 2}
DEFAULT_TIME_GRID = "auto"
#: The largest D for which `generation` builds the flow: the host precompute is D³ work per
#: substep, ~1000 substeps per grid (10 steps, measured on 2 CPU cores: 1.4 s at D = 64,
#: 19 s at D = 256, 8× more per doubling of D, and memory for all of a step's inverses).
MAX_DIM = 256


class GaussianFlow(NamedTuple):
    """The per-step maps of one time grid (N steps, D components), see the module docstring.

    phi (N, D, D), bias (N, D), weight (N, D, D): z_s = phi z + bias + weight r.
    gain (N, D, D), offset (N, D): x̂_G(z, t_k) = offset + gain z.
    moving (N, D) bool: whether γ_i changes over the step. h (N,): mean log-SNR step.
    ts (N + 1,): the grid, 1 = t_0 > … > t_N.
    """

    phi: Array
    bias: Array
    weight: Array
    gain: Array
    offset: Array
    moving: Array
    h: Array
    ts: Array


def _coefficients(gamma_fn, ts: np.ndarray):
    """γ, α, σ², β at the times ts (T,), each (T, D), float64 (one compiled call)."""
    t32 = jnp.asarray(ts, jnp.float32)
    g, dg = jax.jit(lambda t: (jax.vmap(gamma_fn)(t), jax.vmap(jax.jacfwd(gamma_fn))(t)))(t32)
    g, dg = np.asarray(g, np.float64), np.asarray(dg, np.float64)
    s2 = 0.5 * (1.0 + np.tanh(0.5 * g))  # sigmoid(γ), stable for large |γ|
    a2 = 0.5 * (1.0 - np.tanh(0.5 * g))
    return g, np.sqrt(a2), s2, s2 * dg


def _check_cov(cov, mean):
    K = np.asarray(cov, np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"cov must be a square (D, D) covariance in component space, got shape "
                         f"{K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("cov has non-finite entries; estimate it from finite data (np.cov)")
    K = 0.5 * (K + K.T)
    w = np.linalg.eigvalsh(K)
    # a component that never varies (a digit's border pixel) makes K singular; round-off then
    # leaves eigenvalues slightly below 0, which are not an error
    if w[0] < -1e-8 * max(w[-1], 1e-30):
        raise ValueError("cov is not positive semi-definite; pass a sample covariance (np.cov)")
    m = np.zeros(K.shape[0]) if mean is None else np.asarray(mean, np.float64)
    if m.shape != (K.shape[0],):
        raise ValueError(f"mean must be ({K.shape[0]},), got shape {m.shape}")
    return K, m


def gaussian_flow(
    gamma_fn, ts, cov, mean=None, *, substeps: int | None = None
) -> GaussianFlow:
    """The exact per-step maps of the Gaussian N(mean, cov) PF-ODE on the grid ts (N + 1,).

    `cov` (D, D) and `mean` (D,) (default 0) are the data's moments in component space (z_0),
    e.g. estimated from training data. `substeps`: Runge–Kutta substeps per interval (None:
    its share of `SUBSTEPS_PER_UNIT_TIME`, at least `MIN_SUBSTEPS`). Host-side, float64; the
    result is float32 arrays that `sample` takes (inside or outside jit).
    """
    K, m = _check_cov(cov, mean)
    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or ts.shape[0] < 2 or not np.all(np.diff(ts) < 0):
        raise ValueError("ts must be a decreasing grid 1 = t_0 > … > t_N of at least 2 times")
    if substeps is not None and int(substeps) < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    d = K.shape[0]
    eye, diag = np.eye(d), np.arange(d)

    def precision(a, s2):  # K_t⁻¹ of the Gaussian's marginal at (α, σ²), batched over rows
        Kt = a[:, :, None] * K[None] * a[:, None, :] + s2[:, :, None] * eye
        return np.linalg.inv(0.5 * (Kt + np.swapaxes(Kt, 1, 2)))

    # every interval's substep ends and midpoints, the schedule evaluated at all in one call
    n_subs = [int(substeps) if substeps is not None else max(
        MIN_SUBSTEPS, int(np.ceil(SUBSTEPS_PER_UNIT_TIME * (t0 - t1))))
        for t0, t1 in zip(ts[:-1], ts[1:], strict=True)]
    points = []
    for t0, t1, n_sub in zip(ts[:-1], ts[1:], n_subs, strict=True):
        us = np.linspace(t0, t1, n_sub + 1)
        points.append(np.concatenate([us, 0.5 * (us[:-1] + us[1:])]))
    coefs = _coefficients(gamma_fn, np.concatenate(points))
    bounds = np.cumsum([0] + [len(p) for p in points])

    phis, biases, weights, gains, offsets, moving, hs = [], [], [], [], [], [], []
    for k in range(ts.shape[0] - 1):
        t0, t1 = ts[k], ts[k + 1]
        n_sub = n_subs[k]
        g, al, s2, beta = (c[bounds[k]:bounds[k + 1]] for c in coefs)
        # the linear ODE's pieces at the substep ends and midpoints, all inverses in one call
        P = precision(al, s2)
        L = (-0.5 * beta)[:, :, None] * (eye - P)
        b = -0.5 * beta * np.einsum("nij,nj->ni", P, al * m)
        B = -0.5 * beta * al / s2

        def rhs(i, Y, L=L, b=b, B=B):
            out = L[i] @ Y
            out[:, d] += b[i]
            out[diag, d + 1 + diag] += B[i]
            return out

        n = n_sub + 1
        Y = np.zeros((d, 2 * d + 1))
        Y[:, :d] = eye
        dt = (t1 - t0) / n_sub
        for j in range(n_sub):
            k1 = rhs(j, Y)
            k2 = rhs(n + j, Y + 0.5 * dt * k1)
            k3 = rhs(n + j, Y + 0.5 * dt * k2)
            k4 = rhs(j + 1, Y + dt * k3)
            Y = Y + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        mov = g[0] != g[n_sub]
        Y[~mov] = 0.0
        Y[~mov, np.flatnonzero(~mov)] = 1.0
        phis.append(Y[:, :d])
        biases.append(Y[:, d])
        weights.append(Y[:, d + 1:])
        a0 = al[0]
        G = (K * a0[None, :]) @ P[0]
        gains.append(G)
        offsets.append(m - G @ (a0 * m))
        moving.append(mov)
        hs.append(0.5 * np.mean(g[0] - g[n_sub]))
    f32 = lambda x: jnp.asarray(np.stack(x), jnp.float32)  # noqa: E731
    return GaussianFlow(f32(phis), f32(biases), f32(weights), f32(gains), f32(offsets),
                        jnp.asarray(np.stack(moving)), f32(hs), jnp.asarray(ts, jnp.float32))


def check_dim(solver: str, dim: int, field: str = "config.sample.solver") -> None:
    """One-line error if `solver` is one of `SAMPLERS` and D = dim exceeds `MAX_DIM`."""
    if solver in SAMPLERS and int(dim) > MAX_DIM:
        raise ValueError(
            f"{field}={solver!r} precomputes D × D step maps on the host (D³ work per "
            f"substep) and allows D <= {MAX_DIM}, but this basis has D = {dim}; use "
            "dpmpp_2m_g or heun_g (diagonal linear part) or dpmpp_2m instead"
        )


def grid_flow(gamma_fn, steps: int, time_grid: str, mean, cov, *,
              substeps: int | None = None) -> GaussianFlow:
    """`gaussian_flow` on `steps` steps of the time grid `time_grid` (`solvers.TIME_GRIDS`)."""
    grid = solvers.check_time_grid(time_grid)
    ts = jax.jit(lambda: solvers.make_time_grid(gamma_fn, int(steps), grid))()  # one compile
    return gaussian_flow(gamma_fn, np.asarray(ts), cov, mean, substeps=substeps)


def sample(
    score_fn,
    gamma_fn,
    z1: Array,
    flow: GaussianFlow,
    *,
    order: int = 2,
    rng: Array | None = None,
    known: sampling.Known | None = None,
    normal=None,
) -> Array:
    """z at t_N from z1 (B, D) at t = 1 on `flow`'s grid: one score call per step.

    `order` 1: the residual x̂ − x̂_G held fixed over each step; 2: multistep on it (first
    order on the first and last step and after a much shorter step, h_prev < h/2). With
    `known`, `rng` draws the one fixed replacement ε per trajectory (as the other
    deterministic samplers).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    z1 = sampling._check_z(z1)
    if flow.phi.shape[-1] != z1.shape[-1]:
        raise ValueError(f"flow is for D = {flow.phi.shape[-1]}, z has D = {z1.shape[-1]}")
    normal = jax.random.normal if normal is None else normal
    mask, z0k = sampling._prepare_known(known, z1)
    eps = solvers._known_noise(mask, rng, normal, z1, "gaussian_flow.sample")
    ts = flow.ts
    n = ts.shape[0] - 1
    z = z1 if mask is None else sampling._replace(z1, mask, z0k, gamma_fn, ts[0], eps)
    first = jnp.arange(n) == 0
    last = jnp.arange(n) == n - 1
    h_prev = jnp.concatenate([jnp.ones((1,), flow.h.dtype), flow.h[:-1]])

    def step(carry, xs):
        z, r_prev = carry
        phi, bias, weight, gain, offset, moving, h, hp, t, s, is_first, is_last = xs
        _, log_a, log_s = solvers._coefs(gamma_fn, t)
        _, x_hat = solvers._predict(score_fn, z, t, log_a, log_s)
        r = x_hat - (offset + z @ gain.T)
        second = (order == 2) & ~is_first & ~is_last & (hp >= 0.5 * h) & (h > 0)
        c = jnp.where(second, h / jnp.where(second, 2.0 * hp, 1.0), 0.0)
        d = r + c * (r - r_prev)
        new = z @ phi.T + bias + d @ weight.T
        z_new = jnp.where(moving, new.astype(z.dtype), z)
        if mask is not None:
            z_new = sampling._replace(z_new, mask, z0k, gamma_fn, s, eps)
        return (z_new, r), None

    xs = (flow.phi, flow.bias, flow.weight, flow.gain, flow.offset, flow.moving, flow.h,
          h_prev, ts[:-1], ts[1:], first, last)
    (z, _), _ = jax.lax.scan(step, (z, jnp.zeros_like(z)), xs)
    return solvers._finish(z, mask, z0k)
