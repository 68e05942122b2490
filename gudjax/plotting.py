"""PNG output: sample grids, loss curves and γ_i(t) plots.

The plots are `matplotlib.figure.Figure` objects drawn by the Agg canvas that `savefig`
picks for a .png: no pyplot, no global backend, nothing set when this module is imported.
Figure scripts that want pyplot take it from `pyplot()` (or `from gudjax.plotting import
plt`), which selects the Agg backend on first use.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (selected on the first call)."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def __getattr__(name: str):
    if name == "plt":  # `from gudjax.plotting import plt` in figure scripts
        return pyplot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _figure(**kw):
    from matplotlib.figure import Figure

    return Figure(**kw)


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
    """The rows of a metrics.jsonl file ([] when absent); a damaged line is a one-line error."""
    if not os.path.exists(path):
        return []
    rows = []
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict):
                    raise ValueError(
                        f"{path} line {i} is not a JSON object; delete that line (or the file: "
                        "it only holds the logged metrics) and run again"
                    )
                rows.append(row)
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or " ".join(str(e).split())
        raise ValueError(
            f"cannot read {path} ({reason}); delete it (it only holds the logged metrics)"
        ) from None
    return rows


def plot_loss(metrics_path: str, out_path: str) -> str:
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
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
    return out_path


def plot_gamma(schedule, params, out_path: str, *, basis=None, max_lines: int = 64,
               title: str | None = None) -> str:
    """γ̃_i(t) = −log SNR_i(t) of (up to max_lines) components, coloured by component index."""
    t = jnp.linspace(0.0, 1.0, 201)
    g = np.asarray(jax.vmap(lambda s: schedule.gamma_tilde(s, params))(t))
    d = g.shape[1]
    idx = np.unique(np.linspace(0, d - 1, min(d, max_lines)).round().astype(int))
    import matplotlib

    fig = _figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["viridis"]
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
    return out_path


def _fmt(params) -> str:
    if not params:
        return ""
    return ", ".join(f"{k}={float(v):.3g}" for k, v in sorted(params.items()))
