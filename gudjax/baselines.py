"""The baselines of an evaluation and the Gaussian's cross-check (docs/maths.md §7.4, §8).

Both are fitted on the training split and measured at the data's own number of levels L
(digits 17, 8-bit data 256), with bits/dim from the one definition `likelihood.bits_per_dim`.

Gaussian: the best Gaussian model of the data, N(μ, C) with μ, C the mean and covariance of
the uniformly dequantised training images x = 2(l + u)/L − 1: μ = mean of the centred values
(E u = ½) and C = Cov(centred values) + δ·I, δ = (2/L)²/12 = `bases.dequantization_variance(L)`
(the dequantisation noise is independent of the image; this floors every eigenvalue at δ,
as the basis fitting floors variances). Its bpd is closed form on the dequantised test
images: −log N(x; μ, C)/(D ln 2) + log₂(L/2). `ode_check` runs it through the same
likelihood code: the Gaussian oracle (§8) with this μ, C in the model's basis and schedule,
its exact score and exact terminal marginal; that number is log p_0 (the Gaussian convolved
with the schedule's σ(0) noise), so it sits within ~1e-4 nats/dim of the closed form.

Categorical: independent per-pixel L-way categoricals, p_j(l) = (n_j(l) + ½)/(n + L/2)
(add-½ smoothing of the training counts). As a density over dequantised x it is constant on
each bin of width 2/L, so its bits/dim, −Σ_j log₂ p_j(l_j)/D, is exactly the discrete NLL
and needs no dequantisation noise. Every model NLL has these two floors to beat.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gudjax import bases, input_pipeline, likelihood
from gudjax.nll import nll_bpd, settings_options
from gudjax.oracle import GaussianOracle
from gudjax.score_model import family_arrays, oracle_model


@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """N(mean, cov) of dequantised images in pixel space (float64): cov = V diag(w) Vᵀ."""

    mean: np.ndarray  # (D,)
    eigvals: np.ndarray  # (D,) ascending, all >= floor
    eigvecs: np.ndarray  # (D, D) columns
    num_images: int
    floor: float
    levels: int = 256

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
        """Closed-form bits/dim: −log N(x; μ, C)/(D ln 2) + log₂(L/2)."""
        return np.asarray(
            likelihood.bits_per_dim(self.logpdf(x), 0.0, self.mean.size, levels=self.levels),
            np.float64,
        )


def fit_gaussian(batches_uint8, *, levels: int = 256, floor: float | None = None) -> GaussianFit:
    """Mean and covariance of uniformly dequantised images from uint8 batches (one pass).

    μ = mean of the centred values 2(l + ½)/L − 1; C = Cov(centred) + floor·I, i.e. the
    covariance of the dequantised images (u independent, Var u·(2/L)² = floor, the default
    floor); eigenvalues below the floor after round-off are raised to it.
    """
    floor = bases.dequantization_variance(levels) if floor is None else float(floor)
    n, s1, s2 = 0, None, None
    for b in batches_uint8:
        x = input_pipeline.to_model_input(b, levels=levels)
        x = np.asarray(x, np.float64).reshape(len(b), -1)
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
    return GaussianFit(
        mean=mean, eigvals=w, eigvecs=v, num_images=n, floor=float(floor), levels=int(levels)
    )


@dataclasses.dataclass(frozen=True)
class CategoricalFit:
    """Independent per-pixel L-way categoricals: log_probs (D, L), natural log."""

    log_probs: np.ndarray
    num_images: int
    levels: int

    def logpdf(self, images_uint8) -> np.ndarray:
        """log density over dequantised x, (N,): Σ_j [log p_j(l_j) + log(L/2)] (the density
        is p_j(l)/(2/L) on bin l of width 2/L)."""
        lv = np.asarray(input_pipeline.to_levels(images_uint8, self.levels), np.int64)
        lv = lv.reshape(len(lv), -1)
        lp = np.take_along_axis(self.log_probs[None], lv[..., None], axis=-1)[..., 0]
        return np.sum(lp, axis=-1) + lv.shape[1] * math.log(self.levels / 2.0)

    def bpd(self, images_uint8) -> np.ndarray:
        """Bits/dim (N,) of uint8 images: equals the discrete −Σ_j log₂ p_j(l_j)/D."""
        d = self.log_probs.shape[0]
        return np.asarray(
            likelihood.bits_per_dim(self.logpdf(images_uint8), 0.0, d, levels=self.levels),
            np.float64,
        )


def fit_categorical(batches_uint8, *, levels: int = 256) -> CategoricalFit:
    """Per-pixel level counts of the uint8 training batches, add-½ smoothing:
    p_j(l) = (n_j(l) + ½)/(n + L/2)."""
    counts, n = None, 0
    for b in batches_uint8:
        lv = np.asarray(input_pipeline.to_levels(b, levels), np.int64).reshape(len(b), -1)
        if counts is None:
            counts = np.zeros((lv.shape[1], levels))
        for j in range(lv.shape[1]):
            counts[j] += np.bincount(lv[:, j], minlength=levels)
        n += len(lv)
    if n < 1:
        raise ValueError("the categorical baseline needs at least 1 training image")
    probs = (counts + 0.5) / (n + 0.5 * levels)
    return CategoricalFit(log_probs=np.log(probs), num_images=n, levels=int(levels))


def gaussian_oracle(fit: GaussianFit, basis) -> GaussianOracle:
    """The Gaussian oracle of `fit` in a basis (float32, for the likelihood code)."""
    return GaussianOracle.from_data(basis, fit.mean, fit.cov)


def ode_check(fit, basis, schedule, point, x, data_bpd, s) -> dict:
    """The Gaussian baseline through the likelihood code: the oracle's exact score and exact
    p_1 prior in the model's basis and schedule. The PF-ODE gives log p_0, the data Gaussian
    convolved with the schedule's σ(0) noise: checked against p_0 in closed form; the gap
    p_0 − data Gaussian (finite γ(0)) is reported next to it."""
    k = len(x)
    orc = gaussian_oracle(fit, basis)
    div = "exact" if basis.dim <= 256 else s["divergence"]
    options = {
        **settings_options(s), "batch_size": min(k, int(s["batch_size"])), "divergence": div
    }
    ode = nll_bpd(
        oracle_model(orc, basis, schedule, point),
        x,
        seed=int(s["seed"]),
        levels=fit.levels,
        **options,
    )
    fam = family_arrays(point) or None
    lp0 = orc.logp_x0(x, lambda t: schedule.gamma(t, fam))
    p0_bpd = np.asarray(likelihood.bits_per_dim(lp0, 0.0, basis.dim, levels=fit.levels))
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
