"""Read a legacy (pre-zip) PyTorch state-dict file with numpy alone, safely.

Why by hand: the packaged EfficientNet-Lite0 weights are a torch pickle, and we
do not want torch (a multi-GB dependency) just to read 18 MB of float tensors.
`pickle.load` would execute whatever the file names, so this reader uses a
restricted unpickler: only the handful of globals a tensor state dict needs are
resolved, and any other global is refused before it can run.

Legacy format (torch.save with `_use_new_zipfile_serialization=False`):
  pickle(magic number), pickle(protocol version), pickle(sys info),
  pickle(the object; storages appear as persistent ids),
  pickle(list of storage keys in the order their bytes follow),
  then per storage: int64 element count, then count * element_size raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
SUPPORTED_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype of its elements (little endian).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeWeightsFileError(ValueError):
    """The weights file asks to run code that a tensor state dict never needs."""


class WeightsFormatError(ValueError):
    """The file is not a legacy torch state dict this reader understands."""


@dataclass
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        base = self.storage.data
        if base is None:
            raise WeightsFormatError(
                f"Storage {self.storage.key!r} has no data in the file (truncated?)."
            )
        # Bounds check before as_strided, which would otherwise read memory outside
        # the storage for a malicious or corrupt offset/shape/stride.
        if self.offset < 0 or any(n < 0 for n in self.shape) or any(s < 0 for s in self.stride):
            raise WeightsFormatError(f"Tensor with negative offset, size or stride in storage {self.storage.key!r}.")
        if 0 not in self.shape:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
            if last >= base.size:
                raise WeightsFormatError(
                    f"Tensor reaches element {last} of storage {self.storage.key!r}, which has {base.size} elements."
                )
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


class _StorageType:
    """Stands in for `torch.FloatStorage` etc.: only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    # `_rebuild_tensor_v2` also passes requires_grad and backward hooks, which
    # mean nothing for inference weights.
    if not isinstance(storage, _StorageRef):
        raise WeightsFormatError("Tensor does not refer to a storage of this file.")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _StorageRef]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsFileError(
            f"Refusing to load weights: the file asks for the Python global "
            f"'{module}.{name}', which a tensor state dict never needs (a weights "
            f"file must not execute code). Use a plain state dict saved with torch.save."
        )

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id:
            raise WeightsFormatError(f"Unexpected persistent id: {saved_id!r}")
        kind = saved_id[0]
        if kind != "storage":
            raise UnsafeWeightsFileError(
                f"Refusing to load weights: persistent object of kind {kind!r} "
                "(only tensor storages are allowed)."
            )
        storage_type, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_type, _StorageType):
            raise WeightsFormatError(f"Unknown storage type for key {key!r}.")
        if key not in self._storages:
            self._storages[key] = _StorageRef(str(key), storage_type.dtype, int(numel))
        return self._storages[key]


def _safe_load_plain(file) -> object:
    """A pickle that must contain no globals at all (header records)."""
    return _RestrictedUnpickler(file, {}).load()


def load_legacy_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """Return {parameter name: numpy array} from a legacy torch state-dict file."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"PK":
        raise WeightsFormatError(
            f"{path} is a zip-format torch file; this reader handles only the "
            "legacy format."
        )
    file = io.BytesIO(raw)
    try:
        magic = _safe_load_plain(file)
        if magic != LEGACY_MAGIC_NUMBER:
            raise WeightsFormatError(f"{path} is not a legacy torch file (bad magic number).")
        protocol = _safe_load_plain(file)
        if protocol != SUPPORTED_PROTOCOL_VERSION:
            raise WeightsFormatError(
                f"{path}: unsupported torch protocol version. Received: {protocol!r}"
            )
        _safe_load_plain(file)  # sys info: endianness, type sizes
        storages: dict[str, _StorageRef] = {}
        state = _RestrictedUnpickler(file, storages).load()
        storage_keys = _safe_load_plain(file)
    except (pickle.UnpicklingError, EOFError) as error:
        raise WeightsFormatError(f"{path} is not a readable torch file: {error}") from error

    for key in storage_keys:
        storage = storages.get(key)
        if storage is None:
            raise WeightsFormatError(f"{path}: storage {key!r} listed but never used.")
        header = file.read(8)
        if len(header) != 8:
            raise WeightsFormatError(f"{path} is truncated (size of storage {key!r}).")
        count = int(np.frombuffer(header, dtype="<i8")[0])
        if count < 0:
            raise WeightsFormatError(f"{path}: negative size for storage {key!r}.")
        nbytes = count * storage.dtype.itemsize
        buffer = file.read(nbytes)
        if len(buffer) != nbytes:
            raise WeightsFormatError(f"{path} is truncated (storage {key!r}).")
        storage.data = np.frombuffer(buffer, dtype=storage.dtype)

    if not isinstance(state, dict):
        raise WeightsFormatError(
            f"{path} does not hold a state dict. Received: {type(state).__name__}"
        )
    result = collections.OrderedDict()
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise WeightsFormatError(f"{path}: entry {name!r} is not a tensor.")
        result[name] = value.to_numpy()
    return result
