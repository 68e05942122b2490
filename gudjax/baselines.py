"""The Gaussian baseline of an evaluation and its cross-check (docs/maths.md §7, §8).

Baseline: the best Gaussian model of the data, N(μ, C) with μ, C the mean and covariance of
the uniformly dequantised training images in pixel space: μ = mean of the centred values
(E u = ½) and C = Cov(centred values) + δ·I, δ = (2/256)²/12 = `bases.MIN_VARIANCE` (the
dequantisation noise is independent of the image; this floors every eigenvalue at δ, as
the basis fitting floors variances). Its bpd is closed form on the dequantised test images:
−log N(x; μ, C)/(D ln 2) + 7. `ode_check` runs it through the same likelihood code: the
Gaussian oracle (§8) with this μ, C in the model's basis and schedule, its exact score and
exact terminal marginal; that number is log p_0 (the Gaussian convolved with the
schedule's σ(0) noise), so it sits within ~1e-4 nats/dim of the closed form. Every model
NLL has this floor to beat.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gudjax import bases, input_pipeline
from gudjax.nll import nll_bpd
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


def ode_check(fit, basis, schedule, point, x, data_bpd, s) -> dict:
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
    fam = family_arrays(point) or None
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
