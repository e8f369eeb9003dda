"""PyTorch ``torch.save`` zip archives (and Lightning .ckpt files) read without torch.

Since PyTorch 1.6 ``torch.save`` writes a zip archive: ``<prefix>/data.pkl`` (the pickled object,
protocol 2, each tensor storage a persistent id ``('storage', torch.FloatStorage, key, location,
numel)``), ``<prefix>/data/<key>`` (each storage's raw bytes, stored uncompressed), ``byteorder``,
``version``, ``.format_version``. The pickle is read by :mod:`gesture_jax.foreign.safe_pickle` in
mode="placeholder": tensors are rebuilt here as numpy arrays (``torch._utils._rebuild_tensor_v2``
and friends re-implemented on raw bytes, storage offset / size / stride honoured), and anything
else (Lightning's pickled configs, ``functools.partial(torch.optim.AdamW, ...)``) becomes an inert
:class:`~gesture_jax.foreign.safe_pickle.Opaque` record listed in the report: nothing in the file
is imported or run, so unlike ``torch.load(weights_only=True)`` this reads real Lightning files.

Memory: storages are read lazily. Unpickling only records each tensor's storage and layout; a
storage is read (once, straight from the file into one numpy buffer) when a tensor that views it
is asked for, so ``state_dict`` reads the weights and never the optimizer's moments a Lightning
checkpoint also holds (twice the weights for AdamW). Tensors viewing the same storage share it (contiguous ones as writable views,
strided ones as read-only ``as_strided`` views), so a checkpoint costs its size in RAM once. That
holds for crafted files too: records must be stored (torch never compresses them), each record's
bytes must lie inside the file, and no two records read may overlap (a central directory naming
one record many times is refused), so the bytes read never exceed the file's size. A tensor
with more elements than its storage (stride 0, as ``torch.save`` writes for ``expand()``, or
overlapping strides) is materialised as a copy, up to max(the file's size, 16 MiB) bytes for all
such tensors together; beyond that it is refused (a stride-0 view of 8 elements could otherwise
claim terabytes). Big-endian archives are byte-swapped to native order, untyped storages
(``_rebuild_tensor_v3``) once their dtype is known.

TorchScript archives, the legacy (pre-1.6) format, and empty, truncated or foreign files are a
one-line :class:`~gesture_jax.foreign.ForeignCheckpointError` naming the file.
"""
from __future__ import annotations

import bisect
import math
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.safe_pickle import Known, Opaque, _show, _short, restricted_load
from gesture_jax.foreign.sniff import sniff

__all__ = ["TorchArchive", "read_torch_archive", "state_dict", "TORCH_DTYPES", "STORAGE_DTYPES"]

# pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) opens every legacy torch.save file
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _ml(name: str) -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:   # pragma: no cover - ml_dtypes ships with jax
        return None
    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else None


# torch dtype (as pickled: the global torch.<name>) -> numpy dtype
TORCH_DTYPES: dict[str, np.dtype | None] = {
    "float32": np.dtype(np.float32), "float": np.dtype(np.float32),
    "float64": np.dtype(np.float64), "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "bfloat16": _ml("bfloat16"),
    "int8": np.dtype(np.int8), "int16": np.dtype(np.int16), "short": np.dtype(np.int16),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32), "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8), "uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64), "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64), "cfloat": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128), "cdouble": np.dtype(np.complex128),
    "float8_e4m3fn": _ml("float8_e4m3fn"), "float8_e5m2": _ml("float8_e5m2"),
    "float8_e4m3fnuz": _ml("float8_e4m3fnuz"), "float8_e5m2fnuz": _ml("float8_e5m2fnuz"),
}

# legacy typed storage class -> numpy dtype (UntypedStorage: raw bytes, typed by _rebuild_tensor_v3)
STORAGE_DTYPES: dict[str, np.dtype | None] = {
    "FloatStorage": TORCH_DTYPES["float32"], "DoubleStorage": TORCH_DTYPES["float64"],
    "HalfStorage": TORCH_DTYPES["float16"], "BFloat16Storage": TORCH_DTYPES["bfloat16"],
    "LongStorage": TORCH_DTYPES["int64"], "IntStorage": TORCH_DTYPES["int32"],
    "ShortStorage": TORCH_DTYPES["int16"], "CharStorage": TORCH_DTYPES["int8"],
    "ByteStorage": TORCH_DTYPES["uint8"], "BoolStorage": TORCH_DTYPES["bool"],
    "ComplexFloatStorage": TORCH_DTYPES["complex64"], "ComplexDoubleStorage": TORCH_DTYPES["complex128"],
    "UntypedStorage": np.dtype(np.uint8),
}


@dataclass
class TorchArchive:
    """What :func:`read_torch_archive` found: the unpickled data.pkl with tensors as numpy arrays."""
    tree: Any           # tensors -> np.ndarray, torch.Size -> tuple, other objects -> Opaque records
    report: list[str]   # what became an Opaque, e.g. "functools.partial x1"
    path: str


@dataclass(eq=False)
class _LazyStorage:
    """A storage named by data.pkl, not read yet."""
    key: str
    dtype: np.dtype
    numel: int
    untyped: bool


@dataclass(eq=False)
class _LazyTensor:
    """A tensor of data.pkl, not read yet: its storage and layout (view_dtype: the torch dtype a
    ``_rebuild_tensor_v3`` views an untyped storage as)."""
    storage: _LazyStorage
    offset: Any
    size: Any
    stride: Any
    view_dtype: Any = None


class _Archive:
    """One open torch.save zip: records read by name, storages read on demand and cached by key."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, f: BinaryIO, prefix: str):
        self.path, self.zf, self.f, self.prefix = path, zf, f, prefix
        self.storages: dict[str, np.ndarray] = {}          # storages read, by key
        self.lazy: dict[str, _LazyStorage] = {}            # storages named by data.pkl, by key
        self.size = f.seek(0, 2)                        # the archive's size in bytes
        self.spans: list[tuple[int, int, str]] = []     # (start, end, name) of every record read, sorted
        self.read_total = 0                             # bytes of records read so far
        self.expand_left = max(self.size, _EXPAND_MIN_BUDGET)   # bytes left for materialised expanded tensors
        self.untyped_be: dict[int, np.dtype | None] = {}   # id(raw storage) -> dtype it was swapped for
        order = self._record("byteorder", optional=True)
        self.big_endian = order is not None and bytes(order).strip() == b"big"

    def err(self, msg: str) -> ForeignCheckpointError:
        return ForeignCheckpointError(f"{self.path}: {msg}")

    def _record(self, name: str, optional: bool = False) -> np.ndarray | None:
        """The bytes of record ``<prefix><name>`` in one writable uint8 buffer (CRC checked)."""
        try:
            info = self.zf.getinfo(self.prefix + name)
        except KeyError:
            if optional:
                return None
            raise self.err(f"no record {_show(self.prefix + name)} in the archive (truncated or damaged)") from None
        rec = _show(info.filename)
        # torch stores every record uncompressed and unencrypted; anything else is not its file
        if info.flag_bits & 0x1:
            raise self.err(f"record {rec} is encrypted; torch.save never encrypts records")
        if info.compress_type != zipfile.ZIP_STORED:
            raise self.err(f"record {rec} is compressed (zip method {info.compress_type}); torch.save stores "
                           f"records uncompressed")
        if info.file_size > self.size or info.compress_size != info.file_size:
            raise self.err(f"record {rec} claims {info.file_size} bytes (stored as {info.compress_size}) in an "
                           f"archive of {self.size} bytes (damaged or crafted file)")
        # read the record straight into the buffer, from its local header on
        self.f.seek(info.header_offset)
        head = self.f.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise self.err(f"damaged zip entry {rec}")
        n_name, n_extra = struct.unpack("<HH", head[26:30])
        start, data_at = info.header_offset, info.header_offset + 30 + n_name + n_extra
        end = data_at + info.file_size
        if end > self.size:
            raise self.err(f"the file ends inside record {rec} (truncated: its bytes {data_at}..{end} of a file of "
                           f"{self.size})")
        self._claim(start, end, rec)
        try:
            buf = np.empty(info.file_size, np.uint8)
        except MemoryError:
            raise self.err(f"record {rec} of {info.file_size} bytes does not fit in memory") from None
        self.f.seek(data_at)
        view, got = memoryview(buf), 0
        while got < info.file_size:
            n = self.f.readinto(view[got:])
            if not n:
                raise self.err(f"the file ends inside record {rec} (truncated: {got} of {info.file_size} bytes)")
            got += n
        if zlib.crc32(buf) != info.CRC:
            raise self.err(f"record {rec} fails its CRC check (damaged file)")
        return buf

    def _claim(self, start: int, end: int, rec: str) -> None:
        """Refuse a record whose bytes (local header and data) overlap a record already read: a
        central directory naming one stored record many times would otherwise cost its size each
        time; with disjoint records the bytes read never exceed the archive's size."""
        i = bisect.bisect_left(self.spans, (start,))
        for j in (i - 1, i):
            if 0 <= j < len(self.spans) and self.spans[j][0] < end and start < self.spans[j][1]:
                raise self.err(f"records {self.spans[j][2]} and {rec} overlap in the file (a crafted archive: "
                               f"one stored record named several times)")
        self.read_total += end - start
        if self.read_total > self.size:       # cannot happen for disjoint spans; kept as a hard cap
            raise self.err(f"records read add up to more than the archive's {self.size} bytes")
        self.spans.insert(i, (start, end, rec))

    # ------------------------------------------------------------ pickle hooks
    def persistent_load(self, pid: Any) -> _LazyStorage:
        """('storage', storage_type, key, location, numel) -> the storage, to be read when used."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[0], str) and pid[0] == "storage"):
            raise self.err(f"unsupported persistent id in data.pkl: {_short(pid)}")
        _, stype, key, _location, numel = pid
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise self.err(f"bad storage id {_short(pid)}")
        sname = stype.name.rsplit(".", 1)[-1] if isinstance(stype, Opaque) else ""
        if sname not in STORAGE_DTYPES:
            what = _show(stype.name) if isinstance(stype, Opaque) else _short(stype)
            raise self.err(f"storage type {what} (quantized or unknown tensors) is not supported")
        dtype = STORAGE_DTYPES[sname]
        if dtype is None:
            raise self.err(f"storage type {sname} needs the ml_dtypes package")
        if numel * dtype.itemsize > self.size:
            raise self.err(f"storage {_show(key)} claims {_short(numel)} x {dtype}, more than the archive's "
                           f"{self.size} bytes")
        lazy = self.lazy.get(key)
        if lazy is None or lazy.dtype != dtype or lazy.numel != numel:
            lazy = _LazyStorage(key, dtype, numel, sname == "UntypedStorage")
            self.lazy.setdefault(key, lazy)
        return lazy

    def _storage(self, st: _LazyStorage) -> np.ndarray:
        """The storage's elements, read from its record on first use."""
        key, dtype = st.key, st.dtype
        if key in self.storages:
            arr = self.storages[key]
            return arr if arr.dtype == dtype else arr.view(np.uint8).view(dtype)
        raw = self._record(f"data/{key}")
        assert raw is not None
        if raw.size != st.numel * dtype.itemsize:
            raise self.err(f"record data/{_show(key)} holds {raw.size} bytes, the pickle says {st.numel} x {dtype}")
        if self.big_endian and dtype.itemsize > 1:
            _swap(raw, dtype)
        arr = raw.view(dtype)
        if self.big_endian and st.untyped:
            self.untyped_be[id(arr)] = None    # swapped by _rebuild_tensor_v3, which knows the dtype
        self.storages[key] = arr
        return arr

    def materialize(self, obj: Any) -> Any:
        """obj with every _LazyTensor in it (containers and Opaque records included) read as an array."""
        if isinstance(obj, _LazyTensor):
            return self._tensor(obj)
        if isinstance(obj, OrderedDict):
            return OrderedDict((k, self.materialize(v)) for k, v in obj.items())
        if isinstance(obj, dict):
            return {k: self.materialize(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.materialize(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.materialize(v) for v in obj)
        if isinstance(obj, Opaque):
            obj.args = self.materialize(obj.args)
            obj.kwargs = self.materialize(obj.kwargs)
            obj.state = self.materialize(obj.state)
            obj.items = self.materialize(obj.items)
            obj.setitems = self.materialize(obj.setitems)
        return obj

    def _tensor(self, t: _LazyTensor) -> np.ndarray:
        storage = self._storage(t.storage)
        if t.view_dtype is None:
            return self._strided(storage, t.offset, t.size, t.stride)
        return self._view_untyped(storage, t.offset, t.size, t.stride, t.view_dtype)

    def handlers(self) -> dict[str, Any]:
        h: dict[str, Any] = {
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor_v2,
            "torch._utils._rebuild_tensor_v3": self._rebuild_tensor_v3,
            "torch._utils._rebuild_parameter": self._rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": self._rebuild_parameter,
            "torch._utils._rebuild_device_tensor_from_numpy": self._rebuild_from_numpy,
            "torch._tensor._rebuild_from_type_v2": self._rebuild_from_type_v2,
            "torch._tensor._rebuild_from_type": self._rebuild_from_type,
            "torch.Size": _size,
        }
        for name in STORAGE_DTYPES:
            h[f"torch.{name}"] = None
            h[f"torch.cuda.{name}"] = None
            h[f"torch.storage.{name}"] = None
        return h

    def dtype_markers(self) -> dict[str, Any]:
        return {f"torch.{n}": None for n in TORCH_DTYPES}

    def _strided(self, storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise self.err(f"a tensor's storage is {type(storage).__name__}, not a storage record")
        size, stride = _ints(size, "size"), _ints(stride, "stride")
        if (not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= _MAX_DIM
                or len(size) != len(stride)
                or len(size) > 32 or min(stride, default=0) < 0 or min(size, default=0) < 0
                or max(size, default=0) > _MAX_DIM or max(stride, default=0) > _MAX_DIM):
            raise self.err(f"bad tensor layout: offset {_short(offset)}, size {_short(size)}, stride {_short(stride)}")
        count = math.prod(size)
        if count == 0:
            return np.zeros(size, storage.dtype)
        end = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1
        if end > storage.size:
            raise self.err(f"a tensor (offset {offset}, size {size}, stride {stride}) reaches element {end} "
                           f"of a storage of {storage.size}")
        contiguous = tuple(math.prod(size[i + 1:]) for i in range(len(size)))
        if all(st == c for n, st, c in zip(size, stride, contiguous) if n > 1):
            return storage[offset:offset + count].reshape(size)
        item = storage.dtype.itemsize
        if count > storage.size:
            # more elements than the storage holds: stride 0 (torch.save of an expand()ed tensor) or
            # overlapping strides. Materialised, within a budget for the whole archive: a view of a
            # few bytes could otherwise claim terabytes from whoever copies it.
            need = count * item
            if need > self.expand_left:
                raise self.err(f"a tensor of size {size} with stride {stride} repeats a storage of {storage.size} "
                               f"elements into {count} ({need} bytes); expanded tensors are read up to "
                               f"max(the file's size, {_EXPAND_MIN_BUDGET >> 20} MiB) bytes in all")
            self.expand_left -= need
            view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride],
                                                   writeable=False)
            return np.array(view)
        return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride],
                                               writeable=False)

    def _lazy(self, storage: Any, offset: Any, size: Any, stride: Any, view_dtype: Any = None) -> _LazyTensor:
        if not isinstance(storage, _LazyStorage):
            raise self.err(f"a tensor's storage is {type(storage).__name__}, not a storage record")
        return _LazyTensor(storage, offset, size, stride, view_dtype)

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any) -> _LazyTensor:
        return self._lazy(storage, offset, size, stride)

    def _rebuild_tensor_v2(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                           backward_hooks: Any = None, metadata: Any = None) -> _LazyTensor:
        return self._lazy(storage, offset, size, stride)

    def _rebuild_tensor_v3(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                           backward_hooks: Any, dtype: Any, metadata: Any = None) -> _LazyTensor:
        return self._lazy(storage, offset, size, stride, view_dtype=dtype)

    def _view_untyped(self, storage: np.ndarray, offset: Any, size: Any, stride: Any, dtype: Any) -> np.ndarray:
        name = dtype.name if isinstance(dtype, Opaque) else ""
        npd = TORCH_DTYPES.get(name[6:]) if name.startswith("torch.") else None
        if npd is None:
            raise self.err(f"tensor dtype {_show(name) if name else _short(dtype)} is not supported")
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise self.err("a tensor's storage is not a storage record")
        raw = storage.view(np.uint8)
        if raw.size % npd.itemsize:
            raise self.err(f"a storage of {raw.size} bytes viewed as {npd}")
        if id(storage) in self.untyped_be and npd.itemsize > 1:
            # a big-endian archive's untyped storage: its bytes are swapped once, for this dtype
            done = self.untyped_be[id(storage)]
            if done is None:
                _swap(raw, npd)
                self.untyped_be[id(storage)] = npd
            elif done.itemsize != npd.itemsize or (done.kind == "c") != (npd.kind == "c"):
                raise self.err(f"a big-endian untyped storage viewed both as {done} and as {npd}")
        return self._strided(raw.view(npd), offset, size, stride)

    def _rebuild_parameter(self, data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                           state: Any = None) -> Any:
        return data                      # nn.Parameter -> its array

    def _rebuild_from_numpy(self, data: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
        if not isinstance(data, (np.ndarray, _LazyTensor)):
            raise self.err("_rebuild_device_tensor_from_numpy without an array")
        return data

    def _rebuild_from_type_v2(self, func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
        # a tensor subclass: rebuild the plain tensor with our own handler; the subclass is dropped
        if isinstance(func, Known) and func.fn is not None and isinstance(args, tuple):
            return func.fn(*args)
        return Opaque(getattr(new_type, "name", "torch tensor subclass"), (func, new_type, args), state=state)

    def _rebuild_from_type(self, func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
        return self._rebuild_from_type_v2(func, new_type, args, state)


_MAX_DIM = 1 << 48             # no tensor dimension or stride beyond this (numpy's limit is near 2**63)
_EXPAND_MIN_BUDGET = 16 << 20  # bytes of materialised expanded tensors allowed even in a tiny archive


def _swap(raw: np.ndarray, dtype: np.dtype) -> None:
    """Byte-swap ``raw`` (uint8, a big-endian storage) in place, as elements of ``dtype``."""
    part = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
    raw.view(f"u{part}").byteswap(inplace=True)


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return tuple(v)
    raise ValueError(f"tensor {what} {_short(v, 60)} is not a tuple of ints")


def _size(*args: Any) -> tuple[int, ...]:
    """torch.Size(seq) -> tuple."""
    if len(args) != 1:
        raise ValueError("torch.Size takes one sequence")
    return _ints(args[0], "torch.Size")


def _refuse_non_zip(path: Path, kind: str) -> ForeignCheckpointError:
    if kind == "empty":
        return ForeignCheckpointError(f"{path}: an empty file; expected a torch.save / Lightning checkpoint")
    if kind == "pickle":
        with open(path, "rb") as f:
            head = f.read(len(LEGACY_MAGIC))
        if head == LEGACY_MAGIC:
            return ForeignCheckpointError(
                f"{path}: the legacy (pre-1.6, non-zip) torch.save format, which is not read here; re-save it in an "
                f"environment with torch: torch.save(torch.load(OLD, weights_only=False), NEW, "
                f"_use_new_zipfile_serialization=True)")
        return ForeignCheckpointError(f"{path}: a plain Python pickle, not a torch.save zip archive")
    if kind == "hdf5":
        return ForeignCheckpointError(f"{path}: an HDF5 file (Keras?), not a torch.save zip archive")
    return ForeignCheckpointError(f"{path}: not a zip archive, so not a torch.save checkpoint (PyTorch >= 1.6 "
                                  f"writes zip archives)")


def _find_prefix(path: Path, names: list[str]) -> str:
    if any(n.endswith("/constants.pkl") or n == "constants.pkl" or "/code/" in n or n.startswith("code/")
           for n in names):
        raise ForeignCheckpointError(
            f"{path}: a TorchScript archive (torch.jit.save); its code is not executed here and its weights are not "
            f"read: save the model's weights with torch.save(model.state_dict(), FILE) instead")
    prefixes = [n[: -len("data.pkl")] for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    if not prefixes:
        shown = ", ".join(_show(n, 80) for n in names[:6]) + (" ..." if len(names) > 6 else "")
        raise ForeignCheckpointError(f"{path}: a zip archive without a data.pkl record, so not a torch.save checkpoint "
                                     f"(it holds: {shown or 'nothing'})")
    if len(prefixes) > 1:
        shown = ", ".join(_show(p, 80) for p in prefixes[:6]) + (" ..." if len(prefixes) > 6 else "")
        raise ForeignCheckpointError(f"{path}: several data.pkl records ({shown}): not one torch.save checkpoint")
    return prefixes[0]


def _read(path: str | Path, pick: Callable[[Path, Any], Any]) -> tuple[Any, list[str]]:
    """Unpickle data.pkl (tensors as _LazyTensor) and read the tensors in ``pick(path, tree)``."""
    path = Path(path)
    if not path.is_file():
        raise ForeignCheckpointError(f"{path}: no such file; expected a torch.save / Lightning checkpoint")
    kind = sniff(path)
    if kind != "zip":
        raise _refuse_non_zip(path, kind)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, RuntimeError, MemoryError) as e:
        raise ForeignCheckpointError(f"{path}: a damaged or truncated zip archive ({_show(str(e))})") from None
    with zf, open(path, "rb") as f:
        prefix = _find_prefix(path, zf.namelist())
        ar = _Archive(path, zf, f, prefix)
        pkl = ar._record("data.pkl")
        assert pkl is not None
        tree, report = restricted_load(pkl.tobytes(), mode="placeholder", source=f"{path} ({prefix}data.pkl)",
                                       persistent_load=ar.persistent_load,
                                       handlers={**ar.handlers(), **ar.dtype_markers()})
        return ar.materialize(pick(path, tree)), report


def read_torch_archive(path: str | Path) -> TorchArchive:
    """The object a ``torch.save`` zip archive (a Lightning .ckpt, a .pt/.pth) holds, tensors as numpy
    arrays and every other class an Opaque record; nothing in the file is executed. Reads every
    tensor: ``state_dict`` reads only the weights."""
    tree, report = _read(path, lambda p, t: t)
    return TorchArchive(tree=tree, report=report, path=str(path))


def _is_tensor(v: Any) -> bool:
    return isinstance(v, (np.ndarray, _LazyTensor))


def _is_flat_tensor_map(tree: Any) -> bool:
    return (isinstance(tree, dict) and len(tree) > 0 and all(isinstance(k, str) for k in tree)
            and all(_is_tensor(v) for v in tree.values()))


def _pick_state_dict(key: str) -> Callable[[Path, Any], Any]:
    def pick(path: Path, tree: Any) -> Any:
        if isinstance(tree, dict) and key in tree:
            sd, where = tree[key], f"{key!r}"
        elif _is_flat_tensor_map(tree):
            sd, where = tree, "the top level"
        else:
            if isinstance(tree, dict):
                found = "top-level keys: " + ", ".join(_short(k, 60) for k in list(tree)[:30])
            else:
                found = f"the top level is {_short(tree)}"
            raise ForeignCheckpointError(f"{path}: no {key!r} entry and not a flat name -> tensor mapping ({found})")
        if not isinstance(sd, dict):
            raise ForeignCheckpointError(f"{path}: {where} is {_short(sd)}, not a name -> tensor mapping")
        out: OrderedDict[str, Any] = OrderedDict()
        for k, v in sd.items():
            if not isinstance(k, str):
                raise ForeignCheckpointError(f"{path}: {where} has a non-string key {_short(k, 60)}")
            if not _is_tensor(v):
                what = f"a {_show(v.name)} object" if isinstance(v, Opaque) else f"a {type(v).__name__}"
                raise ForeignCheckpointError(f"{path}: {where}[{_short(k, 60)}] is {what}, not a tensor")
            out[k] = v
        return out
    return pick


def state_dict(path: str | Path, key: str = "state_dict") -> tuple["OrderedDict[str, np.ndarray]", list[str]]:
    """(name -> array, report) of a checkpoint: ``tree[key]`` of a Lightning .ckpt, or the tree itself
    when it is a flat name -> tensor mapping (``torch.save(model.state_dict(), FILE)``). Only these
    tensors' storages are read (not the optimizer states a Lightning file also holds)."""
    return _read(path, _pick_state_dict(key))
