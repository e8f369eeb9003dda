"""TF1 ``tf.train.Saver`` (V2) checkpoints read in pure Python: no TensorFlow, tensors only.

A checkpoint PREFIX (e.g. DIR/chkpt-final) is a tensor bundle: PREFIX.index, a LevelDB-format
table (SSTable) whose keys are variable names and whose values are BundleEntryProto messages
(dtype, shape, shard, offset, size, crc32c), and the raw little-endian tensor bytes in
PREFIX.data-<shard>-of-<n>. Every table block and every tensor is checked against its masked
crc32c; a truncated, damaged, sliced (partitioned) or non-numeric entry is a one-line
:class:`~gesture_jax.foreign.ForeignCheckpointError` naming the file. PREFIX.meta (the
MetaGraphDef) is never read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.sniff import refuse, sniff

__all__ = ["crc32c", "masked_crc32c", "BundleEntry", "TFCheckpoint", "resolve_checkpoint_prefix",
           "read_tf_checkpoint", "TABLE_MAGIC"]

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB / TF table footer magic
DEFAULT_WHAT = "a TensorFlow checkpoint: the prefix DIR/NAME, its .index file or the folder holding it"


# ----------------------------------------------------------------------- crc32c, protobuf
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as TensorFlow's crc32c::Value / Extend."""
    t = _CRC32C_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's crc32c::Mask(Value(data)): rotate right by 15 and add 0xa282ead8."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


class _Truncated(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Truncated("varint longer than 10 bytes")


def _proto(buf: bytes) -> dict[int, list[Any]]:
    """Protobuf wire format -> {field number: [values]} (varints as int, fixed32/64 as int, bytes)."""
    out: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        fno, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > len(buf):
                raise _Truncated("fixed64 past the end")
            v, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise _Truncated("length-delimited field past the end")
            v, pos = bytes(buf[pos:pos + n]), pos + n
        elif wt == 5:
            if pos + 4 > len(buf):
                raise _Truncated("fixed32 past the end")
            v, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise _Truncated(f"wire type {wt}")
        out.setdefault(fno, []).append(v)
    return out


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


# ----------------------------------------------------------------------- the tensor bundle
# tensorflow/core/framework/types.proto DataType -> numpy (little-endian); strings/variants are not read.
_TF_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2", 19: "<f2",
              22: "<u4", 23: "<u8"}
_TF_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 7: "string", 9: "int64", 14: "bfloat16", 19: "float16",
                   21: "variant"}


@dataclass(frozen=True)
class BundleEntry:
    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


def _table_entries(path: Path, data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-format table (TF's io/table), blocks crc-checked."""
    if len(data) < 48:
        raise ForeignCheckpointError(f"{path}: {len(data)} bytes, shorter than a table footer: truncated or not a "
                                     f"TensorFlow checkpoint .index")
    magic = int.from_bytes(data[-8:], "little")
    if magic != TABLE_MAGIC:
        raise ForeignCheckpointError(f"{path}: table magic {magic:#018x} instead of {TABLE_MAGIC:#018x}: "
                                     f"truncated or not a TensorFlow checkpoint .index")
    footer = data[-48:-8]
    end = len(data) - 48

    def block(handle: bytes, what: str) -> bytes:
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        if off + size + 5 > end:
            raise ForeignCheckpointError(f"{path}: the {what} block [{off}, {off + size}) runs past the end of the "
                                         f"table: truncated file")
        raw = data[off:off + size]
        kind = data[off + size]
        stored = int.from_bytes(data[off + size + 1:off + size + 5], "little")
        if stored != masked_crc32c(raw + bytes([kind])):
            raise ForeignCheckpointError(f"{path}: crc32c mismatch in the {what} block at byte {off}: damaged file")
        if kind != 0:
            raise ForeignCheckpointError(f"{path}: the {what} block is compressed (type {kind}); only uncompressed "
                                         f"tables (what TensorFlow writes for checkpoints) are read")
        return raw

    def entries(blk: bytes, what: str) -> list[tuple[bytes, bytes]]:
        if len(blk) < 4:
            raise _Truncated(f"{what} block of {len(blk)} bytes")
        n_restarts = int.from_bytes(blk[-4:], "little")
        limit = len(blk) - 4 - 4 * n_restarts
        if limit < 0:
            raise _Truncated(f"{what} block restart array")
        out, key, pos = [], b"", 0
        while pos < limit:
            shared, pos = _varint(blk, pos)
            non_shared, pos = _varint(blk, pos)
            vlen, pos = _varint(blk, pos)
            if shared > len(key) or pos + non_shared + vlen > limit:
                raise _Truncated(f"{what} block entry")
            key = key[:shared] + blk[pos:pos + non_shared]
            pos += non_shared
            out.append((key, blk[pos:pos + vlen]))
            pos += vlen
        return out

    try:
        _, p = _varint(footer, 0)
        _, p = _varint(footer, p)                  # metaindex handle (empty for checkpoints)
        index_handle = footer[p:]
        out = []
        for _, handle in entries(block(index_handle, "index"), "index"):
            out.extend(entries(block(handle, "data"), "data"))
        return out
    except _Truncated as e:
        raise ForeignCheckpointError(f"{path}: malformed table ({e}): truncated or damaged file") from None


class TFCheckpoint:
    """A TF1 ``tf.train.Saver`` (V2) checkpoint read without TensorFlow: ``names``, ``read(name)``."""

    def __init__(self, prefix: str | Path, what: str = DEFAULT_WHAT):
        self.prefix = Path(prefix)
        self.index_path = Path(str(self.prefix) + ".index")
        if not self.index_path.is_file():
            raise ForeignCheckpointError(f"{self.index_path}: no such file; expected {what}")
        kind = sniff(self.index_path)
        if kind in ("zip", "pickle"):
            raise refuse(self.index_path, kind, "a TensorFlow checkpoint .index")
        data = self.index_path.read_bytes()
        self.num_shards = 1
        self.entries: dict[str, BundleEntry] = {}
        try:
            for key, value in _table_entries(self.index_path, data):
                fields = _proto(value)
                if key == b"":                                   # BundleHeaderProto
                    self.num_shards = max(1, int(fields.get(1, [1])[-1]))
                    if int(fields.get(2, [0])[-1]) != 0:
                        raise ForeignCheckpointError(f"{self.index_path}: a big-endian bundle; only little-endian "
                                                     f"is read")
                    continue
                name = key.decode("utf8", "replace")
                shape: list[int] = []
                for shape_msg in fields.get(2, []):                 # TensorShapeProto
                    sf = _proto(shape_msg)
                    for dim in sf.get(2, []):
                        shape.append(_int64(int(_proto(dim).get(1, [0])[-1])))
                self.entries[name] = BundleEntry(
                    name=name, dtype=int(fields.get(1, [0])[-1]), shape=tuple(shape),
                    shard_id=int(fields.get(3, [0])[-1]), offset=_int64(int(fields.get(4, [0])[-1])),
                    size=_int64(int(fields.get(5, [0])[-1])),
                    crc32c=int(fields[6][-1]) if 6 in fields else None, sliced=bool(fields.get(7)))
        except _Truncated as e:
            raise ForeignCheckpointError(f"{self.index_path}: malformed entry ({e}): truncated or damaged "
                                         f"file") from None

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        e = self.entries.get(name)
        if e is None:
            raise ForeignCheckpointError(f"{self.index_path}: no tensor {name!r}")
        if e.sliced:
            raise ForeignCheckpointError(f"{self.index_path}: tensor {name} is saved in slices (a partitioned "
                                         f"variable); not supported")
        if e.dtype not in _TF_DTYPES:
            raise ForeignCheckpointError(f"{self.index_path}: tensor {name} has dtype "
                                         f"{_TF_DTYPE_NAMES.get(e.dtype, e.dtype)}, not a numeric type read here")
        if any(d < 0 for d in e.shape):
            raise ForeignCheckpointError(f"{self.index_path}: tensor {name} has an unknown shape {list(e.shape)}")
        dt = np.dtype(_TF_DTYPES[e.dtype])
        want = int(np.prod(e.shape, dtype=np.int64)) * dt.itemsize
        shard = self.shard_path(e.shard_id)
        if e.size != want:
            raise ForeignCheckpointError(f"{self.index_path}: tensor {name}: {e.size} bytes recorded for shape "
                                         f"{list(e.shape)} of {dt} ({want} bytes)")
        if not shard.is_file():
            raise ForeignCheckpointError(f"{shard}: no such file (the data shard of {self.index_path})")
        with open(shard, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise ForeignCheckpointError(f"{shard}: tensor {name} needs bytes [{e.offset}, {e.offset + e.size}) but "
                                         f"the file has {shard.stat().st_size}: truncated")
        if e.crc32c is not None and masked_crc32c(raw) != e.crc32c:
            raise ForeignCheckpointError(f"{shard}: tensor {name}: crc32c mismatch (the bytes differ from what was "
                                         f"saved): damaged file")
        return np.frombuffer(raw, dt).reshape(e.shape).copy()


def resolve_checkpoint_prefix(path: str | Path, prefer: str | None = None) -> Path:
    """The prefix DIR/NAME from the prefix itself, its .index/.meta/.data-* file, or the folder (its
    only .index, or NAME = ``prefer`` where the folder holds several)."""
    p = Path(path)
    s = str(p)
    for suffix in (".index", ".meta"):
        if s.endswith(suffix):
            return Path(s[: -len(suffix)])
    m = re.search(r"\.data-\d{5}-of-\d{5}$", s)
    if m:
        return Path(s[:m.start()])
    if p.is_dir():
        found = sorted(p.glob("*.index"))
        pick = [q for q in found if q.name == f"{prefer}.index"] or found
        if len(pick) != 1:
            raise ForeignCheckpointError(f"{p}: {'no' if not pick else len(pick)} checkpoint .index files "
                                         f"({', '.join(q.name for q in found) or 'none'}); pass the prefix, e.g. "
                                         f"{p}/{prefer or 'NAME'}")
        return Path(str(pick[0])[:-len(".index")])
    return p


def read_tf_checkpoint(path: str | Path, what: str = DEFAULT_WHAT, prefer: str | None = None) -> TFCheckpoint:
    """The checkpoint named by its prefix, one of its files or its folder (see resolve_checkpoint_prefix);
    ``what`` names the expected checkpoint in the error for a missing one."""
    return TFCheckpoint(resolve_checkpoint_prefix(path, prefer), what)
