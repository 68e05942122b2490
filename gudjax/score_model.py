"""The one score-model interface: a member of a schedule family with its score.

Sampling (docs/maths.md §6) and the likelihood (§7) need, for one family member,
    γ(t) (D,),   s(z, t) = ∇_z log p_t(z)   (the network: s = −ε̂/σ, §5),
and the prior of the likelihood at t = 1. `ScoreModel` carries them for a trained network
(EMA parameters + graphdef, the maths in `step.make_score_fn`) or for the Gaussian oracle
(its exact score, §8), so every caller (training's samples, sample mode, evaluation,
conditional generation, benchmarks) takes the same object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import runtime, sampling, step
from gudjax.oracle import GaussianOracle

MODEL_KINDS = ("network", "oracle")


@dataclasses.dataclass(frozen=True)
class ScoreModel:
    """One member of a schedule family with its score: all that sampling and NLL need.

    A pytree (passes through jax.jit; family values are traced, so sweeping them never
    recompiles). Data: params (network parameters, or the `GaussianOracle` for 'oracle'),
    basis, schedule, family (dict name → scalar), moments (None, or the data's (mean (D,),
    covariance (D, D)) in component space, which the full-covariance samplers of
    `gudjax.gaussian_flow` take as their linear part; `with_moments`). Static: kind
    ('network' | 'oracle'), graphdef (network only), exact_prior (oracle only: use the exact
    terminal marginal p_1 instead of N(0, I) as the prior of the likelihood).
    """

    kind: str
    graphdef: Any
    exact_prior: bool
    params: Any
    basis: Any
    schedule: Any
    family: dict
    moments: Any = None

    @property
    def fam(self) -> dict | None:
        return self.family or None

    def gamma_fn(self):
        """t ↦ γ(t) (D,) of this family member."""
        return lambda t: self.schedule.gamma(t, self.fam)

    def score_fn(self):
        """score_fn(z (B, D), t) = ∇_z log p_t(z) (= −ε̂/σ for the network)."""
        if self.kind == "network":
            return step.make_score_fn(
                self.graphdef, self.params, self.basis, self.schedule, self.fam
            )
        return self.params.score_fn(self.gamma_fn())

    def prior_logp(self):
        """The prior of the likelihood at t = 1: None (= N(0, I)) or the oracle's exact p_1."""
        if self.kind == "oracle" and self.exact_prior:
            return self.params.prior_logp(self.gamma_fn())
        return None

    def jump_ts(self):
        """Times where β jumps (clipped schedules), for the adaptive solver; or None."""
        return sampling.schedule_kinks(self.schedule, self.fam)

    def with_family(self, family: Mapping) -> ScoreModel:
        return dataclasses.replace(self, family=family_arrays(family))

    def with_moments(self, mean, cov) -> ScoreModel:
        """This model with the data's mean (D,) and covariance (D, D) in component space."""
        d = self.basis.dim
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        if mean.shape != (d,) or cov.shape != (d, d):
            raise ValueError(
                f"moments have shapes {mean.shape} and {cov.shape}; the basis needs ({d},) and "
                f"({d}, {d}) (mean and covariance of the data in component space)"
            )
        return dataclasses.replace(self, moments=(mean, cov))


jax.tree_util.register_dataclass(
    ScoreModel,
    data_fields=["params", "basis", "schedule", "family", "moments"],
    meta_fields=["kind", "graphdef", "exact_prior"],
)


def family_arrays(family: Mapping | None) -> dict:
    """{name: float32 scalar} of a family point (traced data under jit)."""
    return {k: jnp.asarray(float(v), jnp.float32) for k, v in (family or {}).items()}


def network_model(graphdef, params, basis, schedule, family: Mapping | None = None) -> ScoreModel:
    """The trained network (pass the EMA parameters) as a `ScoreModel`."""
    params, basis, schedule = runtime.on_first_device((params, basis, schedule))
    return ScoreModel("network", graphdef, False, params, basis, schedule, family_arrays(family))


def oracle_model(
    oracle: GaussianOracle,
    basis,
    schedule,
    family: Mapping | None = None,
    *,
    exact_prior: bool = True,
) -> ScoreModel:
    """The Gaussian oracle's exact score as a `ScoreModel` (the network's stand-in in tests)."""
    return ScoreModel(
        "oracle", None, bool(exact_prior), oracle.z_only(), basis, schedule, family_arrays(family)
    )
