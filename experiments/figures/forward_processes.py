"""One image through four forward processes (paper Fig. 4, arXiv v1).

    python -m experiments.figures.forward_processes --out DIR [--data digits|cifar10]
        [--num 7] [--index 0] [--seed 0] [--haar-b 0.5]

Each row is z_t = α(t) ⊙ z_0 + σ(t) ⊙ ε (`gudjax.process`) for one test image, shown in
image space x_t = Uᵀ(s ⊙ z_t) + μ (clipped to [−1, 1]) at `--num` times t from 0 to 1. One
noise draw ε ~ N(0, I) per row, the same for every t of that row, so a row shows the
schedule, not fresh noise. Bases are fitted on the train split.

  standard            PCA, white prior, soft schedule a = 1 with l = −log λ: all γ_i equal,
                      i.e. standard white-noise diffusion (`is_standard_diffusion`)
  variance-matched    PCA, variance-matched prior, a = 1: the same SNR_i(t) as the first row,
                      noise with the data's covariance (Fig. 2 panel c)
  column b = 0.5      pixel basis, white prior, clipped column-sequential schedule: the left
                      column is generated first, so the right columns are noised first
  Haar + column       3-level Haar, variance-matched prior, e = a·level + c(b)·colpos with
                      a = 0.5 and b = --haar-b (default 0.5), clipped
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures import common
from gudjax import process, schedules
from gudjax.plotting import plt

NAME = "forward_processes"


def processes(cfg, *, max_images: int | None, haar_b: float) -> list[tuple[str, object, object]]:
    """(row label, basis, schedule) of the four forward processes."""
    pca = common.fit("pca", cfg, whiten=False, max_images=max_images)
    pixel = common.fit("pixel", cfg, whiten=False, max_images=max_images)
    haar = common.fit("haar", cfg, whiten=True, max_images=max_images, levels=3)
    pca_w = pca.with_prior(True)
    return [
        (
            "standard diffusion\n(white noise)",
            pca,
            schedules.make_schedule("soft", pca, labels="variance", a=1.0),
        ),
        (
            "variance-matched noise,\nstandard SNR (PCA, a = 1)",
            pca_w,
            schedules.make_schedule("soft", pca_w, labels="variance", a=1.0),
        ),
        (
            "column-sequential\nb = 0.5 (pixel basis)",
            pixel,
            schedules.make_schedule("column", pixel, b=0.5),
        ),
        (
            f"Haar + column, a = 0.5,\nb = {haar_b:g}, variance-matched",
            haar,
            schedules.make_schedule("haar_column", haar, a=0.5, b=haar_b),
        ),
    ]


def noised_row(basis, schedule, x0, eps, ts) -> np.ndarray:
    """x_t (T, H, W, C) for one image x0 (H, W, C) and one noise draw eps (D,)."""
    z0 = basis.encode(jnp.asarray(x0))

    def at(t):
        return basis.decode(process.forward_sample(z0, process.noise_state(schedule, t), eps))

    return np.asarray(jax.vmap(at)(jnp.asarray(ts, jnp.float32)))


def make_figure(rows, x0, ts, *, seed: int, data_name: str, index: int):
    n_rows, n_cols = len(rows), len(ts)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.6 * n_cols + 2.2, 1.6 * n_rows + 0.9), squeeze=False
    )
    root = jax.random.PRNGKey(seed)
    for r, (label, basis, schedule) in enumerate(rows):
        eps = jax.random.normal(jax.random.fold_in(root, r), (basis.dim,))
        xs = noised_row(basis, schedule, x0, eps, ts)
        for c in range(n_cols):
            ax = axes[r, c]
            img = common.to_display(xs[c])
            ax.imshow(
                img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {ts[c]:.2f}", fontsize=10)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(
        f"{data_name} test image {index} through four forward processes "
        f"(x_t = Uᵀ(s ⊙ (α z_0 + σ ε)) + μ; one ε per row, seed {seed})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> list[str]:
    p = common.parser(__doc__, num_help="number of time columns (t from 0 to 1)", num_default=7)
    p.add_argument("--index", type=int, default=0, help="test image index")
    p.add_argument("--haar-b", type=float, default=0.5, help="column fraction b of the Haar row")
    args = p.parse_args(argv)
    if args.num < 2:
        raise ValueError(f"--num={args.num} must be at least 2 (t = 0 and t = 1)")
    if not 0.0 <= args.haar_b < 1.0:
        raise ValueError(f"--haar-b={args.haar_b} must lie in [0, 1)")
    cfg = common.data_config(args.data, args.data_dir)
    x0 = common.load_test_image(cfg, args.index)
    rows = processes(cfg, max_images=args.fit_images, haar_b=args.haar_b)
    ts = np.linspace(0.0, 1.0, args.num)
    fig = make_figure(rows, x0, ts, seed=args.seed, data_name=args.data, index=args.index)
    return common.save(fig, args.out, NAME, dpi=args.dpi)


if __name__ == "__main__":
    common.run(main)
