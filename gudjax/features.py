"""Feature extractors and the Fréchet distance between two image sets.

Fréchet distance between Gaussians fitted to two feature sets (means μ₁, μ₂, covariances
C₁, C₂, features as rows):
    FD = ‖μ₁ − μ₂‖² + tr(C₁ + C₂ − 2 (C₁^{1/2} C₂ C₁^{1/2})^{1/2}).
`frechet_distance` computes it in float64 on the host with symmetric eigendecompositions:
C₁^{1/2} from eigh(C₁), then tr((C₁^{1/2} C₂ C₁^{1/2})^{1/2}) = Σ √λ of that symmetric PSD
matrix (negative round-off eigenvalues clipped at 0). No complex sqrtm, no imaginary parts.

Features. Standard FID uses InceptionV3 pool-3 features of 299×299 RGB images, with weights
that no package ships (they are downloaded). gudjax works offline, so its default is a
small classifier that gudjax trains on the labelled training split of the same data set
(`train_classifier`) and caches on disk; the number is reported as "FD-<dataset>-classifier"
and is NOT comparable with published FIDs, nor across classifiers: every number carries the
classifier's fingerprint (sha256 of its parameters), its feature dimension and its test
accuracy. Standard FID is available from a local weights file: config.eval.inception_weights
= an .npz of pytorch-fid's InceptionV3 weights (`gudjax.inception`, converted offline from the
.pth by experiments/convert_inception_weights.py) adds an "FID" number (pool-3 features), with
the weights file's sha256 recorded next to it; config.eval.features="inception" reports FID
alone. Numbers match published FIDs only with the genuine weights, which were not available
to test here.

The classifier (pure JAX, no Flax; images x ∈ [−1, 1], (B, H, W, C)):
    conv3×3(32) → ReLU → [avg-pool 2×2 while the side is > 8] →
    conv3×3(64) → ReLU → [avg-pool 2×2 while the side is > 4] →
    conv3×3(128) → ReLU → global average pool → dense(128) → ReLU  = features (B, 128)
    → dense(num_classes) = logits.
Trained with Adam on cross-entropy, fixed seed, no augmentation. The FD features are the
128-d penultimate activations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gudjax import input_pipeline, runtime

log = logging.getLogger("gudjax")
Array = Any

FEATURE_DIM = 128
CLASSIFIER_FORMAT_VERSION = 1


# ------------------------------------------------------------------ Fréchet distance
def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), covariance (F, F)) of features (N, F) in float64 (unbiased, N − 1)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, F), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """‖μ₁ − μ₂‖² + tr(C₁) + tr(C₂) − 2 tr((C₁^{1/2} C₂ C₁^{1/2})^{1/2}), float64, ≥ 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"Fréchet distance needs matching shapes: means {mu1.shape}, {mu2.shape}; "
            f"covariances {cov1.shape}, {cov2.shape}"
        )
    s1 = _sym_sqrt(cov1)
    m = s1 @ cov2 @ s1
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0, None)))
    fd = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)
    return max(fd, 0.0)


def frechet_distance_of_features(f1, f2) -> float:
    """FD between the Gaussians fitted to two feature sets (N₁, F) and (N₂, F)."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


# ------------------------------------------------------------------ labelled data
def labelled_split(data_config, split: str, max_examples: int | None = None):
    """(uint8 images (N, H, W, C), int labels (N,)) of a split, in stored order.

    Reads the TFDS 'label' feature through the ArrayRecord source of
    `input_pipeline.load_split` (digits, cifar10 and patch_camelyon all have one).
    """
    source = input_pipeline.load_split(data_config, split)
    n = len(source) if max_examples is None else min(int(max_examples), len(source))
    images, labels = [], []
    for lo in range(0, n, 1024):
        ids = list(range(lo, min(lo + 1024, n)))
        records = source.examples.__getitems__(ids)
        if records and "label" not in records[0]:
            raise ValueError(
                f"data set {data_config.name!r} has no 'label' feature: the FD classifier "
                "needs labels; set config.eval.fd=False"
            )
        raw = np.stack([np.asarray(r["image"], np.uint8) for r in records])
        images.append(input_pipeline._area_downsample(raw, source.factor))
        labels.append(np.asarray([int(r["label"]) for r in records], np.int64))
    return np.concatenate(images), np.concatenate(labels)


# ------------------------------------------------------------------ the classifier
def _pool_plan(h: int) -> tuple[bool, bool]:
    """Whether to average-pool after conv1 and after conv2 for an input side h."""
    p1 = h > 8 and h % 2 == 0
    h2 = h // 2 if p1 else h
    p2 = h2 > 4 and h2 % 2 == 0
    return p1, p2


def init_classifier(rng, image_shape, num_classes: int) -> dict:
    """He-initialised parameters of the CNN in the module docstring (a dict of arrays)."""
    c = image_shape[-1]
    shapes = {
        "conv1": (3, 3, c, 32),
        "conv2": (3, 3, 32, 64),
        "conv3": (3, 3, 64, 128),
        "dense1": (128, FEATURE_DIM),
        "out": (FEATURE_DIM, num_classes),
    }
    keys = jax.random.split(rng, len(shapes))
    params = {}
    for key, (name, shape) in zip(keys, shapes.items(), strict=True):
        fan_in = math.prod(shape[:-1])
        params[name] = {
            "w": jax.random.normal(key, shape, jnp.float32) * math.sqrt(2.0 / fan_in),
            "b": jnp.zeros(shape[-1:], jnp.float32),
        }
    return params


def _conv(x, p):
    y = jax.lax.conv_general_dilated(
        x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.nn.relu(y + p["b"])


def _avg_pool(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def classifier_features(params: dict, x: Array) -> Array:
    """Penultimate activations (B, 128) of images x ∈ [−1, 1], (B, H, W, C)."""
    p1, p2 = _pool_plan(x.shape[1])
    h = _conv(x, params["conv1"])
    if p1:
        h = _avg_pool(h)
    h = _conv(h, params["conv2"])
    if p2:
        h = _avg_pool(h)
    h = _conv(h, params["conv3"]).mean(axis=(1, 2))
    return jax.nn.relu(h @ params["dense1"]["w"] + params["dense1"]["b"])


def classifier_logits(params: dict, x: Array) -> Array:
    f = classifier_features(params, x)
    return f @ params["out"]["w"] + params["out"]["b"]


def fingerprint(params: dict) -> str:
    """sha256 (first 12 hex digits) of the parameters: names which features a number used."""
    h = hashlib.sha256()
    for path, leaf in sorted(
        ((jax.tree_util.keystr(k), v) for k, v in jax.tree_util.tree_leaves_with_path(params))
    ):
        h.update(path.encode())
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return h.hexdigest()[:12]


_features_jit = jax.jit(classifier_features)
FEATURE_BATCH = 256


def extract_features(params: dict, x, batch: int = FEATURE_BATCH) -> np.ndarray:
    """Features (N, 128) float64 of images x (N, H, W, C) ∈ [−1, 1], in chunks of `batch`
    rows (the last one padded, so any N uses one compilation)."""
    x = np.asarray(x, np.float32)
    fn = lambda c: _features_jit(params, c)
    return runtime.map_padded_chunks(fn, x, batch, pad="zeros", out_dim=FEATURE_DIM)


def _accuracy(params, images_u8, labels) -> float:
    f = extract_features(params, input_pipeline.to_model_input(images_u8))
    logits = f @ np.asarray(params["out"]["w"], np.float64) + np.asarray(params["out"]["b"])
    return float(np.mean(np.argmax(logits, -1) == labels)) if len(labels) else 0.0


def train_classifier(
    train_images,
    train_labels,
    *,
    num_classes: int,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Adam on softmax cross-entropy; images uint8 (N, H, W, C) (centre dequantisation)."""
    import optax

    n = len(train_labels)
    rng = jax.random.PRNGKey(seed)
    params = init_classifier(rng, train_images.shape[1:], num_classes)
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = classifier_logits(p, x)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    order = np.random.default_rng(seed)
    bs = min(batch_size, n)
    perm = order.permutation(n)
    pos = 0
    for _ in range(int(steps)):
        if pos + bs > n:
            perm, pos = order.permutation(n), 0
        ids = perm[pos : pos + bs]
        pos += bs
        x = input_pipeline.to_model_input(train_images[ids])
        params, opt_state, _ = step(params, opt_state, x, jnp.asarray(train_labels[ids]))
    return jax.device_get(params)


def _save_params(path: str, params: dict, meta: dict) -> None:
    flat = {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(params)
    }
    flat["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **flat)
    os.replace(tmp, path)


def _load_params(path: str, template: dict) -> tuple[dict, dict]:
    with np.load(path) as f:
        meta = json.loads(bytes(f["__meta__"]).decode())
        leaves = [
            jnp.asarray(f[jax.tree_util.keystr(k)])
            for k, _ in jax.tree_util.tree_leaves_with_path(template)
        ]
    return jax.tree.unflatten(jax.tree.structure(template), leaves), meta


class ClassifierFeatures:
    """A trained classifier as a feature extractor: `ex(x)` → (B, 128) features.

    `name` is "FD-<dataset>-classifier"; `info` is what gets written next to every number.
    """

    def __init__(self, params: dict, meta: dict, path: str):
        self.params = params
        self.meta = meta
        self.path = path

    @property
    def name(self) -> str:
        return f"FD-{self.meta['dataset']}-classifier"

    @property
    def info(self) -> dict:
        return {
            "name": self.name,
            "extractor": f"gudjax CNN classifier trained on {self.meta['dataset']} "
            f"{self.meta['train_split']} ({self.meta['steps']} Adam steps), "
            f"{FEATURE_DIM}-d penultimate ReLU features",
            "fingerprint": self.meta["fingerprint"],
            "feature_dim": FEATURE_DIM,
            "test_accuracy": self.meta["test_accuracy"],
            "path": self.path,
            "comparable_with_fid": False,
        }

    def describe(self) -> str:
        """One line for the report: which features a number used."""
        return (
            f"{self.name} (fingerprint {self.meta['fingerprint']}, {FEATURE_DIM}-d, test "
            f"accuracy {self.meta['test_accuracy']:.3f})"
        )

    def __call__(self, x) -> np.ndarray:
        """Features of images x ∈ [−1, 1] (N, H, W, C), float64 numpy (N, 128)."""
        return extract_features(self.params, x)


def classifier_path(cache_dir: str, data_config, *, steps: int, seed: int) -> str:
    h, w, c = input_pipeline.image_shape(data_config)
    name = f"classifier_{data_config.name}_{h}x{w}x{c}_steps{int(steps)}_seed{int(seed)}.npz"
    return os.path.join(cache_dir, name)


def load_or_train_classifier(
    data_config,
    cache_dir: str,
    *,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    max_train_examples: int | None = None,
) -> ClassifierFeatures:
    """The cached classifier for this data set and image size, trained on first use.

    Cached as `<cache_dir>/classifier_<dataset>_<H>x<W>x<C>_steps<S>_seed<seed>.npz`. Pass
    the same cache_dir to several runs to compare their FD numbers with one extractor.
    """
    path = classifier_path(cache_dir, data_config, steps=steps, seed=seed)
    shape = input_pipeline.image_shape(data_config)
    if os.path.exists(path):
        try:
            meta_probe = _read_meta(path)
            template = init_classifier(jax.random.PRNGKey(0), shape, meta_probe["num_classes"])
            params, meta = _load_params(path, template)
            if meta.get("format_version") == CLASSIFIER_FORMAT_VERSION:
                return ClassifierFeatures(params, meta, path)
            log.warning("classifier cache %s has another format version; retraining", path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("cannot read classifier cache %s (%s); retraining", path, e)
    t0 = time.time()
    images, labels = labelled_split(data_config, "train", max_train_examples)
    num_classes = int(labels.max()) + 1
    log.info(
        "training the FD feature classifier on %d %s images (%d steps)",
        len(labels),
        data_config.name,
        steps,
    )
    params = train_classifier(
        images,
        labels,
        num_classes=num_classes,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )
    test_images, test_labels = labelled_split(data_config, "test")
    acc = _accuracy(params, test_images, test_labels)
    meta = {
        "format_version": CLASSIFIER_FORMAT_VERSION,
        "dataset": data_config.name,
        "image_shape": list(shape),
        "num_classes": num_classes,
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "train_split": "train",
        "train_examples": len(labels),
        "test_accuracy": acc,
        "fingerprint": fingerprint(params),
        "train_seconds": round(time.time() - t0, 1),
    }
    log.info("FD classifier: test accuracy %.3f, fingerprint %s", acc, meta["fingerprint"])
    if jax.process_index() == 0:
        os.makedirs(cache_dir, exist_ok=True)
        _save_params(path, params, meta)
    return ClassifierFeatures(params, meta, path)


def _read_meta(path: str) -> dict:
    with np.load(path) as f:
        return json.loads(bytes(f["__meta__"]).decode())


# ------------------------------------------------------------------ config
FEATURES = ("classifier", "inception")


def check_feature_config(eval_config) -> None:
    """One-line errors for the feature settings of config.eval (cheap: the Inception weights
    file is only checked to exist and be a zip here; `inception.load_weights` checks every
    array when the evaluation sets up its features)."""
    kind = eval_config.get("features", "classifier")
    if kind not in FEATURES:
        raise ValueError(f"unknown config.eval.features {kind!r}; allowed: {', '.join(FEATURES)}")
    weights = eval_config.get("inception_weights", None)
    if kind == "inception" and not weights:
        raise ValueError(
            "config.eval.features='inception' needs config.eval.inception_weights=PATH (an .npz "
            "made by experiments/convert_inception_weights.py from pytorch-fid's .pth)"
        )
    if weights:
        from gudjax import inception

        if not os.path.isfile(weights):
            raise ValueError(
                f"config.eval.inception_weights={weights!r} does not exist; {inception.HOW_TO_GET}"
            )
        if not zipfile.is_zipfile(weights):
            raise ValueError(
                f"config.eval.inception_weights={weights!r} is not an .npz file; "
                f"{inception.HOW_TO_GET}"
            )


def feature_extractors(eval_config) -> list[str]:
    """Which Fréchet distances an evaluation reports: 'classifier' and/or 'inception'."""
    if not eval_config.get("fd", True):
        return []
    kind = eval_config.get("features", "classifier")
    out = ["classifier"] if kind == "classifier" else []
    if eval_config.get("inception_weights", None):
        out.append("inception")
    return out
