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

Memory: each storage is read once, straight from the file into one numpy buffer, when its first
tensor is rebuilt; tensors viewing the same storage share it (contiguous ones as writable views,
strided ones as read-only ``as_strided`` views), so a checkpoint costs its size in RAM once.

TorchScript archives, the legacy (pre-1.6) format, and empty, truncated or foreign files are a
one-line :class:`~gesture_jax.foreign.ForeignCheckpointError` naming the file.
"""
from __future__ import annotations

import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.safe_pickle import Known, Opaque, restricted_load
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


class _Archive:
    """One open torch.save zip: records read by name, storages cached by key."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, f: BinaryIO, prefix: str):
        self.path, self.zf, self.f, self.prefix = path, zf, f, prefix
        self.storages: dict[str, np.ndarray] = {}
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
            raise self.err(f"no record {self.prefix + name} in the archive (truncated or damaged)") from None
        buf = np.empty(info.file_size, np.uint8)
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            # torch stores records uncompressed: read them straight into the buffer
            self.f.seek(info.header_offset)
            head = self.f.read(30)
            if len(head) != 30 or head[:4] != b"PK\x03\x04":
                raise self.err(f"damaged zip entry {info.filename}")
            n_name, n_extra = struct.unpack("<HH", head[26:30])
            self.f.seek(info.header_offset + 30 + n_name + n_extra)
            view, got = memoryview(buf), 0
            while got < info.file_size:
                n = self.f.readinto(view[got:])
                if not n:
                    raise self.err(f"the file ends inside record {info.filename} (truncated: {got} of "
                                   f"{info.file_size} bytes)")
                got += n
        else:
            try:
                with self.zf.open(info) as m:
                    data = m.read()
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise self.err(f"record {info.filename} cannot be read ({e})") from None
            buf[:] = np.frombuffer(data, np.uint8)
        if zlib.crc32(buf) != info.CRC:
            raise self.err(f"record {info.filename} fails its CRC check (damaged file)")
        return buf

    # ------------------------------------------------------------ pickle hooks
    def persistent_load(self, pid: Any) -> np.ndarray:
        """('storage', storage_type, key, location, numel) -> the storage as a 1-d array."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise self.err(f"unsupported persistent id in data.pkl: {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(key, str) or not isinstance(numel, int):
            raise self.err(f"bad storage id {pid!r:.80}")
        sname = getattr(stype, "name", repr(stype)).rsplit(".", 1)[-1]
        if sname not in STORAGE_DTYPES:
            raise self.err(f"storage type {getattr(stype, 'name', stype)} (quantized or unknown tensors) is not "
                           f"supported")
        dtype = STORAGE_DTYPES[sname]
        if dtype is None:
            raise self.err(f"storage type {sname} needs the ml_dtypes package")
        if key in self.storages:
            arr = self.storages[key]
            return arr if arr.dtype == dtype else arr.view(np.uint8).view(dtype)
        raw = self._record(f"data/{key}")
        assert raw is not None
        if raw.size != numel * dtype.itemsize:
            raise self.err(f"record data/{key} holds {raw.size} bytes, the pickle says {numel} x {dtype}")
        if self.big_endian and dtype.itemsize > 1:
            part = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
            raw.view(f"u{part}").byteswap(inplace=True)
        arr = raw.view(dtype)
        self.storages[key] = arr
        return arr

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
        if not isinstance(offset, int) or offset < 0 or len(size) != len(stride) or min(stride, default=0) < 0:
            raise self.err(f"bad tensor layout: offset {offset!r}, size {size}, stride {stride}")
        if any(s == 0 for s in size):
            return np.zeros(size, storage.dtype)
        end = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1
        if end > storage.size:
            raise self.err(f"a tensor (offset {offset}, size {size}, stride {stride}) reaches element {end} "
                           f"of a storage of {storage.size}")
        count = int(np.prod(size, dtype=np.int64))
        contiguous = tuple(int(np.prod(size[i + 1:], dtype=np.int64)) for i in range(len(size)))
        if all(st == c for n, st, c in zip(size, stride, contiguous) if n > 1):
            return storage[offset:offset + count].reshape(size)
        item = storage.dtype.itemsize
        return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride],
                                               writeable=False)

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
        return self._strided(storage, offset, size, stride)

    def _rebuild_tensor_v2(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                           backward_hooks: Any = None, metadata: Any = None) -> np.ndarray:
        return self._strided(storage, offset, size, stride)

    def _rebuild_tensor_v3(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                           backward_hooks: Any, dtype: Any, metadata: Any = None) -> np.ndarray:
        name = getattr(dtype, "name", "")
        npd = TORCH_DTYPES.get(name[6:]) if name.startswith("torch.") else None
        if npd is None:
            raise self.err(f"tensor dtype {name or dtype!r} is not supported")
        if not isinstance(storage, np.ndarray):
            raise self.err("a tensor's storage is not a storage record")
        raw = storage.view(np.uint8)
        if raw.size % npd.itemsize:
            raise self.err(f"a storage of {raw.size} bytes viewed as {npd}")
        return self._strided(raw.view(npd), offset, size, stride)

    def _rebuild_parameter(self, data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                           state: Any = None) -> Any:
        return data                      # nn.Parameter -> its array

    def _rebuild_from_numpy(self, data: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
        if not isinstance(data, np.ndarray):
            raise self.err("_rebuild_device_tensor_from_numpy without an array")
        return data

    def _rebuild_from_type_v2(self, func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
        # a tensor subclass: rebuild the plain tensor with our own handler; the subclass is dropped
        if isinstance(func, Known) and func.fn is not None and isinstance(args, tuple):
            return func.fn(*args)
        return Opaque(getattr(new_type, "name", "torch tensor subclass"), (func, new_type, args), state=state)

    def _rebuild_from_type(self, func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
        return self._rebuild_from_type_v2(func, new_type, args, state)


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return tuple(v)
    raise ValueError(f"tensor {what} {v!r:.60} is not a tuple of ints")


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
        shown = ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
        raise ForeignCheckpointError(f"{path}: a zip archive without a data.pkl record, so not a torch.save checkpoint "
                                     f"(it holds: {shown or 'nothing'})")
    if len(prefixes) > 1:
        raise ForeignCheckpointError(f"{path}: several data.pkl records ({', '.join(prefixes)}): not one torch.save "
                                     f"checkpoint")
    return prefixes[0]


def read_torch_archive(path: str | Path) -> TorchArchive:
    """The object a ``torch.save`` zip archive (a Lightning .ckpt, a .pt/.pth) holds, tensors as numpy
    arrays and every other class an Opaque record; nothing in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise ForeignCheckpointError(f"{path}: no such file; expected a torch.save / Lightning checkpoint")
    kind = sniff(path)
    if kind != "zip":
        raise _refuse_non_zip(path, kind)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ForeignCheckpointError(f"{path}: a damaged or truncated zip archive ({e})") from None
    with zf, open(path, "rb") as f:
        prefix = _find_prefix(path, zf.namelist())
        ar = _Archive(path, zf, f, prefix)
        pkl = ar._record("data.pkl")
        assert pkl is not None
        tree, report = restricted_load(pkl.tobytes(), mode="placeholder", source=f"{path} ({prefix}data.pkl)",
                                       persistent_load=ar.persistent_load,
                                       handlers={**ar.handlers(), **ar.dtype_markers()})
    return TorchArchive(tree=tree, report=report, path=str(path))


def _is_flat_tensor_map(tree: Any) -> bool:
    return (isinstance(tree, dict) and len(tree) > 0 and all(isinstance(k, str) for k in tree)
            and all(isinstance(v, np.ndarray) for v in tree.values()))


def state_dict(path: str | Path, key: str = "state_dict") -> tuple["OrderedDict[str, np.ndarray]", list[str]]:
    """(name -> array, report) of a checkpoint: ``tree[key]`` of a Lightning .ckpt, or the tree itself
    when it is a flat name -> tensor mapping (``torch.save(model.state_dict(), FILE)``)."""
    arch = read_torch_archive(path)
    tree = arch.tree
    if isinstance(tree, dict) and key in tree:
        sd, where = tree[key], f"{key!r}"
    elif _is_flat_tensor_map(tree):
        sd, where = tree, "the top level"
    else:
        if isinstance(tree, dict):
            found = "top-level keys: " + ", ".join(repr(k) for k in list(tree)[:30])
        else:
            found = f"the top level is {tree!r:.80}"
        raise ForeignCheckpointError(f"{path}: no {key!r} entry and not a flat name -> tensor mapping ({found})")
    if not isinstance(sd, dict):
        raise ForeignCheckpointError(f"{path}: {where} is {sd!r:.80}, not a name -> tensor mapping")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for k, v in sd.items():
        if not isinstance(k, str):
            raise ForeignCheckpointError(f"{path}: {where} has a non-string key {k!r:.60}")
        if not isinstance(v, np.ndarray):
            what = f"a {v.name} object" if isinstance(v, Opaque) else f"a {type(v).__name__}"
            raise ForeignCheckpointError(f"{path}: {where}[{k!r}] is {what}, not a tensor")
        out[k] = v
    return out, arch.report
