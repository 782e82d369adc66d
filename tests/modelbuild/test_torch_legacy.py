"""The torch-free checkpoint reader: the real legacy .pth, hand-made files, refusals."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlcloud.modelbuild import efficientnet_lite0
from mlcloud.modelbuild.errors import ModelBuildError
from mlcloud.modelbuild.torch_legacy import LEGACY_MAGIC, load_state_dict


def test_reads_the_efficientnet_checkpoint():
    state = load_state_dict(efficientnet_lite0.checkpoint_path())
    assert len(state) == 296
    assert next(iter(state)) == "_conv_stem.weight"
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert state["_bn0.num_batches_tracked"].shape == ()
    # EfficientNet-Lite0: 4.7 M parameters
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) == 4_694_024
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype == np.float32)
    assert (state["_bn0.running_var"] >= 0).all()


class _Storage:
    """Stands in for a torch storage while we write a checkpoint the way torch.save did."""

    def __init__(self, key: str, type_name: str, data: np.ndarray) -> None:
        self.key, self.type_name, self.data = key, type_name, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        storage, offset, size, stride = self.args
        return (_fake_torch().__dict__["_utils"]._rebuild_tensor_v2, (storage, offset, size, stride, False, {}))


def _fake_torch():
    return sys.modules["torch"]


@pytest.fixture
def fake_torch(monkeypatch):
    """Importable ``torch._utils._rebuild_tensor_v2`` and storage classes, so pickle can name
    them exactly as a real checkpoint does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _write_legacy(path: Path, state: dict, storages: list[_Storage]) -> None:
    torch = sys.modules["torch"]

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", getattr(torch, obj.type_name), obj.key, "cpu", obj.data.size, None)
            return None

    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                         "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, buf, protocol=2)
    Pickler(buf, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.data.size))
        buf.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buf.getvalue())


def test_rebuilds_offsets_strides_and_dtypes(tmp_path, fake_torch):
    floats = _Storage("0", "FloatStorage", np.arange(24, dtype=np.float32))
    longs = _Storage("1", "LongStorage", np.array([7, 8, 9], dtype=np.int64))
    halves = _Storage("2", "HalfStorage", np.array([0.5, 1.5], dtype=np.float16))
    import collections

    state = collections.OrderedDict(
        contiguous=_Tensor(floats, 0, (2, 3, 4), (12, 4, 1)),
        transposed=_Tensor(floats, 0, (4, 6), (1, 4)),  # a .t() view shares the storage
        offset=_Tensor(floats, 20, (4,), (1,)),
        scalar=_Tensor(longs, 2, (), ()),
        half=_Tensor(halves, 0, (2,), (1,)),
    )
    path = tmp_path / "legacy.pth"
    _write_legacy(path, state, [floats, longs, halves])
    got = load_state_dict(path)
    full = np.arange(24, dtype=np.float32)
    assert list(got) == list(state)
    np.testing.assert_array_equal(got["contiguous"], full.reshape(2, 3, 4))
    np.testing.assert_array_equal(got["transposed"], full.reshape(6, 4).T)
    assert got["transposed"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got["offset"], full[20:24])
    assert got["scalar"] == 9 and got["scalar"].dtype == np.int64
    assert got["half"].dtype == np.float16


def test_reads_the_zip_layout_too(tmp_path, fake_torch):
    floats = _Storage("0", "FloatStorage", np.arange(6, dtype=np.float32))
    torch = sys.modules["torch"]

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", getattr(torch, obj.type_name), obj.key, "cpu", obj.data.size)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": _Tensor(floats, 0, (2, 3), (3, 1))})
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/data/0", floats.data.tobytes())
    np.testing.assert_array_equal(load_state_dict(path)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_refuses_globals_outside_the_allow_list(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.getcwd, ())

    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump({"x": Evil()}, buf, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(ModelBuildError, match="refusing to load"):
        load_state_dict(path)


def test_rejects_files_that_are_not_checkpoints(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelBuildError):
        load_state_dict(path)
    pickled = tmp_path / "other.pth"
    pickled.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(ModelBuildError, match="magic"):
        load_state_dict(pickled)
