"""Paths of two components in (log SNR_1, log SNR_2) space: diffusion, soft conditioning and
the autoregressive limit (docs/maths.md §9, "also useful").

    python -m experiments.figures.snr_paths --out DIR [--data digits|cifar10] [--num 3]
        [--components 0,K]

log SNR_i(t) = −γ̃_i(t) of the canonical linear schedule (docs/maths.md §3), as t runs from 0 (o) to
1 (×); generation runs the path backwards. Shaded: the window γ̃ ∈ [γ̃_den, γ̃_noise]
(log SNR ∈ [−3, 7]) where a component is being generated (above: clean, below: noise).

(a) Two PCA components of the data (white prior, variance labels l = −log λ, unclipped, the
    family of the paper's PCA experiment): every path is a line of slope 1, offset from the
    diagonal by a·(log λ_1 − log λ_2). a = 0 is equal log-SNR, a = 1 is standard diffusion
    (every γ_i equal); the larger a, the less time both components spend inside the window
    together. `--components` picks the two (default: component 0 and the component of
    median log-variance).
(b) The same mechanism in the clipped, sequential form: two components with labels 0 and 1
    (component 2 is noised first, component 1 generated first), e = a·l, γ̃ clipped to the
    window, so b = a/(W + a) is the paper's offset fraction. a = 0 is diffusion (diagonal),
    0 < a < W soft conditioning (`--num` values), a ≥ W (b ≥ ½ for two components) the
    autoregressive limit: component 2 is generated only once component 1 is clean. Thin
    dotted lines are the unclipped paths whose projection onto the window the clipping is.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures import common
from gudjax import bases, schedules
from gudjax.plotting import plt

NAME = "snr_paths"
DEN, NOISE = schedules.GAMMA_DEN, schedules.GAMMA_NOISE
WIDTH = NOISE - DEN


def log_snr_path(schedule, t) -> np.ndarray:
    """log SNR_i(t) = −γ̃_i(t), (T, D)."""
    return -np.asarray(jax.vmap(schedule.gamma_tilde)(t))


def default_pair(variance) -> tuple[int, int]:
    """Component 0 and the (non-floored) component of median log-variance."""
    v = np.asarray(variance, np.float64)
    live = np.flatnonzero(v > 1.01 * bases.MIN_VARIANCE)
    logv = np.log(v[live])
    j = int(live[np.argmin(np.abs(logv - np.median(logv)))])
    return 0, max(j, 1)


def _window(ax):
    lo, hi = -NOISE, -DEN
    ax.axvspan(lo, hi, color="C0", alpha=0.07, lw=0)
    ax.axhspan(lo, hi, color="C0", alpha=0.07, lw=0)
    ax.fill_between(
        [lo, hi],
        lo,
        hi,
        color="C0",
        alpha=0.18,
        lw=0,
        label=f"window γ̃ ∈ [{DEN:g}, {NOISE:g}] (both active)",
    )
    for v in (lo, hi):
        ax.axvline(v, color="C0", lw=0.6, ls="--")
        ax.axhline(v, color="C0", lw=0.6, ls="--")


def _path(
    ax, p, color, label, *, lw=2.0, ls="-", ends=True, ticks=True, alpha=1.0, zorder=2, arrow_at=0.5
):
    ax.plot(p[:, 0], p[:, 1], color=color, lw=lw, ls=ls, label=label, alpha=alpha, zorder=zorder)
    if ends:
        ax.plot(*p[0], "o", color=color, ms=6, mfc="white")
        ax.plot(*p[-1], "x", color=color, ms=7, mew=2)
        mid = min(max(int(arrow_at * (len(p) - 1)), 1), len(p) - 2)
        ax.annotate(
            "",
            xy=p[mid + 1],
            xytext=p[mid - 1],
            arrowprops=dict(arrowstyle="-|>", color=color, lw=1.5, mutation_scale=14),
        )
    if ticks:  # t = 0.1, 0.2, ..., 0.9
        k = np.linspace(0, len(p) - 1, 11).round().astype(int)[1:-1]
        ax.plot(p[k, 0], p[k, 1], ".", color=color, ms=4)


def panel_data(ax, pca, pair, a_values, t):
    i, j = pair
    lam = np.asarray(pca.variance, np.float64)
    cmap = plt.get_cmap("plasma")
    _window(ax)
    for k, a in enumerate(a_values):
        sched = schedules.make_schedule("soft", pca, labels="variance", a=a, clip=False)
        p = log_snr_path(sched, t)[:, [i, j]]
        std = schedules.is_standard_diffusion(sched)
        label = f"a = {a:g}" + (
            " (standard diffusion: all γ_i equal)" if std else " (equal log-SNR)" if a == 0 else ""
        )
        color = "k" if std else cmap(0.85 * k / max(len(a_values) - 1, 1))
        _path(ax, p, color, label)
    span = 6.0
    ax.set_xlim(-NOISE - span, -DEN + span)
    ax.set_ylim(-NOISE - span, -DEN + span)
    ax.set_xlabel(f"log SNR of PCA {i} (λ = {lam[i]:.2g})")
    ax.set_ylabel(f"log SNR of PCA {j} (λ = {lam[j]:.2g})")
    ax.set_title(
        "(a) two PCA components, white prior, unclipped\nlinear schedule e = a·(−log λ)",
        fontsize=10,
    )


def panel_sequential(ax, soft_a, t):
    labels = np.array([0.0, 1.0], np.float32)
    a_values = [0.0, *soft_a, WIDTH]
    cmap = plt.get_cmap("viridis")
    _window(ax)
    for k, a in enumerate(a_values):
        clipped = schedules.make_schedule("soft", dim=2, labels=labels, a=a, clip=True)
        free = schedules.make_schedule("soft", dim=2, labels=labels, a=a, clip=False)
        b = schedules.a_to_b(a)
        if a == 0:
            label, color = "a = 0: diffusion (b = 0)", "k"
        elif a >= WIDTH:
            label, color = f"a = {a:g} = W: autoregressive limit (b = {b:.2g})", "C3"
        else:
            label = f"a = {a:.3g}: soft conditioning (b = {b:.2g})"
            color = cmap(0.15 + 0.7 * (k - 1) / max(len(soft_a) - 1, 1))
        if a > 0:
            _path(ax, log_snr_path(free, t), color, None, lw=0.8, ls=":", ends=False, ticks=False)
        if a >= WIDTH:  # underneath: the soft paths run along its edges at their ends
            _path(
                ax,
                log_snr_path(clipped, t),
                color,
                label,
                lw=5.0,
                alpha=0.45,
                zorder=1.5,
                arrow_at=0.25,
            )
        else:
            _path(ax, log_snr_path(clipped, t), color, label, lw=2.5 if a == 0 else 2.0)
    span = 4.0
    ax.set_xlim(-NOISE - span, -DEN + span)
    ax.set_ylim(-NOISE - span, -DEN + span)
    ax.set_xlabel("log SNR_1 (label 0: generated first)")
    ax.set_ylabel("log SNR_2 (label 1: generated later)")
    ax.set_title(
        "(b) clipped sequential form, labels (0, 1), e = a·l\n"
        "diffusion → soft conditioning → autoregression",
        fontsize=10,
    )


def make_figure(pca, pair, num_soft: int, *, data_name: str):
    t = jnp.linspace(0.0, 1.0, 501)
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 6.6))
    panel_data(axes[0], pca, pair, [0.0, 0.5, 1.0, 1.5, 2.0], t)
    soft_a = [float(v) for v in np.linspace(0.0, WIDTH, num_soft + 2)[1:-1]]
    panel_sequential(axes[1], soft_a, t)
    for ax in axes:
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    fig.suptitle(
        f"{data_name}: paths in (log SNR_1, log SNR_2) as t goes 0 (o) → 1 (×), dots every "
        "Δt = 0.1; generation runs them backwards",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def main(argv: Sequence[str] | None = None) -> list[str]:
    p = common.parser(
        __doc__, num_help="number of soft-conditioning a values in (b)", num_default=3
    )
    p.add_argument(
        "--components", default=None, help="two PCA component indices for panel (a), e.g. '0,8'"
    )
    args = p.parse_args(argv)
    if args.num < 1:
        raise ValueError(f"--num={args.num} must be at least 1")
    cfg = common.data_config(args.data, args.data_dir)
    pca = common.fit("pca", cfg, whiten=False, max_images=args.fit_images)
    if args.components:
        try:
            pair = tuple(int(v) for v in args.components.split(","))
        except ValueError:
            pair = ()
        if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= v < pca.dim for v in pair):
            raise ValueError(
                f"--components={args.components!r}: need two different indices in [0, {pca.dim})"
            )
    else:
        pair = default_pair(pca.variance)
    fig = make_figure(pca, pair, args.num, data_name=args.data)
    return common.save(fig, args.out, NAME, dpi=args.dpi)


if __name__ == "__main__":
    common.run(main)
