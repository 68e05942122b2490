"""Standard FID features (gudjax.inception) and the torch-free .pth converter.

The real pytorch-fid weights cannot be had here: the network is checked with random weights in
the exact key set and shapes, its pooling/resizing against the torch formulas, and the converter
on .pth files written in torch.save's two formats by hand (zipfile/pickle, no torch).
"""

import collections
import contextlib
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import convert_inception_weights as conv
from gudjax import inception

# A few shapes known from pytorch-fid / torchvision's InceptionV3 (PyTorch layouts).
KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_4.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch1x1.bn.weight": (320,),
}


def test_state_dict_spec_is_pytorch_fid_key_set():
    spec = inception.state_dict_spec()
    # 94 BasicConv2d (torchvision's trunk without AuxLogits), 5 arrays each; no fc
    assert len(spec) == 94 * 5
    for name, shape in KNOWN_SHAPES.items():
        assert spec[name][1] == shape, name
    assert not any(k.startswith(("fc.", "AuxLogits")) for k in spec)
    for k in spec:
        assert k.rsplit(".", 1)[1] in ("weight", "bias", "running_mean", "running_var")
    n = sum(int(np.prod(s)) for _, s in spec.values())
    assert 21_700_000 < n < 21_900_000  # 21.8M: torchvision's 27.2M less fc and AuxLogits


# ------------------------------------------------------------------ pooling and resizing
def _naive_pool(x, op, k, stride, pad, exclude_pad):
    b, h, w, c = x.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.zeros((b, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * stride - pad, j * stride - pad
            win = x[:, max(r0, 0) : r0 + k, max(c0, 0) : c0 + k]
            if op == "max":
                out[:, i, j] = win.max(axis=(1, 2))
            else:
                denom = win.shape[1] * win.shape[2] if exclude_pad else k * k
                out[:, i, j] = win.sum(axis=(1, 2)) / denom
    return out


def test_pools_match_torch_semantics():
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(
        inception.avg_pool_exclude_pad(jnp.asarray(x)),
        _naive_pool(x, "avg", 3, 1, 1, True),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        inception.max_pool(jnp.asarray(x)), _naive_pool(x, "max", 3, 2, 0, 0)
    )
    np.testing.assert_allclose(
        inception.max_pool(jnp.asarray(x), 3, 1, 1), _naive_pool(x, "max", 3, 1, 1, 0)
    )


def _torch_bilinear_1d(v, n_out):
    """torch F.interpolate(mode='bilinear', align_corners=False) along one axis, by formula."""
    n_in = len(v)
    out = []
    for d in range(n_out):
        src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        out.append((1 - lam) * v[i0] + lam * v[i1])
    return np.array(out)


@pytest.mark.parametrize("n_in, n_out", [(8, 299), (32, 299), (5, 3), (400, 299)])
def test_resize_matrix_is_torch_bilinear(n_in, n_out):
    v = np.random.default_rng(n_in).normal(size=n_in)
    np.testing.assert_allclose(
        inception.resize_matrix(n_in, n_out) @ v, _torch_bilinear_1d(v, n_out), atol=1e-5
    )
    if n_out > n_in:  # upsampling: the same as jax.image.resize (half-pixel centres)
        ref = jax.image.resize(jnp.asarray(v, jnp.float32), (n_out,), "bilinear")
        np.testing.assert_allclose(inception.resize_matrix(n_in, n_out) @ v, ref, atol=1e-5)


def test_preprocess_grey_is_repeated_rgb_and_pytorch_fid_range():
    g = np.random.default_rng(0)
    k = g.integers(0, 256, size=(2, 8, 8, 1))
    x = ((k + 0.5) * 2 / 256 - 1).astype(np.float32)  # gudjax centre dequantisation
    grey = np.asarray(inception.preprocess(jnp.asarray(x)))
    rgb = np.asarray(inception.preprocess(jnp.asarray(np.repeat(x, 3, axis=-1))))
    assert grey.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(grey, rgb)
    # corners of an upsampled image are the corner pixels: 2·k/255 − 1 (pytorch-fid's input)
    np.testing.assert_allclose(grey[:, 0, 0, 0], 2 * k[:, 0, 0, 0] / 255 - 1, atol=1e-6)
    assert grey.min() >= -1 and grey.max() <= 1


# ------------------------------------------------------------------ weights and features
@pytest.fixture(scope="module")
def random_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random_fid_inception.npz"
    np.savez(path, **inception.random_state_dict(0))
    return str(path)


def test_features_of_random_weights(random_npz):
    ex = inception.InceptionFeatures(random_npz, batch_size=8)
    g = np.random.default_rng(1)
    x = g.uniform(-1, 1, size=(3, 8, 8, 1)).astype(np.float32)
    f = ex(x)
    assert f.shape == (3, 2048) and f.dtype == np.float64 and np.all(np.isfinite(f))
    assert np.all(f >= 0) and f.std() > 0  # averages of ReLUs, not constant
    # padding the batch does not change a row; a different image gives different features
    np.testing.assert_allclose(ex(x[:1])[0], f[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(f[0], f[1])
    assert len(ex.sha256) == 64 and ex.info["weights_sha256"] == ex.sha256
    assert ex.name == "FID" and ex.sha256[:12] in ex.describe()
    # the loaded conv weights are the file's, transposed OIHW → HWIO
    sd = np.load(random_npz)
    np.testing.assert_array_equal(
        np.asarray(ex.params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]),
        np.transpose(sd["Mixed_6b.branch7x7_2.conv.weight"], (2, 3, 1, 0)),
    )


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_weight_files_are_one_line_errors(random_npz, tmp_path):
    sd = dict(np.load(random_npz))
    missing = dict(sd)
    del missing["Mixed_6c.branch7x7dbl_3.bn.running_mean"]
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match=r"lacks 'Mixed_6c.branch7x7dbl_3.bn.running_mean'") as e:
        inception.load_weights(str(tmp_path / "missing.npz"))
    assert "convert_inception_weights.py" in _one_line(e)

    wrong = dict(sd)
    wrong["Mixed_7c.branch_pool.conv.weight"] = np.zeros((192, 2048, 3, 3), np.float32)
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(ValueError, match=r"'Mixed_7c.branch_pool.conv.weight' has shape") as e:
        inception.load_weights(str(tmp_path / "wrong.npz"))
    assert "expected (192, 2048, 1, 1)" in _one_line(e)

    np.savez(tmp_path / "extra.npz", **sd, **{"AuxLogits.fc.weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"unexpected array 'AuxLogits.fc.weight'") as e:
        inception.load_weights(str(tmp_path / "extra.npz"))
    _one_line(e)

    (tmp_path / "text.npz").write_text("not a zip")
    for bad, match in (
        (tmp_path / "text.npz", "is not an .npz file"),
        (tmp_path / "absent.npz", "does not exist"),
    ):
        with pytest.raises(ValueError, match=match) as e:
            inception.load_weights(str(bad))
        assert "config.eval.inception_weights" in _one_line(e)

    _write_pth(tmp_path / "direct.pth", {"a": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match=r"is a PyTorch \.pth.*convert") as e:
        inception.load_weights(str(tmp_path / "direct.pth"))
    _one_line(e)


# ------------------------------------------------------------------ torch.save by hand
class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


@contextlib.contextmanager
def _fake_torch():
    """Modules named torch / torch._utils so that pickle writes the GLOBALs torch.save writes
    (torch.FloatStorage, torch._utils._rebuild_tensor_v2); removed afterwards."""
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    storages = {}
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch_mod, name, cls)
        storages[np.dtype(np.float32 if name == "FloatStorage" else np.int64)] = cls
    torch_mod._utils = utils_mod
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
    try:
        yield _rebuild_tensor_v2, storages
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _as_tensors(state_dict):
    """numpy arrays → _Tensor over _Storage (one storage per array, C-contiguous)."""
    out = collections.OrderedDict()
    for i, (k, v) in enumerate(state_dict.items()):
        if isinstance(v, _Tensor):
            out[k] = v
            continue
        v = np.ascontiguousarray(v)
        stride = tuple(s // v.itemsize for s in v.strides)
        out[k] = _Tensor(_Storage(str(i), v.reshape(-1)), 0, v.shape, stride)
    return out


def _write_pth(path, state_dict, *, legacy=False):
    """A torch.save file (zip format, or the legacy format with legacy=True), no torch."""
    tensors = _as_tensors(state_dict)
    with _fake_torch() as (rebuild, storage_types):

        class P(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, _Storage):
                    stype = storage_types[obj.array.dtype]
                    pid = ("storage", stype, obj.key, "cpu", obj.array.size)
                    return pid + (None,) if legacy else pid
                return None

            def reducer_override(self, obj):
                if isinstance(obj, _Tensor):
                    args = (obj.storage, obj.offset, obj.shape, obj.stride, False)
                    return rebuild, (*args, collections.OrderedDict())
                return NotImplemented

        buf = io.BytesIO()
        P(buf, protocol=2).dump(tensors)
    storages = {}
    for t in tensors.values():
        storages.setdefault(t.storage.key, t.storage.array)
    if legacy:
        with open(path, "wb") as f:
            pickle.dump(conv.LEGACY_MAGIC, f, protocol=2)
            pickle.dump(1001, f, protocol=2)
            pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
            f.write(buf.getvalue())
            pickle.dump(list(storages), f, protocol=2)
            for a in storages.values():
                f.write(struct.pack("<q", a.size))
                f.write(a.astype(a.dtype.newbyteorder("<")).tobytes())
        return
    stem = os.path.splitext(os.path.basename(path))[0]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{stem}/data.pkl", buf.getvalue())
        z.writestr(f"{stem}/byteorder", "little")
        for key, a in storages.items():
            z.writestr(f"{stem}/data/{key}", a.astype(a.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{stem}/version", "3\n")


@pytest.mark.parametrize("legacy", [False, True])
def test_read_pth_strided_and_shared_storages(tmp_path, legacy):
    base = np.arange(24, dtype=np.float32)
    shared = _Storage("s", base)
    sd = {
        "plain": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5,
        "transposed": _Tensor(shared, 0, (4, 6), (1, 4)),  # column-major view
        "offset": _Tensor(shared, 10, (2, 3), (3, 1)),
        "steps": np.array(7, np.int64).reshape(()),
    }
    path = tmp_path / ("legacy.pth" if legacy else "zip.pth")
    _write_pth(path, sd, legacy=legacy)
    assert zipfile.is_zipfile(path) != legacy
    out = conv.read_pth(str(path))
    assert list(out) == list(sd)
    np.testing.assert_array_equal(out["plain"], sd["plain"])
    np.testing.assert_array_equal(out["transposed"], base.reshape(6, 4).T)
    np.testing.assert_array_equal(out["offset"], base[10:16].reshape(2, 3))
    assert out["steps"] == 7 and out["steps"].dtype == np.int64


@pytest.mark.parametrize("legacy", [False, True])
def test_converter_round_trip(tmp_path, legacy, capsys):
    sd = inception.random_state_dict(3)
    full = collections.OrderedDict(sd)
    full["fc.weight"] = np.zeros((1008, 2048), np.float32)  # in pytorch-fid's file; dropped
    full["fc.bias"] = np.zeros(1008, np.float32)
    full["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0, np.int64)
    pth = tmp_path / inception.PTH_NAME
    _write_pth(pth, full, legacy=legacy)
    npz = tmp_path / "fid_inception.npz"
    info = conv.main([str(pth), str(npz)])
    assert info["arrays"] == 470
    assert info["dropped"] == ["Conv2d_1a_3x3.bn.num_batches_tracked", "fc.bias", "fc.weight"]
    assert info["npz_sha256"] == inception.file_sha256(str(npz))
    assert "sha256" in capsys.readouterr().out
    with np.load(npz) as f:
        assert sorted(f.files) == sorted(sd)
        for k in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight"):
            np.testing.assert_array_equal(f[k], sd[k])
    params = inception.load_weights(str(npz))
    np.testing.assert_array_equal(
        params["Conv2d_1a_3x3"]["conv"]["kernel"],
        np.transpose(sd["Conv2d_1a_3x3.conv.weight"], (2, 3, 1, 0)),
    )
    np.testing.assert_array_equal(
        params["Mixed_5b"]["branch1x1"]["bn"]["var"], sd["Mixed_5b.branch1x1.bn.running_var"]
    )


def test_converter_bad_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "garbage.pth").write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(conv.PthError, match="neither a zip nor a legacy torch.save") as e:
        conv.read_pth(str(tmp_path / "garbage.pth"))
    _one_line(e)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(conv.PthError, match="without data.pkl") as e:
        conv.read_pth(str(tmp_path / "other.zip"))
    _one_line(e)
    _write_pth(
        tmp_path / "small.pth", {"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.float32)}
    )
    with pytest.raises(SystemExit) as e:
        conv.main([str(tmp_path / "small.pth"), str(tmp_path / "out.npz")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "lacks '" in err and "not pytorch-fid's" in err
    assert not (tmp_path / "out.npz").exists()
    # a pickle that names anything but a tensor / storage / OrderedDict is refused
    with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(os.system, protocol=2))
    with pytest.raises(conv.PthError, match="unsupported object") as e:
        conv.read_pth(str(tmp_path / "evil.pth"))
    _one_line(e)
