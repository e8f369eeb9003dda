"""Where files live: one path type for local disks and buckets (``gs://``, ``s3://``).

A TPU pod has no shared disk: every host must read the same shards and write the same
checkpoints, so runs and prepared data live in a bucket. Every path a user gives is turned
into an :class:`etils.epath.Path` by :func:`path` (the type Orbax already uses), never a
``pathlib.Path``: ``Path("gs://b/run").absolute()`` is the local folder ``./gs:/b/run``
(and so is epath's own ``.resolve()`` of a gs:// path: use :func:`path`, never ``resolve()``).

Object stores differ from disks in three ways this module hides:

- **No rename.** An object appears whole or not at all once its upload finishes, so a
  remote :func:`write_atomic` writes the final name directly; on disk it writes a temporary
  file and renames it, as before. Readers never see half a file either way.
- **No append.** :func:`append_text` rewrites the object (metrics files are small).
- **Libraries that want a local file** (ArrayRecord's C++ reader and writer, ffmpeg,
  TensorBoard's writer): :func:`local_copy` downloads an input to a temporary file,
  :func:`local_output` uploads an output when the block ends, and :func:`staged` keeps
  a verified local copy of a bucket file in a cache folder (ArrayRecord shards are read
  at random by index, which a bucket cannot serve efficiently).

gs:// goes through ``gcsfs`` (fsspec) for files and through TensorStore's own GCS driver
for Orbax's arrays; both use Application Default Credentials (``gcloud auth application-
default login``, or a TPU VM's service account). Tests point both at a local emulator
(``STORAGE_EMULATOR_HOST`` and ``TENSORSTORE_GCS_HTTP_URL``; see tests/gcs_emulator.py).
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path as LocalPath
from typing import Iterator

from etils import epath

Path = epath.Path
PathLike = str | os.PathLike

# fsspec logs every cached read at INFO, which absl's handler (train/generate) prints: one
# line per file read from a bucket.
logging.getLogger("fsspec").setLevel(logging.WARNING)

_SCHEMES = ("gs://", "s3://", "az://", "hf://")


def is_remote(p: PathLike) -> bool:
    """True for a bucket URL (gs://, s3://, ...), False for a local path."""
    return os.fspath(p).startswith(_SCHEMES)


def path(p: PathLike) -> epath.Path:
    """The user's path as an epath.Path: local paths expanded (~) and made absolute, so a
    run records where it really is; bucket URLs kept as they are."""
    s = os.fspath(p)
    if is_remote(s):
        return epath.Path(s)
    return epath.Path(os.path.abspath(os.path.expanduser(s)))


def size(p: PathLike) -> int:
    """Size in bytes of a file, local or remote."""
    q = path(p)
    if not is_remote(q):
        return os.stat(os.fspath(q)).st_size
    return int(q.stat().length)


def write_atomic(p: PathLike, data: bytes | str) -> None:
    """Write a whole file so that no reader ever sees part of it (see the module note)."""
    q = path(p)
    raw = data.encode() if isinstance(data, str) else data
    q.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(q):
        q.write_bytes(raw)
        return
    tmp = q.with_name(f"{q.name}.tmp-{os.getpid()}")
    with open(os.fspath(tmp), "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(os.fspath(tmp), os.fspath(q))


def append_text(p: PathLike, text: str) -> None:
    """Append ``text`` to a file; a bucket object is rewritten whole (it has no append)."""
    q = path(p)
    if not is_remote(q):
        with open(os.fspath(q), "a") as f:
            f.write(text)
        return
    old = q.read_text() if q.exists() else ""
    q.write_text(old + text)


def remove_tree(p: PathLike) -> None:
    """Delete a folder and everything under it (no error when absent)."""
    q = path(p)
    if not is_remote(q):
        shutil.rmtree(os.fspath(q), ignore_errors=True)
    elif q.exists():
        q.rmtree()


def walk_files(root: PathLike, pattern: str = "*") -> list[epath.Path]:
    """Every file under ``root`` (recursively) whose name matches ``pattern``, sorted.
    (epath refuses ``rglob`` on buckets; a walk lists each folder once.)"""
    r = path(root)
    if not r.is_dir():
        return []
    scheme = os.fspath(r).split("://")[0] + "://" if is_remote(r) else ""
    out = []
    for dirpath, _, files in r.walk():
        d = os.fspath(dirpath)
        if scheme and not d.startswith(scheme):   # gcsfs walks without the scheme
            d = scheme + d.lstrip("/")
        out.extend(epath.Path(d) / f for f in files if fnmatch.fnmatchcase(f, pattern)
                   and (scheme or os.path.isfile(os.path.join(d, f))))   # not a broken symlink
    return sorted(out, key=os.fspath)


def copy_file(src: PathLike, dst: PathLike) -> None:
    """Copy one file between any two places (disk or bucket); the destination appears whole."""
    s, d = path(src), path(dst)
    d.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(s) or is_remote(d):
        write_atomic(d, s.read_bytes())
    else:
        shutil.copy2(os.fspath(s), os.fspath(d))


def copy_tree(src: PathLike, dst: PathLike) -> None:
    """Copy every file under ``src`` to the same relative place under ``dst``."""
    s, d = path(src), path(dst)
    d.mkdir(parents=True, exist_ok=True)   # an empty folder too (a no-op on a bucket)
    for f in walk_files(s):
        rel = os.fspath(f)[len(os.fspath(s)):].lstrip("/")
        copy_file(f, d / rel)


def move_tree(src: PathLike, dst: PathLike) -> None:
    """Move a folder: a rename on disk; a copy then a delete on a bucket (which has no
    rename), so an interruption leaves the source whole."""
    s, d = path(src), path(dst)
    if not (is_remote(s) or is_remote(d)):
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(s), os.fspath(d))
        return
    copy_tree(s, d)
    remove_tree(s)


@contextlib.contextmanager
def local_copy(p: PathLike) -> Iterator[LocalPath]:
    """A local file with the contents of ``p`` for the duration of the block (``p`` itself
    when it is local; a downloaded temporary copy, deleted afterwards, when remote)."""
    q = path(p)
    if not is_remote(q):
        yield LocalPath(os.fspath(q))
        return
    with tempfile.TemporaryDirectory(prefix="gesture_jax-") as tmp:
        local = LocalPath(tmp) / q.name
        q.copy(epath.Path(local))
        yield local


@contextlib.contextmanager
def local_output(p: PathLike) -> Iterator[LocalPath]:
    """A local file name to write ``p`` through: ``p`` itself when local; for a bucket, a
    temporary file uploaded to ``p`` when the block ends without error."""
    q = path(p)
    if not is_remote(q):
        q.parent.mkdir(parents=True, exist_ok=True)
        yield LocalPath(os.fspath(q))
        return
    with tempfile.TemporaryDirectory(prefix="gesture_jax-") as tmp:
        local = LocalPath(tmp) / q.name
        yield local
        q.parent.mkdir(parents=True, exist_ok=True)
        epath.Path(local).copy(q, overwrite=True)


def default_cache() -> LocalPath:
    """Local folder for staged copies of bucket files ($GESTURE_JAX_CACHE, else
    ~/.cache/gesture_jax)."""
    env = os.environ.get("GESTURE_JAX_CACHE")
    return LocalPath(env) if env else LocalPath.home() / ".cache" / "gesture_jax"


def staged(p: PathLike, expected_size: int | None = None, cache: PathLike | None = None) -> LocalPath:
    """A local path holding the bytes of ``p``: ``p`` itself when local; for a bucket file,
    a copy under the cache folder (keyed by its URL), downloaded once and reused while its
    size still matches. The download goes to a temporary name and is renamed, so processes
    sharing one cache never read a partial copy."""
    q = path(p)
    if not is_remote(q):
        return LocalPath(os.fspath(q))
    want = size(q) if expected_size is None else int(expected_size)
    key = hashlib.sha1(os.fspath(q).encode()).hexdigest()[:16]
    root = LocalPath(cache) if cache is not None else default_cache()
    local = root / "staged" / key / q.name
    if local.is_file() and local.stat().st_size == want:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f"{local.name}.tmp-{os.getpid()}")
    q.copy(epath.Path(tmp), overwrite=True)
    os.replace(tmp, local)
    return local
