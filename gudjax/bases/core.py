"""The basis contract: a frozen pytree of fitted statistics plus a registry of transforms.

Conventions (docs/maths.md §1). Data x has image shape (H, W, C), D = H·W·C.
  components   c = U(x − μ)            (orthonormal U, applied as a fast transform)
  inverse      x = Uᵀc + μ
  diffusing    z = c / s               (s = 1: white prior; s_i² = Var(c_i): variance-matched)
  ρ_i = log Var(z_0,i) = log Var(c_i) − 2 log s_i
The network sees the "whitened image" Uᵀz (image-shaped); since U is orthonormal an MSE
there equals the MSE in z.

A basis kind is a `BasisSpec` subclass registered with `@register_basis("name")`. Its
transform is a pure function of the basis' arrays, so bases are data: changing fitted
statistics never recompiles, and `Basis` can be passed through `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

Array = Any

#: Smallest component variance kept when fitting. One 8-bit quantisation step in [-1, 1]
#: is 2/256; uniform dequantisation noise has variance (2/256)²/12 ≈ 5.1e-6. Directions of
#: exactly zero variance in the training set (e.g. the always-black border of digits) are
#: floored here, so whitening and likelihoods stay finite.
MIN_VARIANCE = (2.0 / 256.0) ** 2 / 12.0


def dequantization_variance(levels: int = 256) -> float:
    """(2/L)²/12: the variance of uniform dequantisation noise of data with L levels in
    [-1, 1]; the variance floor for fitting a basis to such data (MIN_VARIANCE at L = 256)."""
    return (2.0 / float(levels)) ** 2 / 12.0

LABEL_NAMES = (
    "variance",
    "frequency",
    "log_frequency",
    "level",
    "orientation",
    "column",
    "row",
    "colpos",
    "index",
)

_REGISTRY: dict[str, type[BasisSpec]] = {}


def register_basis(name: str):
    """Class decorator: registers a `BasisSpec` subclass under `name` (duplicates are errors)."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(
                f"basis '{name}' is already registered by {_REGISTRY[name].__module__}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered_bases() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_spec(name: str) -> type[BasisSpec]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown basis '{name}'; allowed: {', '.join(registered_bases())}")
    return _REGISTRY[name]


class BasisSpec:
    """How one kind of basis transforms, labels and groups components.

    Subclasses implement the class methods below. `arrays` is the dict of basis-specific
    fitted arrays (e.g. the PCA eigenvector matrix); `options` the static options (e.g. Haar
    levels) as a tuple of (key, value) pairs.
    """

    name: ClassVar[str] = ""
    #: PCA needs the full D×D covariance while fitting; fixed transforms only need Var(c_i).
    needs_covariance: ClassVar[bool] = False
    default_options: ClassVar[dict] = {}

    @classmethod
    def check_shape(cls, shape: tuple[int, int, int], options: dict) -> None:
        """Raise a one-line ValueError if the image shape cannot be handled."""

    @classmethod
    def fixed_arrays(cls, shape, options) -> dict:
        """Arrays that do not depend on data (used to compute c while fitting)."""
        return {}

    @classmethod
    def arrays_from_covariance(cls, cov: np.ndarray, shape, options) -> tuple[dict, np.ndarray]:
        """PCA-like bases: (arrays, variances of the components) from the data covariance."""
        raise NotImplementedError

    @classmethod
    def forward(cls, arrays: dict, x: Array, shape, options) -> Array:
        """(..., H, W, C) → (..., D), orthonormal, no mean subtraction."""
        raise NotImplementedError

    @classmethod
    def inverse(cls, arrays: dict, c: Array, shape, options) -> Array:
        """(..., D) → (..., H, W, C), the transpose of `forward`."""
        raise NotImplementedError

    @classmethod
    def labels(cls, shape, options) -> dict[str, np.ndarray]:
        """Ordering labels of the components that do not depend on data, each (D,)."""
        return {}

    @classmethod
    def groups(cls, shape, options, variance: np.ndarray) -> np.ndarray:
        """Conditioning-token group id of every component, (D,) int, ids 0..G-1 all used."""
        raise NotImplementedError


def _freeze(options: Mapping) -> tuple:
    return tuple(sorted(options.items()))


@dataclasses.dataclass(frozen=True)
class Basis:
    """A fitted basis: orthonormal transform + mean + per-component statistics.

    Data fields (arrays, traced under jit):
      mean      (H, W, C)  per-pixel training mean μ
      variance  (D,)       Var(c_i) on the training data (floored at MIN_VARIANCE)
      scale     (D,)       s_i: ones (white prior) or sqrt(variance) (variance-matched)
      groups    (D,) int   conditioning-token group of each component, 0..num_groups-1
      labels    dict name → (D,) float ordering labels (see LABEL_NAMES)
      arrays    dict of basis-specific arrays (e.g. 'U' for PCA)
    Static fields: kind (registry name), shape (H, W, C), whiten, num_groups, options.
    """

    kind: str
    shape: tuple
    whiten: bool
    num_groups: int
    options: tuple
    mean: Array
    variance: Array
    scale: Array
    groups: Array
    labels: dict
    arrays: dict

    # ---------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return int(math.prod(self.shape))

    @property
    def spec(self) -> type[BasisSpec]:
        return get_spec(self.kind)

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def rho(self) -> Array:
        """ρ_i = log Var(z_0,i) = log Var(c_i) − 2 log s_i (0 when whitened)."""
        if self.whiten:
            return jnp.zeros_like(self.variance)
        # Stored as −label so that "unwhitened, a = 1, variance labels" cancels exactly.
        return -self.labels["variance"]

    @property
    def log_scale_sum(self) -> Array:
        """Σ_i log s_i, the Jacobian term of x ↦ z (|det U| = 1)."""
        return jnp.sum(jnp.log(self.scale))

    def label(self, name: str) -> Array:
        if name not in self.labels:
            raise ValueError(
                f"basis '{self.kind}' has no label set '{name}'; "
                f"allowed: {', '.join(sorted(self.labels))}"
            )
        return self.labels[name]

    # ---------------------------------------------------------------- transforms
    def _check_image(self, x) -> None:
        if tuple(x.shape[-3:]) != tuple(self.shape):
            raise ValueError(
                f"image shape {tuple(x.shape[-3:])} does not match the basis shape "
                f"{tuple(self.shape)}"
            )

    def _check_vector(self, c) -> None:
        if c.shape[-1] != self.dim:
            raise ValueError(f"component vector has length {c.shape[-1]}, basis has D={self.dim}")

    def transform(self, x: Array) -> Array:
        """The orthonormal map U alone: (..., H, W, C) → (..., D), no mean subtraction."""
        self._check_image(x)
        return self.spec.forward(self.arrays, x, self.shape, self.opts)

    def transform_inverse(self, c: Array) -> Array:
        """Inverse of `transform`: (..., D) → (..., H, W, C)."""
        self._check_vector(c)
        return self.spec.inverse(self.arrays, c, self.shape, self.opts)

    def to_components(self, x: Array) -> Array:
        """c = U(x − μ)."""
        return self.transform(x - self.mean)

    def from_components(self, c: Array) -> Array:
        """x = Uᵀc + μ."""
        return self.transform_inverse(c) + self.mean

    def encode(self, x: Array) -> Array:
        """z = U(x − μ) / s: image (..., H, W, C) → diffusing variables (..., D)."""
        return self.to_components(x) / self.scale

    def decode(self, z: Array) -> Array:
        """x = Uᵀ(s ⊙ z) + μ (no clipping)."""
        return self.from_components(z * self.scale)

    def to_image(self, z: Array) -> Array:
        """The network's view of z: the "whitened image" Uᵀz, shape (..., H, W, C)."""
        return self.transform_inverse(z)

    def from_image(self, img: Array) -> Array:
        """Inverse of `to_image`: U img, shape (..., D)."""
        return self.transform(img)

    def matrix(self) -> np.ndarray:
        """The dense D×D matrix U (rows = basis vectors), for tests and the oracle."""
        eye = jnp.eye(self.dim, dtype=jnp.float32).reshape((self.dim, *self.shape))
        return np.asarray(self.transform(eye)).T

    def with_prior(self, whiten: bool) -> Basis:
        """The same fitted basis with the other prior (white ↔ variance-matched)."""
        scale = jnp.sqrt(self.variance) if whiten else jnp.ones_like(self.variance)
        return dataclasses.replace(self, whiten=bool(whiten), scale=scale)

    # ---------------------------------------------------------------- persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat dict of numpy arrays (the static fields JSON-encoded in '__meta__')."""
        meta = dict(
            kind=self.kind,
            shape=list(self.shape),
            whiten=self.whiten,
            num_groups=self.num_groups,
            options=dict(self.options),
            format_version=1,
        )
        out = {"__meta__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        out["mean"] = np.asarray(self.mean)
        out["variance"] = np.asarray(self.variance)
        out["scale"] = np.asarray(self.scale)
        out["groups"] = np.asarray(self.groups)
        for k, v in self.labels.items():
            out[f"labels/{k}"] = np.asarray(v)
        for k, v in self.arrays.items():
            out[f"arrays/{k}"] = np.asarray(v)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Basis:
        if "__meta__" not in arrays:
            raise ValueError("not a gudjax basis file: '__meta__' entry missing")
        meta = json.loads(bytes(np.asarray(arrays["__meta__"], dtype=np.uint8)).decode())
        get_spec(meta["kind"])
        labels = {k[7:]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("labels/")}
        extra = {k[7:]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("arrays/")}
        return cls(
            kind=meta["kind"],
            shape=tuple(meta["shape"]),
            whiten=bool(meta["whiten"]),
            num_groups=int(meta["num_groups"]),
            options=_freeze(meta["options"]),
            mean=jnp.asarray(arrays["mean"]),
            variance=jnp.asarray(arrays["variance"]),
            scale=jnp.asarray(arrays["scale"]),
            groups=jnp.asarray(arrays["groups"]),
            labels=labels,
            arrays=extra,
        )


jax.tree_util.register_dataclass(
    Basis,
    data_fields=["mean", "variance", "scale", "groups", "labels", "arrays"],
    meta_fields=["kind", "shape", "whiten", "num_groups", "options"],
)


def save_basis(path: str | os.PathLike, basis: Basis) -> None:
    """Save as a plain .npz of arrays (atomic: write to a temp file, then rename)."""
    path = os.fspath(path)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **basis.to_arrays())
    os.replace(tmp, path)


def load_basis(path: str | os.PathLike) -> Basis:
    try:
        with np.load(os.fspath(path)) as f:
            return Basis.from_arrays({k: f[k] for k in f.files})
    # a truncated .npz raises zipfile.BadZipFile (neither OSError nor ValueError) or EOFError
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())  # one line
        raise ValueError(
            f"cannot read basis file {os.fspath(path)}: {reason}; delete it to refit"
        ) from e


# -------------------------------------------------------------------- fitting
def _normalise_options(spec: type[BasisSpec], options: Mapping) -> dict:
    unknown = set(options) - set(spec.default_options)
    if unknown:
        allowed = ", ".join(sorted(spec.default_options)) or "none"
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for basis '{spec.name}'; allowed: {allowed}"
        )
    return {**spec.default_options, **options}


def check_image_shape(name: str, shape, **options) -> None:
    """Raise a one-line ValueError if basis `name` cannot handle image `shape`."""
    spec = get_spec(name)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image shape must be (H, W, C) with positive sizes, got {shape}")
    spec.check_shape(shape, _normalise_options(spec, options))


def fit_basis(
    name: str,
    batches: Iterable[Array],
    *,
    whiten: bool = False,
    min_variance: float = MIN_VARIANCE,
    **options,
) -> Basis:
    """Fit basis `name` from a stream of image batches (B, H, W, C) in [-1, 1].

    One pass, float64 accumulators on the host: Σx, and either Σxxᵀ (bases that need the
    covariance, PCA) or Σc and Σc² of the fixed transform c = U x. So a data set never
    needs to sit in memory as one array; only one batch at a time.
    """
    spec = get_spec(name)
    n = 0
    sum_x = sum_c = sum_c2 = sum_xx = None
    shape = None
    arrays0: dict = {}
    opts: dict = {}
    forward = None
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float64)
        if batch.ndim != 4:
            raise ValueError(f"fit_basis expects batches of shape (B, H, W, C), got {batch.shape}")
        if shape is None:
            shape = tuple(int(s) for s in batch.shape[1:])
            opts = _normalise_options(spec, options)
            check_image_shape(name, shape, **opts)
            d = math.prod(shape)
            sum_x = np.zeros(shape)
            if spec.needs_covariance:
                sum_xx = np.zeros((d, d))
            else:
                arrays0 = spec.fixed_arrays(shape, opts)
                sum_c = np.zeros(d)
                sum_c2 = np.zeros(d)
                forward = jax.jit(lambda x, a=arrays0, s=shape, o=opts: spec.forward(a, x, s, o))
        elif tuple(batch.shape[1:]) != shape:
            raise ValueError(f"batch shape {batch.shape[1:]} differs from the first batch {shape}")
        n += batch.shape[0]
        sum_x += batch.sum(0)
        if spec.needs_covariance:
            flat = batch.reshape(batch.shape[0], -1)
            sum_xx += flat.T @ flat
        else:
            c = np.asarray(forward(batch.astype(np.float32)), dtype=np.float64)
            sum_c += c.sum(0)
            sum_c2 += (c * c).sum(0)
    if n < 2:
        raise ValueError("fit_basis needs at least 2 images")
    mean = sum_x / n
    if spec.needs_covariance:
        mflat = mean.reshape(-1)
        cov = sum_xx / n - np.outer(mflat, mflat)
        cov = 0.5 * (cov + cov.T)
        arrays, variance = spec.arrays_from_covariance(cov, shape, opts)
    else:
        arrays = arrays0
        mean_c = sum_c / n
        variance = sum_c2 / n - mean_c**2
    variance = np.maximum(np.asarray(variance, np.float64), min_variance)
    return make_basis(
        name, shape, mean=mean, variance=variance, arrays=arrays, whiten=whiten, **opts
    )


def make_basis(
    name: str,
    shape,
    *,
    mean=None,
    variance=None,
    arrays: dict | None = None,
    whiten: bool = False,
    **options,
) -> Basis:
    """Build a basis from given statistics (defaults: zero mean, unit variance).

    For bases with data-dependent arrays (PCA) `arrays` must be given.
    """
    spec = get_spec(name)
    shape = tuple(int(s) for s in shape)
    opts = _normalise_options(spec, options)
    check_image_shape(name, shape, **opts)
    d = math.prod(shape)
    mean = np.zeros(shape) if mean is None else np.asarray(mean, np.float64).reshape(shape)
    variance = np.ones(d) if variance is None else np.asarray(variance, np.float64).reshape(-1)
    if variance.shape != (d,):
        raise ValueError(f"variance has {variance.size} entries, basis '{name}' needs D={d}")
    if not np.all(np.isfinite(variance)) or np.any(variance <= 0):
        raise ValueError(
            f"component variances (scales) must be positive and finite for basis '{name}'"
        )
    if arrays is None:
        if spec.needs_covariance:
            raise ValueError(f"basis '{name}' is fitted from data: use fit_basis(...)")
        arrays = spec.fixed_arrays(shape, opts)
    labels = {k: np.asarray(v, np.float32) for k, v in spec.labels(shape, opts).items()}
    labels["variance"] = -np.log(variance.astype(np.float32))
    labels["index"] = np.arange(d, dtype=np.float32)
    for k, v in labels.items():
        if v.shape != (d,):
            raise ValueError(f"basis '{name}' label '{k}' has shape {v.shape}, expected ({d},)")
    groups = np.asarray(spec.groups(shape, opts, variance), np.int32)
    if groups.shape != (d,):
        raise ValueError(f"basis '{name}' groups have shape {groups.shape}, expected ({d},)")
    # renumber groups densely 0..G-1 (keeps order)
    _, groups = np.unique(groups, return_inverse=True)
    num_groups = int(groups.max()) + 1
    scale = np.sqrt(variance) if whiten else np.ones(d)
    return Basis(
        kind=name,
        shape=shape,
        whiten=bool(whiten),
        num_groups=num_groups,
        options=_freeze(opts),
        mean=jnp.asarray(mean, jnp.float32),
        variance=jnp.asarray(variance, jnp.float32),
        scale=jnp.asarray(scale, jnp.float32),
        groups=jnp.asarray(groups, jnp.int32),
        labels={k: jnp.asarray(v) for k, v in labels.items()},
        arrays={k: jnp.asarray(v) for k, v in arrays.items()},
    )


# -------------------------------------------------------------------- helpers for specs
def pixel_grid_labels(shape) -> dict[str, np.ndarray]:
    """Row/column labels for components stored in (H, W, C) image layout, flattened."""
    h, w, c = shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows = np.repeat(rows[..., None], c, axis=-1).reshape(-1)
    cols = np.repeat(cols[..., None], c, axis=-1).reshape(-1)
    return {"row": rows.astype(np.float32), "column": cols.astype(np.float32)}


def shell_groups(values: np.ndarray, num_groups: int) -> np.ndarray:
    """Group components into at most `num_groups` bands of `values` (e.g. |k| shells)."""
    values = np.asarray(values, np.float64)
    uniq = np.unique(values)
    if len(uniq) <= num_groups:
        return np.searchsorted(uniq, values)
    edges = np.quantile(values, np.linspace(0, 1, num_groups + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")
