"""The Gaussian oracle (docs/maths.md §8): closed-form marginals and scores for Gaussian data.

If the data is Gaussian, x ~ N(μ_x, C) (x flattened, D = H·W·C), then in the diffusing
variables z = S⁻¹U(x − μ) of a basis (U = `basis.matrix()`, S = diag(s) = diag(`basis.scale`),
μ = `basis.mean` flattened):
    z_0 ~ N(m, K),         m = S⁻¹U(μ_x − μ),   K = S⁻¹ U C Uᵀ S⁻¹,
and for any component-wise schedule γ (α² = sigmoid(−γ), σ² = sigmoid(γ)):
    z_t ~ N(α ⊙ m, Σ_t),   Σ_t = diag(α) K diag(α) + diag(σ²),
    score ∇_z log p_t(z) = −Σ_t⁻¹ (z − α ⊙ m)          (Cholesky solve).
Plugging the exact score into the samplers and the likelihood checks bases, Jacobians,
whitening, schedules, β, samplers and NLL together.

Precision. The jit-able methods (`marginal`, `score`, `score_fn`, `log_prob`, `sample`) work
in the dtype of the stored m, K (float32 by default, so the oracle plugs into the float32
samplers). Cholesky's accuracy depends only on the condition number of Σ_t after diagonal
scaling (van der Sluis), i.e. on the data's correlation structure in the basis, not on the
tiny variances of unwhitened components; for the image-like covariances of
`random_gaussian` (nugget ≈ 1e-3) float32 is accurate to ~1e-4 relative. `logp_x0` is the
reference answer and is computed on the host in float64 numpy (not jit-able).

`GaussianOracle` is a pytree (m, K, log_scale_sum, basis are data), so it can be passed
through `jax.jit`; `z_only()` drops the basis so that one compiled function serves every basis
of the same dimension.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any


def _resolve_gamma(gamma, t):
    """γ given as an array (D,), or as gamma_fn together with t."""
    if callable(gamma):
        if t is None:
            raise ValueError("gamma given as a function needs t= as well")
        return gamma(t)
    if t is not None:
        raise ValueError("t= is only meaningful when gamma is a function gamma_fn(t)")
    return gamma


@jax.custom_batching.custom_vmap
def _cholesky_sequential(a):
    return jnp.linalg.cholesky(a)


@_cholesky_sequential.def_vmap
def _cholesky_sequential_vmap(axis_size, in_batched, a):
    return jax.lax.map(_cholesky_sequential, a), True


@jax.custom_jvp
def cholesky(a: Array) -> Array:
    """Lower Cholesky factor of a (D, D) matrix; under vmap the batch is factorised one matrix
    at a time (lax.map) instead of by one batched LAPACK call.

    Why: on CPU, jaxlib 0.10.2 runs a batched LAPACK Cholesky as parallel tasks on XLA's
    intra-op thread pool and blocks the calling pool thread until they finish; on a 2-core
    machine two such calls running concurrently (e.g. the vmapped SDE and ODE samplers of
    `experiments.oracle_check`) occupy both pool threads and deadlock. Differentiation uses
    the standard Cholesky JVP.
    """
    return _cholesky_sequential(a)


@cholesky.defjvp
def _cholesky_jvp(primals, tangents):
    return jax.jvp(jnp.linalg.cholesky, primals, tangents)


def _alpha_sigma2(gamma, dtype):
    gamma = jnp.asarray(gamma)
    alpha = jnp.sqrt(jax.nn.sigmoid(-gamma)).astype(dtype)
    sigma2 = jax.nn.sigmoid(gamma).astype(dtype)
    return alpha, sigma2


@dataclasses.dataclass(frozen=True)
class GaussianOracle:
    """Exact z-space Gaussian N(m, K) of the data and its noised marginals.

    Data fields: m (D,), K (D, D), log_scale_sum () = Σ_i log s_i, basis (Basis or None).
    """

    m: Array
    K: Array
    log_scale_sum: Array
    basis: Any = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_data(cls, basis, mu_x, C, *, dtype=jnp.float32) -> GaussianOracle:
        """m = S⁻¹U(μ_x − μ), K = S⁻¹UCUᵀS⁻¹ (computed in float64 numpy, stored in dtype).

        mu_x: (D,) or image-shaped (H, W, C); C: (D, D) covariance of the flattened image.
        """
        d = basis.dim
        mu_x = np.asarray(mu_x, np.float64).reshape(-1)
        C = np.asarray(C, np.float64)
        if mu_x.shape != (d,):
            raise ValueError(f"mu_x has {mu_x.size} entries, basis has D={d}")
        if C.shape != (d, d):
            raise ValueError(f"C has shape {C.shape}, expected ({d}, {d})")
        U = np.asarray(basis.matrix(), np.float64)
        s = np.asarray(basis.scale, np.float64)
        mu = np.asarray(basis.mean, np.float64).reshape(-1)
        m = U @ (mu_x - mu) / s
        K = (U @ C @ U.T) / np.outer(s, s)
        K = 0.5 * (K + K.T)
        return cls(
            m=jnp.asarray(m, dtype),
            K=jnp.asarray(K, dtype),
            log_scale_sum=jnp.asarray(np.sum(np.log(s)), dtype),
            basis=basis,
        )

    def z_only(self) -> GaussianOracle:
        """The same oracle without the basis (all z-space methods still work)."""
        return dataclasses.replace(self, basis=None)

    @property
    def dim(self) -> int:
        return int(self.m.shape[-1])

    # ------------------------------------------------------------------ closed forms
    def marginal(self, gamma, t=None) -> tuple[Array, Array]:
        """(mean α ⊙ m (D,), covariance diag(α) K diag(α) + diag(σ²) (D, D)) at γ (D,).

        `gamma` is γ (D,) or a gamma_fn together with `t`.
        """
        gamma = _resolve_gamma(gamma, t)
        alpha, sigma2 = _alpha_sigma2(gamma, self.K.dtype)
        cov = alpha[:, None] * self.K * alpha[None, :] + jnp.diag(sigma2)
        return alpha * self.m, cov

    def _chol(self, gamma, t=None):
        mean, cov = self.marginal(gamma, t)
        return mean, cholesky(cov)

    @staticmethod
    def _precision_from_chol(chol) -> Array:
        eye = jnp.eye(chol.shape[-1], dtype=chol.dtype)
        prec = jax.scipy.linalg.cho_solve((chol, True), eye)
        return 0.5 * (prec + prec.T)

    def precision(self, gamma, t=None) -> Array:
        """Σ_t⁻¹ (D, D) by a Cholesky solve against the identity, symmetrised."""
        return self._precision_from_chol(self._chol(gamma, t)[1])

    def score(self, z: Array, gamma, t=None) -> Array:
        """∇_z log p_t(z) = −Σ_t⁻¹ (z − α ⊙ m), z (B, D) → (B, D).

        Σ_t⁻¹ comes from one D×D Cholesky solve (`precision`) and is applied as a matrix
        product, −(z − α ⊙ m) Σ_t⁻¹: on CPU a (B, D)×(D, D) GEMM is several times faster than
        two batched triangular solves, and as accurate here (forward error of both
        ≈ cond(Σ_t)·eps).
        """
        z = jnp.asarray(z)
        mean, chol = self._chol(gamma, t)
        r = (z - mean).astype(self.K.dtype)
        return -(r @ self._precision_from_chol(chol)).astype(z.dtype)

    def score_fn(self, gamma_fn: Callable[[Array], Array]) -> Callable[[Array, Array], Array]:
        """score_fn(z (B, D), t) = `score`(z, gamma_fn(t)), for the samplers and likelihood."""
        return lambda z, t: self.score(z, gamma_fn(t))

    def log_prob(self, z: Array, gamma, t=None) -> Array:
        """log N(z; α ⊙ m, Σ_t) for z (B, D) → (B,) (jit-able, dtype of K)."""
        mean, chol = self._chol(gamma, t)
        r = (jnp.asarray(z) - mean).astype(self.K.dtype)
        w = jax.scipy.linalg.solve_triangular(chol, r.T, lower=True)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        return -0.5 * (jnp.sum(w * w, axis=0) + logdet + self.dim * math.log(2.0 * math.pi))

    def prior_logp(self, gamma_fn: Callable[[Array], Array], t: float = 1.0):
        """z ↦ log p_t(z) at a fixed t (default the terminal marginal p_1), for likelihoods."""
        return lambda z: self.log_prob(z, gamma_fn(jnp.asarray(t, jnp.float32)))

    def sample(self, rng: Array, gamma, n: int, t=None) -> Array:
        """n exact samples of the marginal at γ: α ⊙ m + L ξ, L = chol(Σ_t), (n, D)."""
        mean, chol = self._chol(gamma, t)
        xi = jax.random.normal(rng, (n, self.dim), self.K.dtype)
        return mean + xi @ chol.T

    def sigma_points(self, gamma, t=None) -> Array:
        """The 2D symmetric points α ⊙ m ± √D · L e_j (L = chol(Σ_t)), (2D, D).

        Their empirical mean is α ⊙ m and their empirical covariance (normalised by 2D) is Σ_t,
        both exactly. Pushed through any affine map (e.g. a discretised PF-ODE with this
        oracle's linear score) they give the exact mean and covariance of the image of the
        marginal: a Monte-Carlo-free check of a deterministic sampler.
        """
        mean, chol = self._chol(gamma, t)
        cols = math.sqrt(self.dim) * chol.T  # row j = √D · L e_j
        return mean + jnp.concatenate([cols, -cols], axis=0)

    # ------------------------------------------------------------------ host references
    def log_prob_np(self, z, gamma) -> np.ndarray:
        """`log_prob` in float64 numpy on the host (the reference; not jit-able)."""
        gamma = np.asarray(gamma, np.float64)
        alpha = np.sqrt(1.0 / (1.0 + np.exp(gamma)))
        sigma2 = 1.0 / (1.0 + np.exp(-gamma))
        K = np.asarray(self.K, np.float64)
        cov = alpha[:, None] * K * alpha[None, :] + np.diag(sigma2)
        chol = np.linalg.cholesky(cov)
        r = np.asarray(z, np.float64) - alpha * np.asarray(self.m, np.float64)
        w = np.linalg.solve(chol, r.T)
        logdet = 2.0 * np.sum(np.log(np.diag(chol)))
        return -0.5 * (np.sum(w * w, axis=0) + logdet + self.dim * math.log(2.0 * math.pi))

    def logp_x0(self, x, gamma, t: float = 0.0) -> np.ndarray:
        """Exact log density of the t = 0 marginal p_0 at images x, (B,) float64 (host).

            log p_0(x) = log N(z; α(0) ⊙ m, Σ_0) − Σ_i log s_i,   z = basis.encode(x)
        x: (B, H, W, C) or flattened (B, D). `gamma` is γ(0) (D,) or a gamma_fn (evaluated at
        `t`, default 0). Note p_0 ≠ p_data: γ(0) is finite, so p_0 is the data scaled by α(0)
        plus σ(0) noise. Needs the oracle's basis (not available after `z_only()`).
        """
        if self.basis is None:
            raise ValueError(
                "logp_x0 needs the oracle's basis; build it with from_data(basis, ...)"
            )
        if callable(gamma):
            gamma = gamma(jnp.asarray(t, jnp.float32))
        x = jnp.asarray(x)
        if x.ndim == 2:
            x = x.reshape(x.shape[0], *self.basis.shape)
        z = self.basis.encode(x)
        return self.log_prob_np(z, gamma) - float(
            np.sum(np.log(np.asarray(self.basis.scale, np.float64)))
        )


jax.tree_util.register_dataclass(
    GaussianOracle, data_fields=["m", "K", "log_scale_sum", "basis"], meta_fields=[]
)


# ---------------------------------------------------------------------------- test data
def _as_numpy_rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer)):
        return np.random.default_rng(int(rng_or_seed))
    arr = jnp.asarray(rng_or_seed)
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):  # a typed JAX key
        arr = jax.random.key_data(arr)
    return np.random.default_rng(np.asarray(arr).astype(np.uint32).ravel().tolist())


def random_gaussian(rng_or_seed=0, shape=(8, 8, 1)) -> tuple[np.ndarray, np.ndarray]:
    """A random image-like Gaussian: (mu_x (D,), C (D, D)) in float64, D = H·W·C.

    C = diag(a) [k_pos ⊗ R_ch] diag(a) + F Fᵀ + diag(ν), with
      k_pos  squared-exponential kernel over pixel positions, length scale ℓ ~ U[2.5, 3.5]
             pixels (smooth images, fast-decaying spectrum: tr(C)/‖C‖_F ≈ 2 for 8×8),
      R_ch   channel correlation (1 on the diagonal, ρ_ch ~ U[0.6, 0.8] off it),
      a      per-pixel amplitude ~ U[0.32, 0.45],
      F      random rank-2 term, entries N(0, 0.05²) (non-stationary, non-diagonal part),
      ν      small diagonal ("nugget") ~ U[0.5, 1.5]·1e-3, so the smallest eigenvalue is
             ≈ 1e-3 and cond(C) ≈ 3e3 (float32 Cholesky stays accurate).
    Pixel standard deviations ≈ 0.33–0.46; the mean is a smooth random field scaled into
    [−0.4, 0.4]. Row-major (H, W, C) flattening, like the bases.
    """
    h, w, c = (int(v) for v in shape)
    g = _as_numpy_rng(rng_or_seed)
    d = h * w * c
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    d2 = np.sum((pos[:, None, :] - pos[None, :, :]) ** 2, axis=-1)
    ell = g.uniform(2.5, 3.5)
    k_pos = np.exp(-d2 / (2.0 * ell**2))
    rho_ch = g.uniform(0.6, 0.8)
    r_ch = np.full((c, c), rho_ch) + (1.0 - rho_ch) * np.eye(c)
    k = np.kron(k_pos, r_ch)  # (H·W·C) in row-major (H, W, C) order
    amp = g.uniform(0.32, 0.45, size=d)
    F = g.normal(0.0, 0.05, size=(d, 2))
    nugget = g.uniform(0.5e-3, 1.5e-3, size=d)
    C = amp[:, None] * k * amp[None, :] + F @ F.T + np.diag(nugget)
    C = 0.5 * (C + C.T)
    # smooth mean: one draw of the positional kernel, scaled into [-0.4, 0.4]
    field = np.linalg.cholesky(np.kron(k_pos, r_ch) + 1e-6 * np.eye(d)) @ g.normal(size=d)
    mu_x = 0.4 * field / max(np.max(np.abs(field)), 1e-12)
    return mu_x, C
