"""ArrayRecord files of encoded windows: atomic writes and checked reads.

Preparation must be resumable and idempotent, so every file this module writes appears
under its final name only once it is complete (written to ``NAME.tmp-PID`` then renamed);
a killed writer leaves at most a stray temporary file, never a truncated shard that a
later run would mistake for a finished one. ArrayRecord output depends only on the
records and the options string, so the same records give the same bytes.

ArrayRecord reports a truncated file as holding zero records rather than raising, so
:func:`check_shard` compares against the count and size the manifest recorded.

Each shard's SHA-256 is recorded next to its count and size (:func:`shard_entry`), so a
rerun of preparation can tell a damaged shard from an intact one (:func:`stale_reason`)
and rewrite only the damaged ones.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from array_record.python import array_record_module

from gesture_jax.errors import UserError

# group_size:1 keeps every record independently addressable (Grain reads by index).
# Uncompressed: float features compress by ~10 % only, while the default codec made
# reading a 400-frame WavLM window ~4x slower (7.7 vs 1.9 ms) and writing ~4x slower.
WRITER_OPTIONS = "group_size:1,uncompressed"


class ShardError(UserError, RuntimeError):
    """A shard that is missing, truncated or unreadable.

    ``shard`` is the file and ``record`` the index inside it when one record is at fault
    (None for the whole file). The message alone carries everything a user needs; the
    attributes are for code. Both survive pickling (BaseException pickles ``args`` and
    ``__dict__``), which is how an error raised in a Grain worker process reaches training.
    """

    def __init__(self, message: str, *, shard: str | os.PathLike | None = None, record: int | None = None):
        super().__init__(message)
        self.shard = Path(shard) if shard is not None else None
        self.record = record


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` for ``split`` (CONTRACTS.md data.out layout)."""
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def write_records(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write ``records`` to an ArrayRecord file atomically; returns the record count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    writer = array_record_module.ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    n = 0
    try:
        for r in records:
            writer.write(r)
            n += 1
    finally:
        writer.close()
    os.replace(tmp, path)
    return n


def read_records(path: str | os.PathLike) -> list[bytes]:
    """Every record of an ArrayRecord file, in order."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: file does not exist", shard=path)
    try:
        reader = array_record_module.ArrayRecordReader(str(path))
    except Exception as e:  # the C++ layer raises RuntimeError/ValueError variously
        raise ShardError(f"{path}: not a readable ArrayRecord file ({e})", shard=path) from e
    try:
        return list(reader.read_all()) if reader.num_records() else []
    except Exception as e:
        raise ShardError(f"{path}: unreadable ArrayRecord content ({e})", shard=path) from e
    finally:
        reader.close()


def count_records(path: str | os.PathLike) -> int:
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: file does not exist", shard=path)
    try:
        reader = array_record_module.ArrayRecordReader(str(path))
        n = reader.num_records()
        reader.close()
    except Exception as e:
        raise ShardError(f"{path}: not a readable ArrayRecord file ({e})", shard=path) from e
    return int(n)


def check_shard(path: str | os.PathLike, *, num_records: int, num_bytes: int,
                probe: Sequence[int] = (0, -1), fix: str = "re-run data_prep.prepare") -> list[bytes]:
    """Fail with a clear message unless ``path`` holds what the manifest says.

    Checks existence, byte size, record count, and that the ``probe`` records can be
    read (returned so the caller can also decode them). Cheap: no full hash of large shards.
    ``fix`` ends every message (the caller knows the command that prepared the data).
    """
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard listed in manifest.json is missing; {fix}", shard=path)
    size = path.stat().st_size
    if size != num_bytes:
        raise ShardError(f"{path}: {size} bytes but manifest.json says {num_bytes}: the shard is "
                         f"truncated or corrupt; {fix}", shard=path)
    try:
        reader = array_record_module.ArrayRecordReader(str(path))
    except Exception as e:
        raise ShardError(f"{path}: corrupt ArrayRecord shard ({e}); {fix}", shard=path) from e
    try:
        n = reader.num_records()
        if n != num_records:
            raise ShardError(f"{path}: {n} records but manifest.json says {num_records}: corrupt shard; {fix}",
                             shard=path)
        idx = sorted({i % n for i in probe}) if n else []
        got = list(reader.read(idx)) if idx else []
    except ShardError:
        raise
    except Exception as e:
        raise ShardError(f"{path}: corrupt ArrayRecord shard ({e}); {fix}", shard=path) from e
    finally:
        reader.close()
    return got


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (source hashes in the manifest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stale_reason(path: str | os.PathLike, num_records: int, previous: dict | None = None) -> str | None:
    """Why the shard at ``path`` must be (re)written, or None when the file on disk can be kept.

    ``previous`` is the shard's entry in the manifest of the earlier run, if any. With a
    recorded sha256 the file must match it byte for byte (plus size and count, checked
    first because they are cheap), so damage anywhere is caught. Without one (no earlier
    manifest, or one written before shards were hashed) a file with the right record count
    is kept, as before hashes existed (shards are written atomically, so that is a finished
    one), provided every record reads back: its hash is recorded next, and must not be the
    hash of a damaged file.
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    if previous is not None and "sha256" in previous:
        if previous.get("num_records") != num_records:
            return f"manifest.json says {previous.get('num_records')} records, {num_records} expected"
        size = path.stat().st_size
        if size != previous.get("num_bytes"):
            return f"{size} bytes, manifest.json says {previous.get('num_bytes')}"
        return None if sha256_file(path) == previous["sha256"] else "sha256 mismatch"
    try:
        n = count_records(path)
        if n == num_records:
            scan_records(path)  # its hash is about to be recorded: it must not bless a damaged file
    except ShardError as e:
        return f"unreadable ({str(e).removeprefix(f'{path}: ')})"
    return None if n == num_records else f"{n} records, {num_records} expected"


def scan_records(path: str | os.PathLike) -> None:
    """Read every record of ``path`` once (ArrayRecord verifies its chunk checksums while
    reading); ShardError naming the first unreadable record. One record at a time: shards
    of long windows are hundreds of MB."""
    path = Path(path)
    try:
        reader = array_record_module.ArrayRecordReader(str(path))
    except Exception as e:
        raise ShardError(f"{path}: not a readable ArrayRecord file ({e})", shard=path) from e
    try:
        for i in range(reader.num_records()):
            try:
                reader.read([i])
            except Exception as e:
                raise ShardError(f"{path}: record {i} is corrupt ({e})", shard=path, record=i) from e
    finally:
        reader.close()


def shard_entry(path: str | os.PathLike, num_records: int, sha256: str | None = None) -> dict:
    """The manifest's record of one written shard; ``sha256`` when already known (verified)."""
    path = Path(path)
    return {"path": path.name, "num_records": num_records, "num_bytes": path.stat().st_size,
            "sha256": sha256 or sha256_file(path)}


def sync_shard(path: str | os.PathLike, num_records: int, previous: dict | None,
               records: Callable[[], Iterable[bytes]]) -> tuple[dict, str | None]:
    """Keep the shard at ``path`` or (re)write it from ``records()``; returns (manifest entry, why rewritten).

    The reason is None when the file was kept or written for the first time (missing and
    not listed by an earlier manifest), i.e. it is set exactly when a finished shard had to
    be replaced, which the caller reports.
    """
    why = stale_reason(path, num_records, previous)
    if why is None:
        return shard_entry(path, num_records, (previous or {}).get("sha256")), None
    n = write_records(path, records())
    if n != num_records:
        raise ShardError(f"{path}: wrote {n} records, expected {num_records}", shard=path)
    return shard_entry(path, num_records), (None if why == "missing" and previous is None else why)


def write_split_shards(data_out: str | os.PathLike, split: str, records: Sequence[bytes],
                       records_per_shard: int, previous: dict[str, dict] | None = None) -> list[dict]:
    """Write ``records`` (in order) as ``split``'s contiguous shards; skip identical finished ones.

    The shard count is ceil(len / records_per_shard) (at least 1 when there are records)
    and record i goes to shard i // per, with per = ceil(len / count): a pure function of
    the record list, so the same records always give the same files. A shard already on
    disk is kept when :func:`stale_reason` finds nothing wrong with it (``previous``: the
    earlier manifest's entries by file name). Returns
    [{"path", "num_records", "num_bytes", "sha256"}] for the manifest.
    """
    data_out = Path(data_out)
    n = len(records)
    if n == 0:
        return []
    count = max(1, -(-n // max(1, int(records_per_shard))))
    per = -(-n // count)
    count = -(-n // per)  # no empty trailing shard
    out = []
    for i in range(count):
        chunk = records[i * per:(i + 1) * per]
        path = data_out / shard_name(split, i, count)
        entry, _ = sync_shard(path, len(chunk), (previous or {}).get(path.name), lambda: chunk)
        out.append(entry)
    return out
