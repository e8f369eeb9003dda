"""Grain input pipeline over the prepared ArrayRecord shards.

    it = make_iterator(cfg, "train", batch_size=16, seed=0)
    batch = next(it)        # {"motion": [B,T,F] float32, "audio": [B,Ta,A] float32}

Audio is at the manifest's ``audio.rate`` (Ta = T at the motion rate; 999 for T=400 with WavLM
at 50 Hz, see ``gesture_jax.audio.frames``).
    state = it.get_state()  # JSON-able dict; it.set_state(state) resumes exactly

Order of operations and why:
  source (all shards of the split, record index order fixed by preparation; reads and
     decodes a record when asked, see :class:`WindowSource`)
  -> per-process strided slice, trimmed so every process has the same number of windows
     (hosts then run the same number of steps; no collective waits on a missing batch)
  -> index shuffle with ``seed`` (a different permutation per epoch, no buffer)
  -> repeat (``num_epochs=None``: forever)
  -> optional random crop of ``data.random_crop_s``, seeded per index
  -> batch (drop_remainder: static shapes for jit)
  -> iterator with read-ahead threads; ``data.grain_workers`` > 0 adds worker processes.
Every step is a deterministic function of (seed, position), which is what makes
``get_state``/``set_state`` exact.

Checkpointing with Orbax (orbax-checkpoint 0.12.8, grain 0.2.18): the iterator returned
here is a ``grain.DatasetIterator``, so it plugs into ``grain.checkpoint.CheckpointHandler``
(registered with Orbax's args API on import of ``grain.checkpoint``):

    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(train_state),
                                           data=grain.checkpoint.CheckpointSave(it)))
    mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                               data=grain.checkpoint.CheckpointRestore(it)))

The handler writes ``process_{i}-of-{n}.json`` per host (i, n from jax), i.e. one state
per process. Alternatively save ``it.get_state()`` (a small JSON-able dict) yourself with
``ocp.args.JsonSave``.

Data in a bucket (``data.out=gs://...``): ArrayRecord reads local files only, so every
shard of the split is downloaded once into the local cache at the quick check
(``shards.local_shard``: ``$GESTURE_JAX_CACHE``, default ``~/.cache/gesture_jax``; checked
against the manifest's size and sha256) and read from there; errors still name the bucket
shard.

Damaged data: a record that cannot be read or decoded, or has the wrong shape, raises
``shards.ShardError`` from ``next(it)`` (attributes ``shard``, ``record``) whose message names
the shard file, the record inside it, the reason and the command that re-creates the shard.
With read-ahead threads and with ``data.grain_workers`` > 0 (grain 0.2.18) that same
exception reaches the caller: Grain re-raises a worker's exception after pickling it, and
ShardError pickles with its attributes. Call :func:`data_error` on whatever ``next(it)``
raised to get the ShardError even if a Grain version wraps or chains it.
"""
from __future__ import annotations

import bisect
import itertools
import os
import threading
from typing import Any, Sequence

import grain
import ml_collections
import numpy as np
from array_record.python import array_record_module

from gesture_jax import storage
from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import shards


class WindowSource:
    """Random access over a split's shards: global index -> decoded, shape-checked window.

    Replaces ``grain.sources.ArrayRecordDataSource`` + a decode map so that any fault is
    reported where the index is still known: as a ShardError naming the shard file, the
    record inside it and the command that re-creates it (``fix``), instead of ArrayRecord's
    "chunk data hash mismatch ... at byte N" that names no file. Shards are opened lazily,
    one thread-safe reader each (ArrayRecord readers are safe to share between threads);
    readers are not pickled, so Grain worker processes open their own.

    ``paths`` name the shards (in messages); ``local_paths`` are the local files the readers
    open, e.g. staged copies of bucket shards (:func:`shards.local_shard`). Without them a
    bucket shard is staged when first read.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], counts: list[int],
                 shapes: tuple[tuple[int, int], tuple[int, int]], fix: str,
                 local_paths: Sequence[str | os.PathLike] | None = None):
        self.paths = [storage.path(p) for p in paths]
        self.local_paths: list[Any] = ([os.fspath(p) for p in local_paths] if local_paths is not None
                                       else [None if storage.is_remote(p) else os.fspath(p) for p in self.paths])
        self.shapes = shapes
        self.fix = fix
        self._ends = list(itertools.accumulate(int(n) for n in counts))
        self._readers: list[Any] = [None] * len(self.paths)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def locate(self, index: int) -> tuple[int, int]:
        """Global record index -> (shard number, record index inside that shard)."""
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} not in [0, {len(self)})")
        k = bisect.bisect_right(self._ends, index)
        return k, index - (self._ends[k - 1] if k else 0)

    def _reader(self, k: int):
        if self._readers[k] is None:
            with self._lock:
                if self._readers[k] is None:
                    if self.local_paths[k] is None:  # a bucket shard nobody staged yet
                        self.local_paths[k] = os.fspath(storage.staged(self.paths[k]))
                    # random access: no read-ahead (what grain's ArrayRecordDataSource uses)
                    self._readers[k] = array_record_module.ArrayRecordReader(
                        self.local_paths[k], "readahead_buffer_size:0", file_reader_buffer_size=32768)
        return self._readers[k]

    def read(self, k: int, i: int) -> bytes:
        """Raw record ``i`` of shard ``k``; any failure to open or read it is a ShardError naming both."""
        try:
            return self._reader(k).read([i])[0]
        except Exception as e:  # the C++ layer raises RuntimeError/ValueError/OSError variously
            raise shards.ShardError(f"{self.paths[k]}: record {i} is corrupt ({e}); {self.fix}",
                                    shard=self.paths[k], record=i) from e

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """{"motion": [T,F] float32, "audio": [Ta,A] float32} of record ``index`` (global)."""
        k, i = self.locate(int(index))
        w = manifest_lib.checked_window(self.read(k, i), shard=self.paths[k], record=i,
                                        shapes=self.shapes, fix=self.fix)
        # motion stays a read-only view of the record (batching copies it once)
        return {"motion": np.asarray(w["motion"], np.float32), "audio": w["audio"].astype(np.float32)}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = [None] * len(self.paths)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def split_source(data_out: str | os.PathLike, m: dict[str, Any], split: str) -> WindowSource:
    """:class:`WindowSource` over ``split`` after the quick check (``manifest.check_split``, which
    also stages bucket shards to local disk; the source reads those copies)."""
    paths = manifest_lib.check_split(data_out, m, split)
    entries = m["splits"][split]["shards"]
    fix = manifest_lib.repair_hint(m, data_out)
    local = [shards.local_shard(p, s["num_bytes"], s.get("sha256"), fix) for p, s in zip(paths, entries)]
    return WindowSource(paths, [s["num_records"] for s in entries], manifest_lib.record_shapes(m), fix, local)


def data_error(e: BaseException) -> shards.ShardError | None:
    """The ShardError behind an exception ``next(iterator)`` raised, or None when it is not one.

    Looks through ``__cause__``/``__context__`` chains (and ``ExceptionGroup`` members), so
    training can report the damaged shard even if Grain wraps the worker's exception:

        try:
            batch = next(it)
        except Exception as e:
            if (err := pipeline.data_error(e)) is not None:
                raise err from None
            raise
    """
    seen: set[int] = set()
    todo = [e]
    while todo:
        x = todo.pop(0)
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, shards.ShardError):
            return x
        todo += [x.__cause__, x.__context__, *getattr(x, "exceptions", ())]
    return None


class RandomCrop(grain.transforms.RandomMap):
    """Crop motion to ``length`` frames at a random offset c, and audio to the same span.

    Audio at ``rate`` frames/s (motion at ``fps``): the record's audio frames from
    floor(c*rate/fps), audio_frames_for(length) of them (``gesture_jax.audio.frames.audio_window``,
    always inside the record's). Exactly the seconds of the motion crop when the record's own
    audio starts on the motion grid (start_frame*rate/fps whole: any stride of whole 0.1 s at
    20 fps / 50 Hz); rate == fps (the default): the same frames as the motion.
    """

    def __init__(self, length: int, fps: float = 1.0, rate: float | None = None):
        self.length, self.fps = int(length), float(fps)
        self.rate = self.fps if rate is None else float(rate)

    def random_map(self, x: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        from gesture_jax.audio.frames import audio_window

        T = x["motion"].shape[0]
        start = int(rng.integers(0, T - self.length + 1))
        a0, n = audio_window(start, self.length, self.fps, self.rate)
        return {k: (v[a0:a0 + n] if k == "audio" else v[start:start + self.length]) for k, v in x.items()}


def _ensure_absl_flags_parsed() -> None:
    """Grain's worker processes read absl flags; outside an absl app (tests, notebooks) they
    are unparsed and every worker dies with UnparsedFlagAccessError. Mark them parsed with
    their defaults (a no-op under absl.app.run, which already parsed them)."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _process_index_count(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # only when the caller does not say: keeps tools that read data jax-free
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


def make_dataset(cfg: ml_collections.ConfigDict, split: str, *, batch_size: int, seed: int,
                 process_index: int | None = None, process_count: int | None = None,
                 num_epochs: int | None = None, shuffle: bool = True, drop_remainder: bool = True,
                 data_out: str | os.PathLike | None = None, random_crop: bool | None = None,
                 ) -> grain.IterDataset:
    """The Grain dataset behind :func:`make_iterator` (same arguments)."""
    data_out = storage.path(data_out or cfg.data.out)
    m = manifest_lib.load_manifest(data_out, cfg)
    source = split_source(data_out, m, split)
    pi, pc = _process_index_count(process_index, process_count)

    ds = grain.MapDataset.source(source)
    per_process = len(ds) // pc
    if per_process == 0:
        raise manifest_lib.ManifestError(f"{data_out}: split {split!r} has {len(ds)} windows, fewer "
                                         f"than the {pc} processes reading it")
    ds = ds[pi:per_process * pc:pc]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    crop = (split == "train") if random_crop is None else random_crop
    if crop and cfg.data.random_crop_s > 0:
        length = manifest_lib.seconds_to_frames(cfg.data.random_crop_s, cfg.data.fps, "random_crop_s")
        ds = ds.random_map(RandomCrop(length, float(m["fps"]), manifest_lib.audio_rate(m)), seed=seed + 1)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ahead = max(1, int(cfg.data.prefetch))  # batches read ahead by as many threads
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=ahead, prefetch_buffer_size=ahead))
    if cfg.data.grain_workers > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg.data.grain_workers)))
    return it_ds


def make_iterator(cfg: ml_collections.ConfigDict, split: str, *, batch_size: int, seed: int,
                  process_index: int | None = None, process_count: int | None = None,
                  num_epochs: int | None = None, shuffle: bool = True, drop_remainder: bool = True,
                  data_out: str | os.PathLike | None = None, random_crop: bool | None = None,
                  ) -> grain.DatasetIterator:
    """Checkpointable iterator of batches {"motion": [B,T,F] f32, "audio": [B,Ta,A] f32} (Ta: see module doc).

    ``process_index``/``process_count`` default to jax.process_index()/process_count();
    each process reads a disjoint, equally long part of the split. ``random_crop``
    defaults to on for "train" when ``data.random_crop_s`` > 0.
    Raises ManifestError/ShardError before any batch when the data does not fit ``cfg``, and
    ShardError from ``next`` for a damaged record (see the module docstring and :func:`data_error`).
    """
    return iter(make_dataset(cfg, split, batch_size=batch_size, seed=seed,
                             process_index=process_index, process_count=process_count,
                             num_epochs=num_epochs, shuffle=shuffle, drop_remainder=drop_remainder,
                             data_out=data_out, random_crop=random_crop))


def dataset_info(cfg: ml_collections.ConfigDict, data_out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Shapes training needs: {"motion_dim", "audio_dim", "window_frames", "fps", "audio_fps",
    "audio_frames", "num_windows"}; audio_fps: frames/s of the batches' audio (manifest audio.rate),
    audio_frames: audio frames per (cropped) window."""
    m = manifest_lib.load_manifest(storage.path(data_out or cfg.data.out), cfg)
    T = m["window_frames"]
    if cfg.data.random_crop_s > 0:
        T = manifest_lib.seconds_to_frames(cfg.data.random_crop_s, cfg.data.fps, "random_crop_s")
    return {"motion_dim": m["motion"]["feature_dim"], "audio_dim": m["audio"]["dim"],
            "window_frames": T, "fps": m["fps"], "audio_fps": manifest_lib.audio_rate(m),
            "audio_frames": manifest_lib.audio_window_frames(m, T),
            "num_windows": {k: v["num_windows"] for k, v in m["splits"].items()}}
