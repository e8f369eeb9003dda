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

Paths may be local or in a bucket (``gs://...``, see :mod:`gesture_jax.storage`).
ArrayRecord's C++ reader and writer need local files: a bucket shard is written to a local
temporary file and uploaded whole (an object never appears half-written, so no rename is
needed), and read from a downloaded copy; the training reader keeps a verified copy of each
bucket shard in the local cache (:func:`local_shard`). Messages always name the shard by its
own (bucket) path.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path as LocalPath
from typing import Callable, Iterable, Iterator, Sequence

from array_record.python import array_record_module

from gesture_jax import storage
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
        # epath, not pathlib: pathlib turns "gs://b/x" into the local "gs:/b/x"
        self.shard = storage.Path(os.fspath(shard)) if shard is not None else None
        self.record = record


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` for ``split`` (CONTRACTS.md data.out layout)."""
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


def _tmp_path(path: storage.Path) -> storage.Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def _write_local(path: os.PathLike, records: Iterable[bytes]) -> int:
    writer = array_record_module.ArrayRecordWriter(os.fspath(path), WRITER_OPTIONS)
    n = 0
    try:
        for r in records:
            writer.write(r)
            n += 1
    finally:
        writer.close()
    return n


def write_records(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write ``records`` to an ArrayRecord file atomically; returns the record count.

    Local: a temporary file renamed into place. Bucket: a local temporary file uploaded
    when complete (the object appears whole or not at all)."""
    path = storage.path(path)
    if storage.is_remote(path):
        with storage.local_output(path) as local:
            return _write_local(local, records)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    n = _write_local(tmp, records)
    os.replace(tmp, path)
    return n


@contextlib.contextmanager
def _readable(path: storage.Path) -> Iterator[LocalPath]:
    """A local file with ``path``'s bytes (``path`` itself, or a downloaded copy of a bucket
    file, deleted afterwards); ShardError when there is no such file."""
    if not path.is_file():
        raise ShardError(f"{path}: file does not exist", shard=path)
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(storage.local_copy(path))
        except Exception as e:  # vanished between the check and the download, a bucket error
            raise ShardError(f"{path}: cannot be read ({type(e).__name__}: {e})", shard=path) from e
        yield local


def _open(path: storage.Path, local: os.PathLike, what: str = "not a readable ArrayRecord file"):
    try:
        return array_record_module.ArrayRecordReader(os.fspath(local))
    except Exception as e:  # the C++ layer raises RuntimeError/ValueError variously
        raise ShardError(f"{path}: {what} ({e})", shard=path) from e


def read_records(path: str | os.PathLike) -> list[bytes]:
    """Every record of an ArrayRecord file, in order."""
    path = storage.path(path)
    with _readable(path) as local:
        reader = _open(path, local)
        try:
            return list(reader.read_all()) if reader.num_records() else []
        except Exception as e:
            raise ShardError(f"{path}: unreadable ArrayRecord content ({e})", shard=path) from e
        finally:
            reader.close()


def _count(path: storage.Path, local: os.PathLike) -> int:
    reader = _open(path, local)
    try:
        return int(reader.num_records())
    except Exception as e:
        raise ShardError(f"{path}: not a readable ArrayRecord file ({e})", shard=path) from e
    finally:
        reader.close()


def count_records(path: str | os.PathLike) -> int:
    path = storage.path(path)
    with _readable(path) as local:
        return _count(path, local)


def _marker(local: LocalPath) -> LocalPath:
    return local.with_name(local.name + ".verified")


def local_shard(path: str | os.PathLike, num_bytes: int, sha256: str | None = None,
                fix: str = "re-run data_prep.prepare") -> LocalPath:
    """A local file with the bytes of shard ``path``, for ArrayRecord's reader (which needs one).

    A local shard is itself. A bucket shard is downloaded once into the local cache
    (:func:`gesture_jax.storage.staged`, ``$GESTURE_JAX_CACHE``) and reused while its size is
    ``num_bytes``. With the manifest's ``sha256`` the copy lives under a folder named by it
    (a re-prepared shard is never confused with an older copy) and is hashed once after each
    download: a copy that does not match is deleted and reported, so a damaged download or
    bucket object never stays in the cache.
    """
    path = storage.path(path)
    if not storage.is_remote(path):
        return LocalPath(os.fspath(path))
    cache = storage.default_cache() / "shards" / (sha256[:16] if sha256 else "unhashed")
    try:
        local = storage.staged(path, int(num_bytes), cache)
    except Exception as e:  # a local disk error, or the bucket's (gcsfs raises several types)
        raise ShardError(f"{path}: cannot be downloaded ({type(e).__name__}: {e}); {fix}", shard=path) from e
    if sha256 is None:
        return local
    st = local.stat()
    stamp = f"{sha256} {st.st_size} {st.st_mtime_ns}"
    mark = _marker(local)
    if mark.is_file() and mark.read_text() == stamp:
        return local
    if (have := sha256_file(local)) != sha256:
        local.unlink(missing_ok=True)
        raise ShardError(f"{path}: sha256 {have[:12]}... differs from manifest.json's {sha256[:12]}...: "
                         f"the shard changed after preparation; {fix}", shard=path)
    storage.write_atomic(mark, stamp)
    return local


def check_shard(path: str | os.PathLike, *, num_records: int, num_bytes: int,
                probe: Sequence[int] = (0, -1), fix: str = "re-run data_prep.prepare",
                sha256: str | None = None) -> list[bytes]:
    """Fail with a clear message unless ``path`` holds what the manifest says.

    Checks existence, byte size, record count, and that the ``probe`` records can be
    read (returned so the caller can also decode them). Cheap: no full hash of large shards.
    ``fix`` ends every message (the caller knows the command that prepared the data).
    A bucket shard is read from its local copy (:func:`local_shard`, which downloads it the
    first time and checks it against ``sha256``, the manifest's hash).
    """
    path = storage.path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard listed in manifest.json is missing; {fix}", shard=path)
    size = storage.size(path)
    if size != num_bytes:
        raise ShardError(f"{path}: {size} bytes but manifest.json says {num_bytes}: the shard is "
                         f"truncated or corrupt; {fix}", shard=path)
    local = local_shard(path, num_bytes, sha256, fix)
    try:
        reader = array_record_module.ArrayRecordReader(os.fspath(local))
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
    """Hex SHA-256 of a file's bytes (source hashes in the manifest); local or in a bucket."""
    h = hashlib.sha256()
    with storage.path(path).open("rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete (local or bucket)."""
    storage.write_atomic(path, data)


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
    path = storage.path(path)
    if not path.is_file():
        return "missing"
    if previous is not None and "sha256" in previous:
        if previous.get("num_records") != num_records:
            return f"manifest.json says {previous.get('num_records')} records, {num_records} expected"
        size = storage.size(path)
        if size != previous.get("num_bytes"):
            return f"{size} bytes, manifest.json says {previous.get('num_bytes')}"
        return None if sha256_file(path) == previous["sha256"] else "sha256 mismatch"
    try:
        with _readable(path) as local:  # one download of a bucket shard for both reads
            n = _count(path, local)
            if n == num_records:
                _scan(path, local)  # its hash is about to be recorded: it must not bless a damaged file
    except ShardError as e:
        return f"unreadable ({str(e).removeprefix(f'{path}: ')})"
    return None if n == num_records else f"{n} records, {num_records} expected"


def scan_records(path: str | os.PathLike) -> None:
    """Read every record of ``path`` once (ArrayRecord verifies its chunk checksums while
    reading); ShardError naming the first unreadable record. One record at a time: shards
    of long windows are hundreds of MB."""
    path = storage.path(path)
    with _readable(path) as local:
        _scan(path, local)


def _scan(path: storage.Path, local: os.PathLike) -> None:
    reader = _open(path, local)
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
    path = storage.path(path)
    return {"path": path.name, "num_records": num_records, "num_bytes": storage.size(path),
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
    data_out = storage.path(data_out)
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
