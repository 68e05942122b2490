"""Standard FID features: the FID InceptionV3 (pool-3, 2048-d) as a Flax NNX module, NHWC.

This is the network of pytorch-fid (`pytorch_fid.inception.fid_inception_v3`), itself a port of
TensorFlow's "inception-2015-12-05" graph used by the original FID code:
torchvision's InceptionV3 trunk with the FID patches
  - Mixed_5b/5c/5d (FIDInceptionA), Mixed_6b–6e (FIDInceptionC) and Mixed_7b (FIDInceptionE_1):
    the pool branch is a 3×3 average pool, stride 1, padding 1, that does NOT count the
    padded zeros (count_include_pad=False, TensorFlow's behaviour);
  - Mixed_7c (FIDInceptionE_2): the pool branch is a 3×3 MAX pool, stride 1, padding 1;
  - Mixed_6a (InceptionB) and Mixed_7a (InceptionD) as in torchvision;
every convolution is BasicConv2d = conv (no bias) → BatchNorm (eps = 1e-3, running statistics)
→ ReLU. Features = global average of Mixed_7c's output (B, 2048): "pool-3". No fc layer.

Input pipeline (`preprocess`, as pytorch-fid computes FID of image files):
  gudjax images x ∈ [−1, 1] (N, H, W, C), C ∈ {1, 3}
  → uint8 k = clip(⌊(x + 1)·128⌋, 0, 255)   (`input_pipeline.to_uint8`: exact for real and
                                            for quantised generated images)
  → k / 255 ∈ [0, 1]                        (torchvision ToTensor of the image file)
  → grey images repeated to 3 channels
  → bilinear resize to 299×299, align_corners=False, no antialiasing (torch F.interpolate;
    written as two interpolation matrices, `resize_matrix`)
  → 2·v − 1 ∈ [−1, 1] → the network.

Weights. Nothing is downloaded: config.eval.inception_weights names a local .npz whose keys are
pytorch-fid's state-dict names ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.bn.running_mean",
…) holding arrays in PyTorch layouts (conv weights OIHW; converted to HWIO here). Make it from
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` with
    python experiments/convert_inception_weights.py pt_inception-2015-12-05-6726825d.pth OUT.npz
(no torch needed). `fc.weight`/`fc.bias` and BatchNorm `num_batches_tracked` entries are ignored.

Honesty note: the architecture and the loader are tested with random weights in the exact
pytorch-fid key set and shapes, and the .pth reader on a file written in torch's zip format.
The real weights could not be obtained here, so agreement with published FIDs (and with
pytorch-fid's own numbers) is untested. Even with the real weights, FIDs of this pipeline match
pytorch-fid's, which differ slightly from the original TensorFlow code's (another resize).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gudjax import runtime

Array = Any

FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3
PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
HOW_TO_GET = (
    f"convert pytorch-fid's {PTH_NAME} offline with `python "
    "experiments/convert_inception_weights.py PTH OUT.npz` and pass OUT.npz"
)
#: state-dict entries that a weights file may hold but the pool-3 network does not use
IGNORED_KEYS = ("fc.weight", "fc.bias")


# ------------------------------------------------------------------ building blocks
def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class BasicConv2d(nnx.Module):
    """conv (no bias, symmetric zero padding) → BatchNorm(eps = 1e-3) → ReLU."""

    def __init__(self, cin: int, cout: int, kernel, *, stride=1, padding=0, rngs: nnx.Rngs):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(
            cin,
            cout,
            _pair(kernel),
            strides=_pair(stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(cout, epsilon=BN_EPS, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


def max_pool(x, k: int = 3, stride: int = 2, pad: int = 0):
    """k×k max pool (NHWC); padding (if any) never wins, like torch's −inf padding."""
    p = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, stride, stride, 1), p)


def avg_pool_exclude_pad(x):
    """3×3 average pool, stride 1, padding 1, divided by the number of real (unpadded) inputs
    in each window (torch avg_pool2d count_include_pad=False; TensorFlow's SAME average)."""
    p = ((0, 0), (1, 1), (1, 1), (0, 0))
    win, one = (1, 3, 3, 1), (1, 1, 1, 1)
    sums = jax.lax.reduce_window(x, 0.0, jax.lax.add, win, one, p)
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, win, one, p)
    return sums / counts


class FIDInceptionA(nnx.Module):
    def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([b3, bd, max_pool(x)], axis=-1)


class FIDInceptionC(nnx.Module):
    def __init__(self, cin: int, channels_7x7: int, *, rngs: nnx.Rngs):
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        bp = self.branch_pool(avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return jnp.concatenate([b3, b7, max_pool(x)], axis=-1)


class FIDInceptionE(nnx.Module):
    """FIDInceptionE_1 (pool='avg', Mixed_7b) and FIDInceptionE_2 (pool='max', Mixed_7c)."""

    def __init__(self, cin: int, *, pool: str, rngs: nnx.Rngs):
        if pool not in ("avg", "max"):
            raise ValueError(f"pool={pool!r}; allowed: avg, max")
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        pooled = avg_pool_exclude_pad(x) if self.pool == "avg" else max_pool(x, 3, 1, 1)
        bp = self.branch_pool(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nnx.Module):
    """pytorch-fid's FID InceptionV3 up to pool-3. Attribute names = state-dict prefixes.

    __call__(x (B, 299, 299, 3) ∈ [−1, 1]) → (B, 2048). Any size ≥ 75 works (fully
    convolutional), but standard FID feeds 299×299 (`preprocess`).
    """

    def __init__(self, *, rngs: nnx.Rngs):
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
        self.Mixed_5b = FIDInceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = FIDInceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = FIDInceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = FIDInceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = FIDInceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = FIDInceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = FIDInceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg", rngs=rngs)
        self.Mixed_7c = FIDInceptionE(2048, pool="max", rngs=rngs)

    def __call__(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = max_pool(x)
        x = max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return jnp.mean(x, axis=(1, 2))


# ------------------------------------------------------------------ input pipeline
def resize_matrix(n_in: int, n_out: int = INPUT_SIZE) -> np.ndarray:
    """(n_out, n_in) float32 matrix of torch's bilinear interpolation (align_corners=False):
    src = max((dst + ½)·n_in/n_out − ½, 0), weights 1 − λ, λ on ⌊src⌋, min(⌊src⌋ + 1, n_in − 1)."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m.astype(np.float32)


def preprocess(x: Array) -> Array:
    """gudjax images (B, H, W, C ∈ {1, 3}) ∈ [−1, 1] → network input (B, 299, 299, 3) ∈ [−1, 1]
    (see the module docstring: uint8, /255, grey → RGB, bilinear resize, 2v − 1). jit-able."""
    b, h, w, c = x.shape
    if c not in (1, 3):
        raise ValueError(f"Inception features need 1 or 3 channels, got {c}")
    k = jnp.clip(jnp.floor((x.astype(jnp.float32) + 1.0) * 128.0), 0.0, 255.0)
    v = k / 255.0
    if c == 1:
        v = jnp.repeat(v, 3, axis=-1)
    rh, rw = jnp.asarray(resize_matrix(h)), jnp.asarray(resize_matrix(w))
    v = jnp.einsum("oh,bhwc->bowc", rh, v, precision=jax.lax.Precision.HIGHEST)
    v = jnp.einsum("pw,bowc->bopc", rw, v, precision=jax.lax.Precision.HIGHEST)
    return 2.0 * v - 1.0


# ------------------------------------------------------------------ weights
_LEAF_TO_TORCH = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}


@functools.cache
def abstract_model():
    """(graphdef, abstract state) of the network without allocating or initialising weights."""
    return nnx.split(nnx.eval_shape(lambda: FIDInceptionV3(rngs=nnx.Rngs(0))))


@functools.cache
def state_dict_spec() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """pytorch-fid state-dict name → (path in the NNX state, PyTorch shape), for every array
    the pool-3 network needs (convs: weight (O, I, kh, kw); BatchNorm: weight, bias,
    running_mean, running_var (C,))."""
    _, state = abstract_model()
    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]
    spec = {}
    for path, leaf in flat:
        keys = tuple(str(p.key) for p in path)
        shape = tuple(int(s) for s in leaf.shape)
        if keys[-1] == "kernel":  # HWIO → OIHW
            shape = (shape[3], shape[2], shape[0], shape[1])
        name = ".".join(keys[:-1]) + "." + _LEAF_TO_TORCH[keys[-1]]
        spec[name] = (keys, shape)
    return spec


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.endswith("num_batches_tracked")


def load_weights(path: str, field: str = "config.eval.inception_weights") -> dict:
    """The parameters (a pure dict for `nnx.merge` with `abstract_model()`'s graphdef) from an
    .npz of pytorch-fid state-dict arrays. One-line ValueError naming the first bad key."""
    where = f"{field}={path!r}"
    if not os.path.isfile(path):
        raise ValueError(f"{where} does not exist; {HOW_TO_GET}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{where} is not an .npz file; {HOW_TO_GET}")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("data.pkl") for n in names):
        raise ValueError(f"{where} is a PyTorch .pth, not the .npz this loader reads; {HOW_TO_GET}")
    try:
        f = np.load(path, allow_pickle=False)
        arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - any unreadable archive is the same user error
        raise ValueError(
            f"{where}: cannot read it as .npz ({type(e).__name__}); {HOW_TO_GET}"
        ) from None
    spec = state_dict_spec()
    missing = [k for k in spec if k not in arrays]
    if missing:
        raise ValueError(
            f"{where} lacks '{missing[0]}' ({len(missing)} of {len(spec)} arrays missing): not "
            f"the FID Inception weights; {HOW_TO_GET}"
        )
    extra = [k for k in arrays if k not in spec and not is_ignored(k)]
    if extra:
        raise ValueError(
            f"{where} has the unexpected array '{extra[0]}' ({len(extra)} unexpected): not the "
            f"pytorch-fid FID Inception weights; {HOW_TO_GET}"
        )
    pure: dict = {}
    for name, (keys, shape) in spec.items():
        a = arrays[name]
        if tuple(a.shape) != shape:
            raise ValueError(
                f"{where}: '{name}' has shape {tuple(a.shape)}, expected {shape}; {HOW_TO_GET}"
            )
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
            raise ValueError(f"{where}: '{name}' is not a finite float array; {HOW_TO_GET}")
        a = np.asarray(a, np.float32)
        if keys[-1] == "kernel":
            a = np.transpose(a, (2, 3, 1, 0))  # OIHW → HWIO
        node = pure
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = a
    return pure


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """A complete pytorch-fid-shaped state dict of random values (tests, benchmarks): conv
    weights He-scaled, BatchNorm weight ≈ 1, bias ≈ 0, running_var > 0."""
    g = np.random.default_rng(seed)
    out = {}
    for name, (_, shape) in state_dict_spec().items():
        if name.endswith("conv.weight"):
            fan_in = math.prod(shape[1:])
            a = g.normal(size=shape) * math.sqrt(2.0 / fan_in)
        elif name.endswith("running_var"):
            a = g.uniform(0.5, 1.5, size=shape)
        elif name.endswith("bn.weight"):
            a = g.uniform(0.8, 1.2, size=shape)
        else:
            a = g.normal(size=shape) * 0.1
        out[name] = a.astype(np.float32)
    return out


# ------------------------------------------------------------------ the extractor
@functools.cache
def _features_fn():
    """jit((params, images) ↦ pool-3 features), built once per process."""
    graphdef, _ = abstract_model()

    def fn(params, x):
        return nnx.merge(graphdef, params, copy=True)(preprocess(x))

    return jax.jit(fn)


def features(params: dict, x: Array) -> Array:
    """Pool-3 features (B, 2048) of gudjax images x (B, H, W, C) ∈ [−1, 1] (jit-compiled)."""
    return _features_fn()(params, x)


class InceptionFeatures:
    """Standard FID features of a local weights file: `ex(x)` → (N, 2048) float64.

    `name` is "FID"; `info` and `describe()` are what gets written next to every number
    (extractor, weights file and its sha256, preprocessing). Batches of `batch_size` images
    (the last one padded) are split over the local devices on a 1-D mesh.
    """

    name = "FID"

    def __init__(self, path: str, *, batch_size: int = 64):
        self.path = os.path.abspath(path)
        params = load_weights(path)
        self.sha256 = file_sha256(path)
        self.mesh = runtime.batch_mesh()
        self.batch_size = runtime.padded_size(max(1, int(batch_size)), self.mesh)
        self.params = runtime.replicate(params, self.mesh)

    @property
    def info(self) -> dict:
        return {
            "name": self.name,
            "extractor": "InceptionV3 pool-3 (pytorch-fid's FID Inception, TF "
            "inception-2015-12-05 port), 2048-d",
            "weights": self.path,
            "weights_sha256": self.sha256,
            "feature_dim": FEATURE_DIM,
            "preprocessing": "uint8 k -> k/255, grey repeated to RGB, bilinear resize to "
            "299x299 (align_corners=False, no antialias, as pytorch-fid), 2v-1",
            "comparable_with_fid": "only with the genuine pytorch-fid weights (sha256 above)",
        }

    def describe(self) -> str:
        return (
            f"InceptionV3 pool-3 (pytorch-fid FID Inception), {FEATURE_DIM}-d, weights "
            f"{os.path.basename(self.path)} sha256 {self.sha256[:12]}"
        )

    def __call__(self, x) -> np.ndarray:
        """Features of images x ∈ [−1, 1] (N, H, W, C ∈ {1, 3}), float64 numpy (N, 2048)."""
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"images must have shape (N, H, W, 1 or 3), got {x.shape}")
        return runtime.map_padded_chunks(
            lambda c: features(self.params, c),
            x,
            self.batch_size,
            mesh=self.mesh,
            pad="zeros",
            out_dim=FEATURE_DIM,
        )
