"""PNG output: sample grids, loss curves and γ_i(t) plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, H, W, C) in [-1, 1] → one uint8 grid image (rows × cols tiles)."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = (np.clip(img, -1, 1) + 1) / 2
    out = np.round(grid * 255).astype(np.uint8)
    return out[..., 0] if c == 1 else out[..., :3]


def save_image_grid(images, path: str, *, ncols: int | None = None, scale: int = 4) -> str:
    """Write a PNG grid, upscaled by `scale` (nearest) so 8×8 digits are visible."""
    grid = image_grid(images, ncols)
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss(metrics_path: str, out_path: str) -> str:
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if rows:
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows])
        ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
        k = max(1, len(loss) // 20)
        if len(loss) > k:
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, lw=2, label=f"moving mean ({k})")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("ε-prediction loss")
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_gamma(schedule, params, out_path: str, *, basis=None, max_lines: int = 64,
               title: str | None = None) -> str:
    """γ̃_i(t) = −log SNR_i(t) of (up to max_lines) components, coloured by component index."""
    t = jnp.linspace(0.0, 1.0, 201)
    g = np.asarray(jax.vmap(lambda s: schedule.gamma_tilde(s, params))(t))
    d = g.shape[1]
    idx = np.unique(np.linspace(0, d - 1, min(d, max_lines)).round().astype(int))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    cmap = plt.get_cmap("viridis")
    for j, i in enumerate(idx):
        color = cmap(j / max(len(idx) - 1, 1))
        axes[0].plot(t, g[:, i], color=color, lw=0.8)
        axes[1].plot(t, np.asarray(jax.nn.sigmoid(g[:, i] + schedule.rho[i])), color=color, lw=0.8)
    axes[0].set_ylabel("γ̃_i(t) = −log SNR_i")
    axes[1].set_ylabel("σ_i²(t)")
    for ax in axes:
        ax.set_xlabel("t")
    fig.suptitle(title or f"schedule '{schedule.kind}' {_fmt(params)} (colour = component index)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def _fmt(params) -> str:
    if not params:
        return ""
    return ", ".join(f"{k}={float(v):.3g}" for k, v in sorted(params.items()))
