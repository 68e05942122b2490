"""σ_i(t), γ_i(t) = logit σ_i² and log SNR_i(t) of PCA components under four schedules
(paper Fig. 2, arXiv v1).

    python -m experiments.figures.gamma_snr_pca --out DIR [--data digits|cifar10] [--num 8]

The PCA basis is fitted on the train split (components sorted by descending variance λ_i).
`--num` components are shown, chosen so that their log λ_i are spread evenly over the
spectrum (directions of zero variance, floored at `bases.MIN_VARIANCE`, excluded). All four
panels are the canonical linear schedule (docs/maths.md §3, unclipped) with the variance labels
l_i = −log λ_i, e = a·l:

  (a) standard diffusion     white prior (s = 1, ρ_i = log λ_i), a = 1: every γ_i(t) equal
  (b) equal log-SNR          white prior, a = 0: no hierarchy, every SNR_i(t) equal, but
                             γ_i = γ̃ + ρ_i differ (small components never reach σ ≈ 1)
  (c) whitened, standard SNR variance-matched prior (s² = λ, ρ = 0), a = 1: the SNR_i(t)
                             of (a), but noise with the data's spectrum
  (d) whitened, equal SNR    variance-matched prior, a = 0: standard diffusion of the
                             whitened components

log SNR_i = ρ_i − γ_i = −γ̃_i. Dashed: the window levels γ̃_den = −7, γ̃_noise = 3 (log SNR
7 and −3) in the log SNR column, and in the γ column where γ = γ̃ (whitened rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures import common
from gudjax import bases, process, schedules
from gudjax.plotting import plt

NAME = "gamma_snr_pca"

#: (panel tag, whiten, a, title)
PANELS = (
    ("a", False, 1.0, "standard diffusion\n(white prior, a = 1)"),
    ("b", False, 0.0, "equal log-SNR, no hierarchy\n(white prior, a = 0)"),
    ("c", True, 1.0, "whitened, standard-diffusion SNR\n(variance-matched prior, a = 1)"),
    ("d", True, 0.0, "whitened, equal log-SNR\n(variance-matched prior, a = 0)"),
)


def choose_components(variance, num: int) -> np.ndarray:
    """Indices of `num` components with log λ spread over the spectrum (floored ones out)."""
    variance = np.asarray(variance, np.float64)
    live = np.flatnonzero(variance > 1.01 * bases.MIN_VARIANCE)
    if len(live) == 0:
        live = np.arange(len(variance))
    return live[common.spread_indices(np.log(variance[live]), num)]


def panel_curves(pca, whiten: bool, a: float, t) -> dict:
    """σ, γ, log SNR (T, D) of the soft schedule with variance labels and softness a."""
    basis = pca.with_prior(whiten)
    sched = schedules.make_schedule("soft", basis, labels="variance", a=a, clip=False)
    state = jax.vmap(lambda s: process.noise_state(sched, s))(t)
    log_snr = -jax.vmap(sched.gamma_tilde)(t)
    return {
        "sigma": np.asarray(state.sigma),
        "gamma": np.asarray(state.gamma),
        "log_snr": np.asarray(log_snr),
        "standard": schedules.is_standard_diffusion(sched),
        "equal_snr": bool(np.allclose(log_snr, np.asarray(log_snr)[:, :1], atol=1e-4)),
        "whiten": whiten,
    }


def make_figure(pca, idx: np.ndarray, *, data_name: str):
    t = jnp.linspace(0.0, 1.0, 401)
    tn = np.asarray(t)
    lam = np.asarray(pca.variance, np.float64)
    cmap = plt.get_cmap("viridis")
    colors = [cmap(k / max(len(idx) - 1, 1)) for k in range(len(idx))]
    fig, axes = plt.subplots(3, 4, figsize=(15, 10), sharex=True)
    den, noise = schedules.GAMMA_DEN, schedules.GAMMA_NOISE
    for col, (tag, whiten, a, title) in enumerate(PANELS):
        cur = panel_curves(pca, whiten, a, t)
        for k, i in enumerate(idx):
            label = f"PCA {i} (λ = {lam[i]:.2g})"
            axes[0, col].plot(tn, cur["sigma"][:, i], color=colors[k], lw=1.5, label=label)
            axes[1, col].plot(tn, cur["gamma"][:, i], color=colors[k], lw=1.5)
            axes[2, col].plot(tn, cur["log_snr"][:, i], color=colors[k], lw=1.5)
        for level, name in ((-den, "γ̃_den"), (-noise, "γ̃_noise")):
            axes[2, col].axhline(level, color="k", ls="--", lw=1)
            axes[2, col].annotate(
                f"−{name} = {level:g}",
                (1.0, level),
                xytext=(-2, 3),
                textcoords="offset points",
                ha="right",
                fontsize=8,
            )
            if whiten:
                axes[1, col].axhline(-level, color="k", ls="--", lw=1)
                axes[1, col].annotate(
                    f"{name} = {-level:g}",
                    (0.0, -level),
                    xytext=(2, 3),
                    textcoords="offset points",
                    fontsize=8,
                )
        note = "all γ_i(t) equal" if cur["standard"] else ""
        if cur["equal_snr"]:
            note = "all SNR_i(t) equal" + (", " + note if note else "")
        axes[0, col].set_title(f"({tag}) {title}" + (f"\n[{note}]" if note else ""), fontsize=10)
        axes[0, col].set_ylim(-0.03, 1.03)
        axes[2, col].set_xlabel("t")
    axes[0, 0].set_ylabel("σ_i(t)")
    axes[1, 0].set_ylabel("γ_i(t) = logit σ_i²")
    axes[2, 0].set_ylabel("log SNR_i(t) = ρ_i − γ_i")
    for row in range(1, 3):  # share y within the γ row and the log SNR row
        lo = min(ax.get_ylim()[0] for ax in axes[row])
        hi = max(ax.get_ylim()[1] for ax in axes[row])
        for ax in axes[row]:
            ax.set_ylim(lo, hi)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(idx), 4),
        fontsize=9,
        bbox_to_anchor=(0.5, -0.01),
        title="component (colour: descending variance λ)",
    )
    fig.suptitle(
        f"{data_name}: linear schedule γ̃_i = γ̃_den + a(l_i − l_max) + t(W + a·Δl), "
        f"l_i = −log λ_i (PCA); dashed: γ̃_den = {den:g}, γ̃_noise = {noise:g}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    return fig


def main(argv: Sequence[str] | None = None) -> list[str]:
    p = common.parser(__doc__, num_help="number of PCA components shown", num_default=8)
    args = p.parse_args(argv)
    if args.num < 1:
        raise ValueError(f"--num={args.num} must be at least 1")
    cfg = common.data_config(args.data, args.data_dir)
    pca = common.fit("pca", cfg, whiten=False, max_images=args.fit_images)
    idx = choose_components(pca.variance, args.num)
    fig = make_figure(pca, idx, data_name=args.data)
    return common.save(fig, args.out, NAME, dpi=args.dpi)


if __name__ == "__main__":
    common.run(main)
