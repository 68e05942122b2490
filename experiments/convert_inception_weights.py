"""Convert pytorch-fid's Inception weights (.pth) to the .npz that gudjax's FID reads. No torch.

    python experiments/convert_inception_weights.py pt_inception-2015-12-05-6726825d.pth \
        fid_inception.npz
    # then: --config.eval.inception_weights=fid_inception.npz

The .pth is read with pickle + numpy alone. Both of torch.save's formats are understood:
  - zip (torch ≥ 1.6): `<name>/data.pkl` is the pickled state dict whose tensors refer to
    storages by persistent id ('storage', storage_type, key, location, numel); storage `key`
    is the raw little-endian bytes of `<name>/data/<key>`;
  - legacy (the format pytorch-fid's 2019 weights file may be in): pickles of magic number,
    protocol version and system info, then the state dict (persistent ids ('storage',
    storage_type, key, location, numel, view_metadata)), then the list of storage keys, then
    each storage as an int64 element count followed by its raw bytes.
Tensors are rebuilt from torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) as
numpy views (then copied). Only the few globals a state dict needs are resolved (an allowlist:
OrderedDict, the tensor/parameter rebuild functions, storage types); anything else is refused,
so no code from the file runs.

The output holds every array of the pool-3 network under its state-dict name, in PyTorch
layout (gudjax transposes conv weights when loading), float32; `fc.*` and BatchNorm
`num_batches_tracked` are dropped and a 'module.' prefix (DataParallel) is stripped. The keys
and shapes are checked against `gudjax.inception.state_dict_spec()` before writing. The sha256
of both files is printed: record it next to any FID you publish.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import struct
import sys
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}


class PthError(ValueError):
    """A .pth file this reader cannot use (one-line message)."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *args):
    """torch._utils._rebuild_tensor_v2 → numpy array (a copy of the strided view)."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(storage[storage_offset])
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:],
        shape=size,
        strides=tuple(s * storage.itemsize for s in stride),
        writeable=False,
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_storage, rebuild_tensor=_rebuild_tensor_v2):
        super().__init__(file, encoding="latin1")
        self._load_storage = load_storage
        self._allowed = {**_ALLOWED, ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor}

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module in ("torch", "torch.storage") and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise PthError(f"unsupported object {module}.{name} in the .pth (not a plain state dict)")

    def persistent_load(self, pid):
        pid = tuple(pid)
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise PthError(f"unsupported persistent id {kind!r} in the .pth")
        return self._load_storage(pid[1:])


def _read_zip(path: str) -> dict:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pkl:
            raise PthError(f"{path} is a zip without data.pkl: not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        cache: dict = {}

        def load_storage(info):
            storage_type, key, _location, numel = info[:4]
            key = str(key)
            if key not in cache:
                raw = z.read(f"{prefix}data/{key}")
                cache[key] = np.frombuffer(raw, storage_type.dtype.newbyteorder("<"))
                if cache[key].size < int(numel):
                    raise PthError(f"storage {key} in {path} is truncated")
            return cache[key]

        return _Unpickler(io.BytesIO(z.read(pkl[0])), load_storage).load()


class _PendingTensor:
    def __init__(self, key, offset, size, stride):
        self.key, self.offset, self.size, self.stride = key, offset, size, stride


def _read_legacy(path: str) -> dict:
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception:  # noqa: BLE001 - any garbage → one message
            magic = None
        if magic != LEGACY_MAGIC:
            raise PthError(f"{path} is neither a zip nor a legacy torch.save file")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        storages: dict = {}

        def load_storage(info):
            storage_type, key, _location, numel = info[:4]
            if len(info) > 4 and info[4] is not None:
                raise PthError("storage views in legacy .pth files are not supported")
            storages.setdefault(str(key), [storage_type, int(numel), None])
            return str(key)  # the raw data follows the pickle: tensors are rebuilt after it

        def rebuild(storage_key, offset, size, stride, *args):
            return _PendingTensor(storage_key, offset, size, stride)

        un = _Unpickler(f, load_storage, rebuild)
        result = un.load()
        keys = pickle.load(f)
        for key in keys:
            key = str(key)
            storage_type, numel, _ = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            nbytes = count * storage_type.dtype.itemsize
            raw = f.read(nbytes)
            if count != numel or len(raw) != nbytes:
                raise PthError(f"storage {key} in {path} is truncated")
            storages[key][2] = np.frombuffer(raw, storage_type.dtype.newbyteorder("<"))

    def resolve(v):
        if isinstance(v, _PendingTensor):
            return _rebuild_tensor_v2(storages[v.key][2], v.offset, v.size, v.stride)
        return v

    return collections.OrderedDict((k, resolve(v)) for k, v in result.items())


def read_pth(path: str) -> dict[str, np.ndarray]:
    """The state dict of a torch.save'd .pth file as {name: numpy array}, without torch."""
    if not os.path.isfile(path):
        raise PthError(f"{path} does not exist")
    try:
        sd = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except PthError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt pickles, bad zips
        raise PthError(
            f"cannot read {path} as a torch.save file ({type(e).__name__}: {e})"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise PthError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, np.ndarray):
            raise PthError(f"{path}: entry {k!r} is not a tensor")
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def convert(pth_path: str, npz_path: str) -> dict:
    """Read the .pth, keep the pool-3 arrays, check them against gudjax's spec, write the .npz.
    Returns {'arrays', 'dropped', 'pth_sha256', 'npz_sha256'}."""
    from gudjax import inception

    sd = read_pth(pth_path)
    spec = inception.state_dict_spec()
    dropped = sorted(k for k in sd if k not in spec)
    unexpected = [k for k in dropped if not inception.is_ignored(k)]
    missing = [k for k in spec if k not in sd]
    if missing or unexpected:
        bad = f"lacks '{missing[0]}'" if missing else f"has the unexpected '{unexpected[0]}'"
        raise PthError(
            f"{pth_path} {bad} ({len(missing)} missing, {len(unexpected)} unexpected): not "
            f"pytorch-fid's {inception.PTH_NAME}"
        )
    arrays = {}
    for k, (_, shape) in spec.items():
        a = np.asarray(sd[k], np.float32)
        if a.shape != shape:
            raise PthError(f"{pth_path}: '{k}' has shape {a.shape}, expected {shape}")
        arrays[k] = a
    tmp = npz_path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, npz_path)
    inception.load_weights(npz_path, field="output")  # the loader accepts what we wrote
    return {
        "arrays": len(arrays),
        "dropped": dropped,
        "pth_sha256": inception.file_sha256(pth_path),
        "npz_sha256": inception.file_sha256(npz_path),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pth", help="pytorch-fid weights, e.g. pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("npz", help="output .npz for config.eval.inception_weights")
    args = p.parse_args(argv)
    try:
        info = convert(args.pth, args.npz)
    except PthError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"wrote {args.npz}: {info['arrays']} arrays (dropped: {', '.join(info['dropped']) or '-'})"
    )
    print(f"sha256 {os.path.basename(args.pth)}: {info['pth_sha256']}")
    print(f"sha256 {os.path.basename(args.npz)}: {info['npz_sha256']}")
    return info


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
