"""Shared pieces of the figure scripts: command line, data, fitted bases, saving.

Data (`--data`): 'digits' (8×8×1, built offline from scikit-learn on first use) or
'cifar10' (32×32×3, read through TFDS with download=False; a missing data set is the input
pipeline's one-line `DatasetNotFoundError`, naming the `tfds build` command). Bases are
fitted with `gudjax.bases.fit_basis` on the train split (`--fit-images` limits how many
images are used; default all).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from gudjax import bases, input_pipeline
from gudjax.plotting import plt

DATA_CHOICES = ("digits", "cifar10")


def parser(description: str, *, num_help: str, num_default: int) -> argparse.ArgumentParser:
    """The common flags: --out, --data, --data-dir, --num, --fit-images, --seed, --dpi."""
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    p.add_argument("--out", required=True, help="output folder for the PNG and PDF")
    p.add_argument("--data", default="digits", choices=DATA_CHOICES, help="data set")
    p.add_argument(
        "--data-dir",
        default=None,
        help="data directory (default: $GUDJAX_DATA_DIR or ~/tensorflow_datasets for digits, "
        "the TFDS default for cifar10)",
    )
    p.add_argument("--num", type=int, default=num_default, help=num_help)
    p.add_argument(
        "--fit-images",
        type=int,
        default=None,
        help="train images used to fit the basis statistics (default: the whole split)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG")
    return p


def data_config(name: str, data_dir: str | None = None):
    """`config.data` for the digits (8×8×1) or CIFAR-10 (32×32×3) at native size."""
    if name not in DATA_CHOICES:
        raise ValueError(f"--data={name!r}; allowed: {', '.join(DATA_CHOICES)}")
    cfg = input_pipeline.default_data_config()
    cfg.name = name
    h, _, c = input_pipeline.DATASETS[name].shape
    cfg.image_size = h
    cfg.channels = c
    if data_dir:
        cfg.data_dir = str(data_dir)
    return cfg


def fit_batches(cfg, max_images: int | None = None):
    """uint8 train batches → float images in [-1, 1] (centre dequantisation), at most
    `max_images` of them."""
    batches = (input_pipeline.to_model_input(b) for b in input_pipeline.fit_batches(cfg))
    if max_images is None:
        return batches
    if max_images < 2:
        raise ValueError(f"--fit-images={max_images} must be at least 2")

    def limited():
        left = int(max_images)
        for b in batches:
            if left <= 0:
                return
            yield b[:left]
            left -= len(b)

    return limited()


def fit(name: str, cfg, *, whiten: bool = False, max_images: int | None = None, **options):
    """`bases.fit_basis` on the train split of `cfg`."""
    return bases.fit_basis(name, fit_batches(cfg, max_images), whiten=whiten, **options)


def load_test_image(cfg, index: int = 0) -> np.ndarray:
    """Test image number `index`, float32 (H, W, C) in [-1, 1] (centre dequantisation)."""
    src = input_pipeline.load_split(cfg, "test")
    if not 0 <= index < len(src):
        raise ValueError(f"--index={index} outside the test split of {len(src)} images")
    return input_pipeline.to_model_input(src.read([index]))[0]


def to_display(x) -> np.ndarray:
    """Image(s) (..., H, W, C) in [-1, 1] → floats in [0, 1] for imshow (grey for C = 1)."""
    x = (np.clip(np.asarray(x, np.float32), -1.0, 1.0) + 1.0) / 2.0
    return x[..., 0] if x.shape[-1] == 1 else x


def save(fig, out_dir: str, name: str, *, dpi: int = 150) -> list[str]:
    """Write `name`.png and `name`.pdf into out_dir; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = os.path.join(out_dir, f"{name}.{ext}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def run(main: Callable[[Sequence[str] | None], list[str]], argv: Sequence[str] | None = None):
    """Run a figure's `main`, print the written paths; a user error (ValueError, e.g. a data
    set that is not prepared or a bad eval JSON) exits with a one-line message."""
    try:
        paths = main(argv)
    except ValueError as e:
        msg = " ".join(str(e).split())
        sys.exit(f"error: {msg}")
    for path in paths:
        print(path)
    return paths


def spread_indices(values: np.ndarray, num: int) -> np.ndarray:
    """`num` distinct indices whose `values` are spread evenly over their range (sorted)."""
    values = np.asarray(values, np.float64)
    num = max(1, min(int(num), len(values)))
    targets = np.linspace(values.max(), values.min(), num)
    chosen: list[int] = []
    for target in targets:
        order = np.argsort(np.abs(values - target))
        chosen.append(int(next(i for i in order if i not in chosen)))
    return np.array(sorted(chosen))


__all__ = [
    "data_config",
    "fit",
    "fit_batches",
    "parser",
    "run",
    "save",
    "spread_indices",
    "load_test_image",
    "to_display",
]
