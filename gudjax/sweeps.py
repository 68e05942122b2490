"""Points of a schedule family to evaluate: the sampled member, sweeps, and their labels.

config.eval.sweep = "a=0:2:5" (5 points from 0 to 2), "a=0,0.5,1", or a grid
"a=0,1,2;b=0.3,0.5" (first parameter slowest). A point outside the trained range
config.family is flagged (`out_of_range`). A point where every γ_i(t) is identical is
standard diffusion (`standard_diffusion_label`, docs/maths.md §10): with the white prior
(unwhitened basis) that is standard white-noise diffusion, with the variance-matched prior
(whitened basis) standard diffusion of the whitened components (equal log-SNR, prior
N(0, data covariance in the basis)).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from gudjax import schedules


def family_member(config, overrides: dict | None = None) -> dict:
    """The family parameters used for sampling/evaluation: config.schedule defaults
    overridden by config.sample (e.g. --config.sample.a=1.2) and `overrides`."""
    names = schedules.family_params(config.schedule.name)
    out = {k: float(config.schedule[k]) for k in names if k in config.schedule}
    sample_cfg = config.get("sample", ml_collections.ConfigDict())
    for k in names:
        if k in sample_cfg and sample_cfg[k] is not None:
            out[k] = float(sample_cfg[k])
    out.update(overrides or {})
    return out


def _parse_values(name: str, text: str) -> list[float]:
    text = text.strip()
    try:
        if ":" in text:
            lo, hi, num = text.split(":")
            num = int(num)
            if num < 1:
                raise ValueError
            return [float(v) for v in np.linspace(float(lo), float(hi), num)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"config.eval.sweep: cannot read values {text!r} of '{name}'; use 'lo:hi:num' or "
            "'v1,v2,...'"
        ) from None


def parse_sweep(spec, param_names: Sequence[str]) -> list[dict[str, float]]:
    """Family points of a sweep spec: 'a=0:2:5', 'a=0,1,2', 'a=0,1;b=0.3,0.5' (grid, first
    parameter slowest) or a mapping {name: [values]}. Empty → []."""
    if not spec:
        return []
    if isinstance(spec, str):
        axes = {}
        for part in spec.split(";"):
            if not part.strip():
                continue
            name, eq, values = part.partition("=")
            if not eq:
                raise ValueError(
                    f"config.eval.sweep: cannot read {part.strip()!r}; use e.g. 'a=0:2:5' or "
                    "'a=0,1;b=0.3,0.5'"
                )
            axes[name.strip()] = _parse_values(name.strip(), values)
    else:
        axes = {str(k): [float(v) for v in np.atleast_1d(vals)] for k, vals in dict(spec).items()}
    for name, values in axes.items():
        if name not in param_names:
            raise ValueError(
                f"config.eval.sweep: the schedule has no family parameter '{name}'; allowed: "
                f"{', '.join(param_names) or 'none'}"
            )
        if not values:
            raise ValueError(f"config.eval.sweep: no values for '{name}'")
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


def out_of_range(point: Mapping, trained: Mapping, schedule_defaults: Mapping) -> list[str]:
    """Descriptions of family values outside what the network was trained on."""
    bad = []
    for k, v in point.items():
        if k in trained:
            lo, hi = (float(u) for u in trained[k])
            if not lo - 1e-9 <= v <= hi + 1e-9:
                bad.append(
                    f"{k}={v:g} outside the trained range config.family.{k}=[{lo:g}, {hi:g}]"
                )
        elif k in schedule_defaults and abs(float(schedule_defaults[k]) - v) > 1e-9:
            bad.append(
                f"{k}={v:g} but the network was trained at the fixed {k}="
                f"{float(schedule_defaults[k]):g} (config.family has no {k})"
            )
    return bad


def standard_diffusion_label(schedule, basis, family: Mapping | None) -> str | None:
    """How a family member equals standard diffusion, or None.

    Exactly when every γ_i(t) is the same function of t (`schedules.is_standard_diffusion`):
    white prior → 'standard diffusion (white noise)'; variance-matched prior →
    'standard diffusion, variance-matched prior (equal log-SNR)'.
    """
    fam = {k: jnp.asarray(v, jnp.float32) for k, v in (family or {}).items()} or None
    if not schedules.is_standard_diffusion(schedule, fam):
        return None
    if basis.whiten:
        return "standard diffusion, variance-matched prior (equal log-SNR)"
    return "standard diffusion (white noise)"
