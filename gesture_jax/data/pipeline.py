"""Grain input pipeline over the prepared ArrayRecord shards.

    it = make_iterator(cfg, "train", batch_size=16, seed=0)
    batch = next(it)        # {"motion": [B,T,F] float32, "audio": [B,T,A] float32}
    state = it.get_state()  # JSON-able dict; it.set_state(state) resumes exactly

Order of operations and why:
  source (all shards of the split, record index order fixed by preparation)
  -> per-process strided slice, trimmed so every process has the same number of windows
     (hosts then run the same number of steps; no collective waits on a missing batch)
  -> index shuffle with ``seed`` (a different permutation per epoch, no buffer)
  -> repeat (``num_epochs=None``: forever)
  -> decode (+ optional random crop of ``data.random_crop_s``, seeded per index)
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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import ml_collections
import numpy as np

from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import records


class DecodeWindow(grain.transforms.Map):
    """Record bytes -> {"motion": [T,F] float32, "audio": [T,A] float32}."""

    def map(self, raw: bytes) -> dict[str, np.ndarray]:
        w = records.decode_window(raw)
        # motion stays a read-only view of the record (batching copies it once)
        return {"motion": np.asarray(w["motion"], np.float32), "audio": w["audio"].astype(np.float32)}


class RandomCrop(grain.transforms.RandomMap):
    """Crop motion and audio to the same ``length`` frames at a random offset."""

    def __init__(self, length: int):
        self.length = int(length)

    def random_map(self, x: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        T = x["motion"].shape[0]
        start = int(rng.integers(0, T - self.length + 1))
        return {k: v[start:start + self.length] for k, v in x.items()}


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
                 data_out: str | Path | None = None, random_crop: bool | None = None,
                 ) -> grain.IterDataset:
    """The Grain dataset behind :func:`make_iterator` (same arguments)."""
    data_out = Path(data_out or cfg.data.out)
    m = manifest_lib.load_manifest(data_out, cfg)
    paths = manifest_lib.check_split(data_out, m, split)
    pi, pc = _process_index_count(process_index, process_count)

    ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource([str(p) for p in paths]))
    per_process = len(ds) // pc
    if per_process == 0:
        raise manifest_lib.ManifestError(f"{data_out}: split {split!r} has {len(ds)} windows, fewer "
                                         f"than the {pc} processes reading it")
    ds = ds[pi:per_process * pc:pc]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    ds = ds.map(DecodeWindow())
    crop = (split == "train") if random_crop is None else random_crop
    if crop and cfg.data.random_crop_s > 0:
        length = manifest_lib.seconds_to_frames(cfg.data.random_crop_s, cfg.data.fps, "random_crop_s")
        ds = ds.random_map(RandomCrop(length), seed=seed + 1)
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
                  data_out: str | Path | None = None, random_crop: bool | None = None,
                  ) -> grain.DatasetIterator:
    """Checkpointable iterator of batches {"motion": [B,T,F] f32, "audio": [B,T,A] f32}.

    ``process_index``/``process_count`` default to jax.process_index()/process_count();
    each process reads a disjoint, equally long part of the split. ``random_crop``
    defaults to on for "train" when ``data.random_crop_s`` > 0.
    Raises ManifestError/ShardError before any batch when the data does not fit ``cfg``.
    """
    return iter(make_dataset(cfg, split, batch_size=batch_size, seed=seed,
                             process_index=process_index, process_count=process_count,
                             num_epochs=num_epochs, shuffle=shuffle, drop_remainder=drop_remainder,
                             data_out=data_out, random_crop=random_crop))


def dataset_info(cfg: ml_collections.ConfigDict, data_out: str | Path | None = None) -> dict[str, Any]:
    """Shapes training needs: {"motion_dim", "audio_dim", "window_frames", "fps", "num_windows"}."""
    m = manifest_lib.load_manifest(Path(data_out or cfg.data.out), cfg)
    T = m["window_frames"]
    if cfg.data.random_crop_s > 0:
        T = manifest_lib.seconds_to_frames(cfg.data.random_crop_s, cfg.data.fps, "random_crop_s")
    return {"motion_dim": m["motion"]["feature_dim"], "audio_dim": m["audio"]["dim"],
            "window_frames": T, "fps": m["fps"],
            "num_windows": {k: v["num_windows"] for k, v in m["splits"].items()}}
