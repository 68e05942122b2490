"""Bases (docs/maths.md §1): one parameterised row per registered basis, plus closed forms.

Every test over `registered_bases()` runs for a new basis as soon as it is registered:
orthonormality, exact round trips, whitening, labels/groups, streaming fit, persistence and
the pytree/jit contract. PCA, Fourier and Haar get extra tests that pin their conventions.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gudjax import bases
from gudjax.bases import MIN_VARIANCE, fit_basis, load_basis, make_basis, save_basis

BASES = bases.registered_bases()
SHAPES = [(8, 8, 1), (8, 8, 3), (16, 8, 2)]  # 16×8 is non-square; all divisible by 2^3


# ---------------------------------------------------------------------------- helpers
@functools.cache
def anisotropic_data(shape, n=None, seed=0) -> np.ndarray:
    """Correlated, anisotropic data (N > D): x = μ + Q diag(sd) g, sd spanning 0.5 … 0.01.

    Every direction has variance ≥ 1e-4 ≫ MIN_VARIANCE, so no component is floored, and
    the eigenvalues are well separated (PCA eigenvectors are well defined).
    """
    d = math.prod(shape)
    n = 4 * d if n is None else n
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    sd = np.geomspace(0.5, 0.01, d)
    g = rng.normal(size=(n, d)) * sd
    mu = rng.uniform(-0.3, 0.3, size=d)
    return (g @ q.T + mu).reshape(n, *shape).astype(np.float32)


@functools.cache
def fitted(name, shape) -> bases.Basis:
    """Unwhitened basis fitted on `anisotropic_data` (cached: fitting compiles)."""
    return fit_basis(name, [anisotropic_data(shape)], whiten=False)


@functools.cache
def basis_under_test(name, shape) -> bases.Basis:
    """Unwhitened basis with non-trivial mean and variances.

    Fitted where the transform depends on data (PCA) or where the statistics are checked
    (8×8×3); otherwise built by `make_basis` with random statistics, which exercises the
    same transforms without compiling a fit per shape.
    """
    if bases.get_spec(name).needs_covariance or shape == (8, 8, 3):
        return fitted(name, shape)
    rng = np.random.default_rng(7)
    d = math.prod(shape)
    return make_basis(name, shape, mean=rng.uniform(-0.3, 0.3, shape),
                      variance=np.geomspace(0.3, 1e-3, d)[rng.permutation(d)])


@functools.cache
def outputs(name, shape) -> dict:
    """Everything the per-basis tests look at, computed in ONE jit call per (basis, shape).

    Eager JAX compiles every primitive separately (seconds for dctn), and compile time grows
    with the number of transform instances in a graph, so inputs are stacked along the batch
    axis: each Basis method appears once (9 transforms in all).
    """
    white = basis_under_test(name, shape)
    vm = white.with_prior(True)
    d = white.dim
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(5, *shape)).astype(np.float32)
    z = rng.normal(size=(5, d)).astype(np.float32)
    eye = np.eye(d, dtype=np.float32).reshape(d, *shape)
    data = anisotropic_data(shape)

    @jax.jit
    def run(white, vm, x, z, eye, data):
        n = len(x)
        xd = jnp.concatenate([x, data])
        enc = white.encode(xd)
        dec = white.decode(jnp.concatenate([enc[:n], z]))
        comp = white.to_components(xd)
        fimg = white.from_image(x)
        img = white.to_image(jnp.concatenate([fimg, z]))
        venc = vm.encode(xd)
        return {
            "U": white.transform(eye).T,  # rows = basis vectors
            "c_data": comp[n:],
            "z_data": venc[n:],
            "white": {
                "encode": enc[:n],
                "decode_encode": dec[:n],
                "decode_z": dec[n:],
                "components": white.from_components(comp[:n]),
                "to_image": img[n:],
                "image_round": img[:n],  # to_image(from_image(x))
                "from_image": fimg,
            },
            # the prior only changes encode/decode (the scale s); the rest is shared
            "vm": {"encode": venc[:n], "decode_encode": vm.decode(venc[:n])},
        }

    res = jax.tree_util.tree_map(np.asarray, run(white, vm, x, z, eye, data))
    return dict(res, x=x, z=z, data=data)


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


def expected_num_groups(name, shape):
    """num_groups the SPEC/docstrings fix for the known bases (None: only sanity checks)."""
    h, w, c = shape
    d = h * w * c
    return {
        "pixel": w,  # one token per image column
        "haar": 1 + 3 * 3,  # LL + level × orientation, J = 3
        "pca": int(math.floor(math.log2(d))) + 1,  # octave bands of the index
    }.get(name)


# ---------------------------------------------------------------------------- every basis
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", BASES)
def test_orthonormal(name, shape):
    out = outputs(name, shape)
    u = out["U"].astype(np.float64)
    d = math.prod(shape)
    assert u.shape == (d, d)
    assert np.isrealobj(u)
    np.testing.assert_allclose(u @ u.T, np.eye(d), atol=2e-5)
    np.testing.assert_allclose(u.T @ u, np.eye(d), atol=2e-5)
    # the fast inverse is the transpose of the fast forward: decode(z) = Uᵀz + μ
    mean = np.asarray(basis_under_test(name, shape).mean, np.float64).reshape(-1)
    np.testing.assert_allclose(out["white"]["decode_z"].reshape(5, d), out["z"] @ u + mean,
                               atol=2e-5)
    # Basis.matrix() (used by the oracle, eager: slow to compile for dct/haar) is the same
    if shape == (8, 8, 1) and name in ("pixel", "pca"):
        np.testing.assert_allclose(basis_under_test(name, shape).matrix(), u, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", BASES)
def test_round_trips(name, shape):
    out = outputs(name, shape)
    x, z = out["x"], out["z"]
    for tag in ("white", "vm"):
        r = out[tag]
        assert r["encode"].shape == (5, math.prod(shape)) and r["encode"].dtype == np.float32
        np.testing.assert_allclose(r["decode_encode"], x, atol=1e-5)
    r = out["white"]
    u = out["U"].astype(np.float64)
    mean = np.asarray(basis_under_test(name, shape).mean, np.float64).reshape(-1)
    # encode = U(x − μ) with the U of test_orthonormal
    np.testing.assert_allclose(r["encode"], (x.reshape(5, -1) - mean) @ u.T, atol=2e-5)
    np.testing.assert_allclose(r["components"], x, atol=1e-5)
    assert r["to_image"].shape == (5, *shape)
    np.testing.assert_allclose(r["image_round"], x, atol=1e-5)
    # the network's view: to_image = Uᵀz, from_image = U img (no mean, no scale)
    np.testing.assert_allclose(r["to_image"].reshape(5, -1), z @ u, atol=2e-5)
    np.testing.assert_allclose(r["from_image"], x.reshape(5, -1) @ u.T, atol=2e-5)
    # Uᵀz is an isometry: the MSE in image layout equals the MSE in z (docs/maths.md §1)
    np.testing.assert_allclose(np.sum(r["to_image"] ** 2, (1, 2, 3)), np.sum(z**2, -1),
                               rtol=1e-5)
    # the variance-matched prior differs from the white one by the scale only
    vm = basis_under_test(name, shape).with_prior(True)
    assert not np.allclose(vm.scale, 1.0)
    np.testing.assert_allclose(out["vm"]["encode"] * np.asarray(vm.scale), r["encode"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BASES)
def test_whitening_and_priors(name):
    shape = (8, 8, 3)
    out = outputs(name, shape)
    white = fitted(name, shape)
    vm = white.with_prior(True)
    # variance-matched prior: every z_i of the training data has unit variance and zero mean
    z = out["z_data"].astype(np.float64)
    np.testing.assert_allclose(z.var(0), 1.0, rtol=2e-3)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=2e-3)
    np.testing.assert_allclose(vm.scale**2, vm.variance, rtol=1e-5)
    np.testing.assert_array_equal(vm.rho, 0.0)
    # white prior: s = 1 and rho = log Var(c_i); the stored variance is the data's
    c = out["c_data"].astype(np.float64)
    np.testing.assert_allclose(white.variance, c.var(0), rtol=2e-3)
    np.testing.assert_array_equal(white.scale, 1.0)
    np.testing.assert_allclose(white.rho, np.log(white.variance), atol=1e-5)
    np.testing.assert_allclose(white.log_scale_sum, 0.0)
    np.testing.assert_allclose(vm.log_scale_sum, 0.5 * np.sum(np.log(vm.variance)), rtol=1e-5)
    # the variance-matched prior N(0, I) in z has the data's variances in components
    np.testing.assert_allclose(np.var(out["data"].reshape(len(z), -1), 0).sum(),
                               np.sum(vm.variance), rtol=2e-3)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", BASES)
def test_labels_and_groups(name, shape):
    basis = basis_under_test(name, shape)
    d = basis.dim
    assert set(basis.labels) <= set(bases.LABEL_NAMES)
    assert {"variance", "index"} <= set(basis.labels)
    for key, lab in basis.labels.items():
        assert lab.shape == (d,), key
        assert np.all(np.isfinite(np.asarray(lab))), key
        assert basis.label(key) is lab
    np.testing.assert_allclose(basis.label("variance"), -np.log(basis.variance), rtol=1e-6)
    groups = np.asarray(basis.groups)
    assert groups.shape == (d,) and np.issubdtype(groups.dtype, np.integer)
    assert basis.num_groups == groups.max() + 1
    np.testing.assert_array_equal(np.unique(groups), np.arange(basis.num_groups))
    assert 1 < basis.num_groups <= d
    expected = expected_num_groups(name, shape)
    if expected is not None:
        assert basis.num_groups == expected


@pytest.mark.parametrize("name", BASES)
def test_streaming_fit_equals_one_batch(name):
    shape = (8, 8, 3)
    data = anisotropic_data(shape)
    one = fitted(name, shape)
    chunks = np.split(data, 4)[::-1]  # reversed order (equal sizes: one compile)
    streamed = fit_basis(name, iter(chunks))  # a generator: one batch in memory at a time
    for other in (streamed,):
        np.testing.assert_allclose(other.mean, one.mean, atol=1e-6)
        np.testing.assert_allclose(other.variance, one.variance, rtol=1e-4, atol=1e-9)
        np.testing.assert_array_equal(other.groups, one.groups)
        assert set(other.arrays) == set(one.arrays)
        for k in one.arrays:  # e.g. PCA's U: same eigenvectors, same signs
            np.testing.assert_allclose(other.arrays[k], one.arrays[k], atol=1e-4)


@pytest.mark.parametrize("name", BASES)
def test_save_load_round_trip(name, tmp_path):
    basis = basis_under_test(name, (16, 8, 2)).with_prior(True)
    path = tmp_path / "basis.npz"
    save_basis(path, basis)
    loaded = load_basis(path)
    for field in ("kind", "shape", "whiten", "num_groups", "options"):
        assert getattr(loaded, field) == getattr(basis, field), field
    flat_a, tree_a = jax.tree_util.tree_flatten(basis)
    flat_b, tree_b = jax.tree_util.tree_flatten(loaded)
    assert tree_a == tree_b
    for a, b in zip(flat_a, flat_b, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temp file


def test_load_corrupt_file_is_one_line_value_error(tmp_path):
    basis = fitted("pixel", (8, 8, 1))
    good = tmp_path / "good.npz"
    save_basis(good, basis)
    raw = good.read_bytes()
    cases = {
        "truncated.npz": raw[: len(raw) // 2],
        "garbage.npz": b"not a basis file\n" * 8,
        "empty.npz": b"",
    }
    for fname, content in cases.items():
        path = tmp_path / fname
        path.write_bytes(content)
        with pytest.raises(ValueError) as e:
            load_basis(path)
        assert fname in one_line(e)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))  # a valid npz that is not a basis
    with pytest.raises(ValueError) as e:
        load_basis(tmp_path / "other.npz")
    one_line(e)
    with pytest.raises(ValueError) as e:
        load_basis(tmp_path / "missing.npz")
    one_line(e)


@pytest.mark.parametrize("name", BASES)
def test_basis_is_a_pytree_and_does_not_retrace(name):
    shape = (8, 8, 1)
    b1 = basis_under_test(name, shape).with_prior(True)
    # other statistics, same shape (PCA: another orthonormal U, the rows reversed)
    rng = np.random.default_rng(5)
    arrays = {k: np.asarray(v)[::-1] for k, v in b1.arrays.items()}
    b2 = make_basis(name, shape, mean=rng.uniform(-0.5, 0.5, shape),
                    variance=rng.uniform(0.1, 2.0, b1.dim), arrays=arrays, whiten=True)
    assert not np.allclose(b1.variance, b2.variance)
    traces = []

    @jax.jit
    def encode(basis, x):
        traces.append(1)  # Python side effect: runs once per trace
        return basis.encode(x)

    x = jnp.asarray(anisotropic_data(shape)[:4])
    u = outputs(name, shape)["U"]
    if name == "pca":
        u_b2 = np.asarray(b2.arrays["U"])
    else:
        u_b2 = u
    for b, xx, uu in ((b1, x, u), (b2, x, u_b2), (b1, 0.5 * x, u)):
        ref = (np.asarray(xx - b.mean).reshape(4, -1) @ uu.T) / np.asarray(b.scale)
        np.testing.assert_allclose(encode(b, xx), ref, rtol=1e-4, atol=1e-4)
    assert len(traces) == 1, "a basis with other statistics but the same shape retraced"
    out = jax.jit(lambda b, x: b.decode(b.encode(x)))(b2, x[0])  # one unbatched image
    np.testing.assert_allclose(out, x[0], atol=1e-5)
    # leaves are arrays, static fields live in the treedef
    leaves = jax.tree_util.tree_leaves(b1)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    rebuilt = jax.tree_util.tree_map(lambda a: a, b1)
    assert rebuilt.kind == b1.kind and rebuilt.shape == b1.shape and rebuilt.whiten


# ---------------------------------------------------------------------------- errors
def test_basis_errors_are_one_line_and_name_allowed_values():
    with pytest.raises(ValueError) as e:
        bases.get_spec("wavelet")
    msg = one_line(e)
    assert "wavelet" in msg and all(n in msg for n in BASES)
    with pytest.raises(ValueError) as e:
        make_basis("nope", (8, 8, 1))
    assert all(n in one_line(e) for n in BASES)
    for bad in (np.zeros(64), -np.ones(64), np.full(64, np.nan)):
        with pytest.raises(ValueError) as e:
            make_basis("pixel", (8, 8, 1), variance=bad)
        assert "positive" in one_line(e)
    with pytest.raises(ValueError) as e:
        make_basis("pixel", (8, 8, 1), variance=np.ones(10))
    one_line(e)
    with pytest.raises(ValueError) as e:
        make_basis("haar", (12, 12, 1))  # 12 is not divisible by 2^3
    assert "8" in one_line(e) and "levels" in str(e.value)
    make_basis("haar", (12, 12, 1), levels=2)  # but by 2^2 it is
    with pytest.raises(ValueError) as e:
        make_basis("haar", (8, 8, 1), level=2)  # misspelled option
    assert "levels" in one_line(e)
    with pytest.raises(ValueError) as e:
        make_basis("pixel", (8, 8, 1), levels=2)
    one_line(e)
    with pytest.raises(ValueError) as e:
        make_basis("pca", (8, 8, 1))  # PCA must be fitted
    one_line(e)
    with pytest.raises(ValueError) as e:
        fit_basis("dct", [np.zeros((4, 8, 8))])  # missing channel axis
    one_line(e)
    with pytest.raises(ValueError) as e:
        fit_basis("dct", [np.zeros((4, 8, 8, 1)), np.zeros((4, 8, 4, 1))])
    one_line(e)
    with pytest.raises(ValueError) as e:
        fit_basis("dct", [np.zeros((1, 8, 8, 1))])
    one_line(e)
    basis = fitted("pixel", (8, 8, 1))
    with pytest.raises(ValueError) as e:
        basis.label("frequency")
    assert "column" in one_line(e)
    with pytest.raises(ValueError) as e:
        basis.encode(jnp.zeros((2, 8, 4, 1)))
    one_line(e)
    with pytest.raises(ValueError) as e:
        bases.register_basis("pixel")(type("Dup", (bases.BasisSpec,), {}))
    assert "already registered" in one_line(e)


def test_zero_variance_directions_are_floored():
    data = anisotropic_data((8, 8, 1)).copy()
    data[:, 0, :, :] = 0.25  # a constant top row: zero variance in pixel space
    encode = jax.jit(lambda b, x: b.encode(x))
    for name in ("pixel", "pca"):  # both fitting paths: Var(c_i) and the covariance
        basis = fit_basis(name, [data], whiten=True)
        assert basis.whiten
        np.testing.assert_allclose(basis.scale**2, basis.variance, rtol=1e-5)
        assert float(np.min(basis.variance)) >= MIN_VARIANCE * (1 - 1e-6), name
        assert np.all(np.isfinite(np.asarray(encode(basis, data)))), name


# ---------------------------------------------------------------------------- pixel
def test_pixel_is_identity_with_column_labels():
    shape = (4, 6, 2)
    basis = make_basis("pixel", shape)
    np.testing.assert_array_equal(basis.matrix(), np.eye(48))
    col = np.asarray(basis.label("column")).reshape(shape)
    row = np.asarray(basis.label("row")).reshape(shape)
    np.testing.assert_array_equal(col[2, :, 1], np.arange(6))
    np.testing.assert_array_equal(row[:, 3, 0], np.arange(4))
    np.testing.assert_allclose(np.asarray(basis.label("colpos")).reshape(shape)[0, :, 0],
                               np.arange(6) / 5)
    np.testing.assert_array_equal(np.asarray(basis.groups).reshape(shape)[1, :, 0], np.arange(6))


# ---------------------------------------------------------------------------- PCA
@pytest.mark.parametrize("shape", [(8, 8, 1), (8, 8, 3)], ids=lambda s: "x".join(map(str, s)))
def test_pca_descending_sign_fixed_eigenvectors(shape):
    data = anisotropic_data(shape)
    basis = fitted("pca", shape)
    u = np.asarray(basis.arrays["U"], np.float64)
    lam = np.asarray(basis.variance, np.float64)
    # DESCENDING: index 0 = largest (eigh is ascending; the official code forgot to flip)
    assert np.all(np.diff(lam) < 0)
    assert lam[0] == lam.max()
    # rows are eigenvectors of the data covariance, with the stored eigenvalues
    flat = data.reshape(len(data), -1).astype(np.float64)
    cov = np.cov(flat, rowvar=False, bias=True)
    np.testing.assert_allclose(u @ cov @ u.T, np.diag(lam), atol=1e-5 * lam[0])
    np.testing.assert_allclose(cov @ u.T, u.T * lam, atol=1e-5 * lam[0])
    # deterministic signs: the largest-|entry| of every eigenvector is positive
    pivot = np.argmax(np.abs(u), axis=1)
    assert np.all(u[np.arange(len(u)), pivot] > 0)
    # fitting twice, or on a permuted data set, gives the same U
    again = fit_basis("pca", [data])
    np.testing.assert_allclose(again.arrays["U"], basis.arrays["U"], atol=1e-6)
    perm = np.random.default_rng(0).permutation(len(data))
    permuted = fit_basis("pca", [data[perm][:100], data[perm][100:]])
    np.testing.assert_allclose(permuted.arrays["U"], basis.arrays["U"], atol=1e-4)
    # whitened PCA: the prior N(0, I) in z has exactly the data covariance in pixels
    vm = basis.with_prior(True)
    m = vm.decode(jnp.eye(vm.dim)) - vm.mean  # columns of Uᵀ S
    m = np.asarray(m, np.float64).reshape(vm.dim, -1)
    np.testing.assert_allclose(m.T @ m, cov, atol=1e-5 * lam[0])


def test_pca_groups_are_octave_bands():
    basis = fitted("pca", (8, 8, 1))
    g = np.asarray(basis.groups)
    np.testing.assert_array_equal(g[:8], [0, 1, 1, 2, 2, 2, 2, 3])
    assert np.all(np.diff(g) >= 0)


# ---------------------------------------------------------------------------- Fourier
def test_fourier_white_noise_stays_white():
    shape = (8, 8, 1)
    basis = make_basis("fourier", shape)
    eps = jax.random.normal(jax.random.key(0), (8000, *shape))
    z = np.asarray(jax.jit(lambda b, x: b.encode(x))(basis, eps), np.float64)
    cov = z.T @ z / len(z)
    np.testing.assert_allclose(cov, np.eye(64), atol=0.07)  # ≈ 6 standard errors


def test_fourier_matches_complex_fft_and_frequency_labels():
    shape = (8, 6, 2)
    basis = make_basis("fourier", shape)
    x = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    c = np.asarray(jax.jit(lambda b, x: b.transform(x))(basis, x)).reshape(shape)
    f = np.fft.fft2(x, axes=(0, 1), norm="ortho")
    # DC and Nyquist (self-conjugate) are Re F; a conjugate pair keeps |F_k|² + |F_−k|²
    np.testing.assert_allclose(c[0, 0], f[0, 0].real, atol=1e-5)
    np.testing.assert_allclose(c[0, 0], x.sum((0, 1)) / np.sqrt(48), atol=1e-5)
    np.testing.assert_allclose(c[4, 3], f[4, 3].real, atol=1e-5)
    pair = c[1, 2] ** 2 + c[7, 4] ** 2
    np.testing.assert_allclose(pair, np.abs(f[1, 2]) ** 2 + np.abs(f[7, 4]) ** 2, rtol=1e-4)
    np.testing.assert_allclose(np.sum(c**2), np.sum(np.abs(f) ** 2), rtol=1e-5)
    freq = np.asarray(basis.label("frequency")).reshape(shape)
    np.testing.assert_allclose(freq[0, 0], 0.0)
    np.testing.assert_allclose(freq[0, 1], 1.0)
    np.testing.assert_allclose(freq[0, 5], 1.0)  # kx = −1
    np.testing.assert_allclose(freq[7, 0], 1.0)  # ky = −1
    np.testing.assert_allclose(freq[1, 1], np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(freq[4, 3], 5.0)  # Nyquist (4, 3): |k| = 5
    np.testing.assert_allclose(freq[2, 4], np.sqrt(4 + 4), rtol=1e-6)  # (2, −2)
    np.testing.assert_array_equal(freq[..., 0], freq[..., 1])  # same for every channel
    g = np.asarray(basis.groups).reshape(shape)
    assert g[0, 0, 0] == 0 and g[0, 1, 0] == g[7, 0, 1]  # shells of |k|


# ---------------------------------------------------------------------------- DCT
def test_dct_matches_scipy_and_frequency_labels():
    scipy_fft = pytest.importorskip("scipy.fft")
    shape = (8, 4, 2)
    basis = make_basis("dct", shape)
    x = np.random.default_rng(5).normal(size=shape)
    ref = scipy_fft.dctn(x, type=2, axes=(0, 1), norm="ortho")
    c = jax.jit(lambda b, x: b.transform(x))(basis, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(c, ref.reshape(-1), atol=1e-5)
    freq = np.asarray(basis.label("frequency")).reshape(shape)
    assert freq[0, 0, 0] == 0 and freq[3, 0, 1] == 3 and np.isclose(freq[3, 2, 0], np.sqrt(13))


# ---------------------------------------------------------------------------- Haar
def test_haar_one_level_2x2_example():
    basis = make_basis("haar", (2, 2, 1), levels=1)
    x = jnp.asarray([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1)  # (a b / c d)
    # LL = (a+b+c+d)/2, O1 = (a+b−c−d)/2, O2 = (a−b+c−d)/2, O3 = (a−b−c+d)/2; Mallat layout
    c = jax.jit(lambda b, x: b.transform(x))(basis, x)
    np.testing.assert_allclose(c, [5.0, -2.0, -1.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(basis.label("level"), [0, 1, 1, 1])
    np.testing.assert_array_equal(basis.label("orientation"), [0, 1, 2, 3])
    np.testing.assert_allclose(jax.jit(lambda b, x: b.decode(b.encode(x)))(basis, x), x,
                               atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 8, 2), (8, 8, 1)], ids=lambda s: "x".join(map(str, s)))
def test_haar_level_orientation_colpos_labels(shape):
    levels = 3
    h, w, ch = shape
    basis = make_basis("haar", shape, levels=levels)
    level = np.asarray(basis.label("level")).reshape(shape)
    orient = np.asarray(basis.label("orientation")).reshape(shape)
    colpos = np.asarray(basis.label("colpos")).reshape(shape)
    col = np.asarray(basis.label("column")).reshape(shape)
    groups = np.asarray(basis.groups).reshape(shape)
    assert level[0, 0, 0] == 0 and orient[0, 0, 0] == 0  # coarsest LL in the corner
    assert level[-1, -1, 0] == levels  # finest details bottom-right
    assert level[h // 2, 0, 0] == levels and level[h // 4, 0, 0] == levels - 1
    assert np.all((colpos >= 0) & (colpos <= 1))
    for lev in range(levels + 1):
        n_orient = 1 if lev == 0 else 3
        size = (h * w) // 4 ** (levels - max(lev, 1) + 1)  # sub-band size of this level
        assert np.sum(level[..., 0] == lev) == n_orient * size
        for o in range(4) if lev else [0]:
            band = (level[..., 0] == lev) & (orient[..., 0] == o)
            if not band.any():
                continue
            assert band.sum() == size
            bw = int(col[..., 0][band].max()) + 1
            if bw > 1:  # colpos spans [0, 1] inside every sub-band of width > 1
                assert colpos[..., 0][band].min() == 0 and colpos[..., 0][band].max() == 1
            np.testing.assert_allclose(colpos[..., 0][band],
                                       col[..., 0][band] / max(bw - 1, 1), rtol=1e-6)
            assert len(np.unique(groups[..., 0][band])) == 1  # one token per sub-band
    assert basis.num_groups == 1 + 3 * levels
    # a coarse basis vector is smooth: the LL vector is constant over its 2^J × 2^J block
    eye = jnp.eye(basis.dim).reshape(basis.dim, *shape)
    u = np.asarray(jax.jit(lambda b, x: b.transform(x))(basis, eye)).T
    ll = u[0].reshape(shape)[..., 0]
    f = 2**levels
    np.testing.assert_allclose(ll[:f, :f], 1.0 / f, atol=1e-6)
    np.testing.assert_allclose(ll[f:, :], 0.0, atol=1e-6)
