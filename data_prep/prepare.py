"""Prepare a dataset: paired BVH + WAV files -> ArrayRecord window shards + manifest.json.

    python -m data_prep.prepare --config=configs/<beat|zeggs|trinity|demo>.py \\
        [--config.data.root=SRC --config.data.out=DST] [--num_shards=N --shard_index=i]

Stages (each file's result is written atomically under ``DST/work/``, so a killed run
restarted with the same command skips finished files and ends with the same bytes):

 1. discover + pair (data_prep.datasets), splits by holdout; unpaired / misnamed files
    are listed in the manifest's ``skipped``, never fatal. A fingerprint of the settings
    and the file list is kept in ``work/fingerprint.json``; rerunning into the same DST
    with other settings is refused instead of silently mixing results.
 2. per training file: read BVH, check the WAV, the ``data.representation`` pipeline's ``file_stats`` (plain and
    mirrored) -> ``work/stats/<id>.npz``. Unreadable files -> ``work/stats/<id>.error.json``.
 3. fit the motion pipeline on the training stats only (``fit_from_stats``, files in
    natural order) -> ``DST/motion_pipeline/``.
 4. per file: motion features (and mirrored copy for train), audio features
    (``make_extractor(cfg.audio, fps)``: frame k <-> k/fps, or WavLM's own 50 Hz frames with
    ``audio.native_rate``, frame j <-> j/50), windows of ``window_s`` with ``stride_s`` (test:
    ``test_stride_s``); a window of motion frames [s, s+T) holds the audio frames of the same span
    (``gesture_jax.audio.frames.audio_window``: from floor(s*rate/fps), 999 for 20 s at 50 Hz).
    Only windows whose motion and audio are both complete are kept (the end of a file is never
    padded). Encoded records -> ``work/windows/<id>.array_record``
    + ``<id>.json`` (written last: its presence marks the file done).
 5. (shard_index 0) concatenate the windows of each split in natural file order (for
    train: each file's plain windows, then its mirrored ones) into
    ``{split}-{i:05d}-of-{n:05d}.array_record`` of ``data.records_per_shard`` windows,
    then ``manifest.json`` (with each shard's sha256, and the command line that ran, so
    that errors about a damaged shard can name the command that re-creates it).
    On a rerun, a shard whose bytes no longer match the earlier manifest's sha256 (or
    that is missing, or of another size) is rewritten and reported; intact ones are not
    touched.

Parallelism: stages 2 and 4 run in ``data.num_workers`` processes (0 = every core; 1 =
in this process). Several machines sharing DST: run the same command with
``--num_shards=N --shard_index=i`` on each; machine i takes files i, i+N, ... (natural
order over all splits). A machine that needs results of another (the fit needs every
training file's stats; shard_index 0 assembles the shards) polls for them for up to
``--wait_s`` seconds; rerun it once the others finish if it gave up.

``DST/work/`` (per-file results, about the size of the shards) is what makes reruns
cheap; it may be deleted once ``manifest.json`` exists (a rerun then recomputes
everything and writes the same bytes).

WavLM features on a GPU: every worker process loads the encoder, so use
``--config.data.num_workers=1`` there (workers do not preallocate GPU memory).

Buckets: ``data.root`` and ``data.out`` may each be a local folder or a bucket URL
(``gs://...``, through ``gesture_jax.storage``; several machines then share ``data.out``
without a shared disk). Every file above is still written whole: on a bucket an object
appears only once its upload completes, so files are written under their final names
(no renames: a bucket has none), and each completion marker (``<id>.json``,
``motion_pipeline/pipeline.json``, ``manifest.json``) is written after what it marks.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shlex
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
import sys
import time
from pathlib import Path as LocalPath
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from data_prep import datasets, stats_io
from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import records, shards
from gesture_jax import errors, storage
from gesture_jax.errors import UserError
from gesture_jax.storage import Path

# data.* keys that do not change the prepared bytes (paths, training-time reading options)
_NOT_FINGERPRINTED = {"root", "out", "num_workers", "random_crop_s", "grain_workers", "prefetch",
                      "shuffle_buffer", "synthetic"}
POLL_S = 5.0


class PrepareError(UserError, RuntimeError):
    """Preparation cannot go on (wrong folder, mismatched earlier run, no usable files)."""


# ----------------------------------------------------------------------------- helpers

def _work(out: Path) -> Path:
    return out / "work"


def _stats_path(out: Path, fid: str) -> Path:
    return _work(out) / "stats" / f"{fid}.npz"


def _stats_error_path(out: Path, fid: str) -> Path:
    return _work(out) / "stats" / f"{fid}.error.json"


def _win_records_path(out: Path, fid: str) -> Path:
    return _work(out) / "windows" / f"{fid}.array_record"


def _win_meta_path(out: Path, fid: str) -> Path:
    return _work(out) / "windows" / f"{fid}.json"


def _json_bytes(x: Any) -> bytes:
    return (json.dumps(x, indent=1, sort_keys=True) + "\n").encode()


def fingerprint(cfg: ml_collections.ConfigDict, splits: dict[str, list[datasets.SourcePair]]) -> dict:
    """What the prepared bytes depend on, besides the source files' contents."""
    data = {k: v for k, v in manifest_lib.config_to_json(cfg)["data"].items() if k not in _NOT_FINGERPRINTED}
    audio = {k: v for k, v in manifest_lib.config_to_json(cfg)["audio"].items() if k != "wavlm_dir"}
    files = [[p.file_id, s, p.bvh, p.wav] for s, ps in sorted(splits.items()) for p in ps]
    return {"data": data, "audio": audio, "files": files, "record_schema_version": records.SCHEMA_VERSION}


def _check_fingerprint(out: Path, fp: dict) -> None:
    path = _work(out) / "fingerprint.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != fp:
            diff = sorted(f"{k}.{kk}" if isinstance(fp.get(k), dict) else k
                          for k in set(old) | set(fp) if old.get(k) != fp.get(k)
                          for kk in ((set(old.get(k) or {}) | set(fp.get(k) or {})) if isinstance(fp.get(k), dict) else [""])
                          if not isinstance(fp.get(k), dict) or (old.get(k) or {}).get(kk) != fp[k].get(kk))
            raise PrepareError(f"{out} holds a preparation with other settings or source files "
                               f"(differs in {diff}); delete {out} or choose another data.out")
    else:
        shards.atomic_write_bytes(path, _json_bytes(fp))


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of full windows: 0, stride, ... while start + window <= num_frames."""
    return list(range(0, num_frames - window + 1, stride)) if num_frames >= window else []


# ------------------------------------------------------------------ per-process workers
# Each worker process builds the (unfitted or fitted) motion pipeline and the audio
# extractor once and keeps them in _STATE.

_STATE: dict[str, Any] = {}


def _init_worker(cfg_dict: dict, out: str) -> None:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    _STATE.clear()
    _STATE["cfg"] = ml_collections.ConfigDict(cfg_dict)
    _STATE["out"] = storage.path(out)


def _root() -> Path:
    return storage.path(_STATE["cfg"].data.root)


def _unfitted_pipeline():
    if "pipe0" not in _STATE:
        from gesture_jax.motion.representations import pipeline_from_config
        _STATE["pipe0"] = pipeline_from_config(_STATE["cfg"].data)
    return _STATE["pipe0"]


def _fitted_pipeline():
    if "pipe" not in _STATE:
        from gesture_jax.motion.representations import load_pipeline
        _STATE["pipe"] = load_pipeline(_STATE["out"] / manifest_lib.PIPELINE_DIR)
    return _STATE["pipe"]


def _extractor():
    if "extractor" not in _STATE:
        from gesture_jax.audio.features import make_extractor
        cfg = _STATE["cfg"]
        _STATE["extractor"] = make_extractor(cfg.audio, cfg.data.fps)
    return _STATE["extractor"]


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def stats_job(pair: datasets.SourcePair) -> tuple[str, str | None]:
    """Stage 2 for one training file. Returns (file_id, error or None)."""
    from gesture_jax.audio.io import load_audio
    from gesture_jax.motion.bvh import read_bvh
    cfg, out = _STATE["cfg"], _STATE["out"]
    try:
        bvh = read_bvh(_root() / pair.bvh)
        load_audio(_root() / pair.wav, sr=cfg.audio.sample_rate)  # unreadable audio: skip the take
        pipe = _unfitted_pipeline()
        stats = [pipe.file_stats(bvh, mirror=False)]
        if cfg.data.mirror:
            stats.append(pipe.file_stats(bvh, mirror=True))
        shards.atomic_write_bytes(_stats_path(out, pair.file_id), stats_io.stats_to_bytes(stats))
        return pair.file_id, None
    except Exception as e:  # any unreadable source is reported and skipped, never fatal
        err = {"path": pair.bvh, "reason": _reason(e)}
        shards.atomic_write_bytes(_stats_error_path(out, pair.file_id), _json_bytes(err))
        return pair.file_id, err["reason"]


def windows_job(item: tuple[datasets.SourcePair, str]) -> tuple[str, str | None]:
    """Stage 4 for one file of any split. Returns (file_id, error or None)."""
    from gesture_jax.audio.features import feature_rate
    from gesture_jax.audio.frames import audio_window, motion_frames_covered
    from gesture_jax.audio.io import load_audio
    from gesture_jax.motion.bvh import read_bvh
    pair, split = item
    cfg, out = _STATE["cfg"], _STATE["out"]
    d = cfg.data
    meta: dict[str, Any] = {"file_id": pair.file_id, "split": split, "bvh": pair.bvh, "wav": pair.wav}
    try:
        sha = {"bvh": shards.sha256_file(_root() / pair.bvh), "wav": shards.sha256_file(_root() / pair.wav)}
        bvh = read_bvh(_root() / pair.bvh)
        wave = load_audio(_root() / pair.wav, sr=cfg.audio.sample_rate)
        pipe, ext = _fitted_pipeline(), _extractor()
        rate = feature_rate(ext)                                        # audio frames/s (fps unless native)
        audio = np.asarray(ext(wave), np.float32)                      # [M, A] at rate
        variants = [False] + ([True] if split == "train" and d.mirror else [])
        motions = [np.asarray(pipe.transform(bvh, mirror=m), np.float32) for m in variants]  # [N, F]
        # motion frames that have audio: every window inside them has all its audio frames
        n_frames = min(motions[0].shape[0], motion_frames_covered(audio.shape[0], d.fps, rate))
        T = manifest_lib.window_frames(d)
        stride_s = d.test_stride_s if split == "test" else d.stride_s
        starts = window_starts(n_frames, T, manifest_lib.seconds_to_frames(stride_s, d.fps, "stride_s"))
        spans = {s: audio_window(s, T, d.fps, rate) for s in starts}   # {s: (first audio frame, count)}
        recs = [records.encode_window({"motion": mo[s:s + T], "audio": audio[a0:a0 + n], "file_id": pair.file_id,
                                       "start_frame": s, "mirrored": mir}, audio_frames=n)
                for mir, mo in zip(variants, motions) for s, (a0, n) in spans.items()]
        shards.write_records(_win_records_path(out, pair.file_id), recs)
        meta.update(status="ok", sha256=sha, motion_frames=int(motions[0].shape[0]),
                    audio_frames=int(audio.shape[0]), num_frames=int(n_frames), num_windows=len(recs),
                    audio_feature=ext.name, audio_dim=int(ext.dim), audio_rate=float(rate))
        if not starts:
            meta.update(status="skipped", reason=f"shorter than one window ({n_frames} < {T} frames)")
        elif abs(motions[0].shape[0] - motion_frames_covered(audio.shape[0], d.fps, rate)) > d.fps:
            meta["warning"] = (f"motion has {motions[0].shape[0]} frames and audio {audio.shape[0]} "
                               f"at {rate:g} frames/s; windows use the common start")
    except Exception as e:  # any unreadable source is reported and skipped, never fatal
        meta.update(status="skipped", reason=_reason(e))
    shards.atomic_write_bytes(_win_meta_path(out, pair.file_id), _json_bytes(meta))
    return pair.file_id, meta.get("reason")


class _Workers:
    """data.num_workers processes (1: this process) shared by the stats and window stages.

    One pool for both stages: a spawned worker pays the library imports once (seconds on
    a busy machine). Created on first use, so a run with nothing left to do starts none.
    """

    def __init__(self, cfg: ml_collections.ConfigDict, out: Path, max_jobs: int, progress: bool):
        n = cfg.data.num_workers or os.cpu_count() or 1
        self.n = max(1, min(n, max_jobs))
        self.args = (cfg.to_dict(), os.fspath(out))
        self.progress = progress
        self.pool = None
        if self.n == 1:
            _init_worker(*self.args)

    def run(self, fn: Callable, items: Sequence, desc: str) -> None:
        """``fn`` over ``items`` with a progress bar; skipped files are printed."""
        from tqdm import tqdm
        if not items:
            return
        bar = tqdm(total=len(items), desc=desc, unit="file", disable=not self.progress, file=sys.stderr)
        if self.n == 1:
            results = map(fn, items)
        else:
            if self.pool is None:
                # spawn: no fork after jax/threads started. A worker that dies (e.g. out of
                # memory) breaks the executor with an error instead of hanging the run.
                self.pool = ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker, initargs=self.args)
            results = (f.result() for f in as_completed([self.pool.submit(fn, it) for it in items]))
        failed = []
        try:
            for fid, err in results:
                failed += [f"{fid}: {err}"] if err else []
                bar.update()
        except BrokenProcessPool as e:
            raise PrepareError(f"a worker process died during '{desc}' ({e}); finished files are kept: rerun "
                               f"the same command to resume, with fewer --config.data.num_workers if memory "
                               f"ran out") from None
        finally:
            bar.close()
        for f in failed:
            print(f"[prepare] skipped {f}", file=sys.stderr)

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=exc[0] is None, cancel_futures=True)


def _wait_for(paths: Callable[[], list[Path]], what: str, wait_s: float) -> None:
    """Poll until every path exists (results of other machines), or raise after wait_s."""
    t0, delay = time.monotonic(), 0.1
    while True:
        missing = [p for p in paths() if not p.exists()]
        if not missing:
            return
        if time.monotonic() - t0 > wait_s:
            raise PrepareError(f"gave up after {wait_s:.0f} s waiting for {len(missing)} {what} from the "
                               f"other --shard_index runs (e.g. {missing[0]}); rerun this command when they finish")
        time.sleep(delay)
        delay = min(POLL_S, delay * 1.5)


# ------------------------------------------------------------------------------- stages

def _pipeline_saved(out: Path) -> bool:
    """Whether stage 3's result is complete: pipeline.json is written last (and locally the
    folder appears whole, by a rename)."""
    return (out / manifest_lib.PIPELINE_DIR / "pipeline.json").is_file()


def fit_pipeline(cfg: ml_collections.ConfigDict, out: Path, train: Sequence[datasets.SourcePair]):
    """Stage 3: fit on every readable training file's stats; saved once (atomic folder;
    on a bucket: written in place, pipeline.json last, see :func:`_pipeline_saved`).

    Files are merged in natural order; the first defines the skeleton/feature layout and a
    file whose layout differs (another skeleton) is skipped with the reason (it would also
    fail in the window stage), not fatal.
    """
    from gesture_jax.motion.pipeline import MotionPipelineError, merge_stats
    from gesture_jax.motion.representations import load_pipeline, pipeline_from_config
    dst = out / manifest_lib.PIPELINE_DIR
    if _pipeline_saved(out):
        return load_pipeline(dst)
    total = None
    for p in train:
        sp = _stats_path(out, p.file_id)
        if not sp.is_file():
            continue
        acc = total
        try:
            for st in stats_io.stats_from_bytes(sp.read_bytes()):
                acc = st if acc is None else merge_stats(acc, st)
        except MotionPipelineError as e:
            err = {"path": p.bvh, "reason": f"{_reason(e)} (the motion pipeline is fitted on the first file's layout)"}
            shards.atomic_write_bytes(_stats_error_path(out, p.file_id), _json_bytes(err))
            print(f"[prepare] skipped {p.file_id}: {err['reason']}", file=sys.stderr)
            continue
        total = acc
    if total is None:
        raise PrepareError(f"no readable training file under {cfg.data.root}: cannot fit the motion pipeline "
                           f"(see {_work(out) / 'stats'} for the reasons)")
    pipe = pipeline_from_config(cfg.data)
    pipe.fit_from_stats([total])
    if storage.is_remote(out):
        # no rename on a bucket: save in place (pipeline.json last). Machines that fit at the
        # same time write the same bytes (the same stats in the same order).
        pipe.save(dst)
        return load_pipeline(dst)
    tmp = out / f"{manifest_lib.PIPELINE_DIR}.tmp-{os.getpid()}"
    pipe.save(tmp)
    try:
        os.rename(tmp, dst)
    except OSError:  # another machine saved the same fit first
        storage.remove_tree(tmp)
    return load_pipeline(dst)


def _split_records(out: Path, metas: list[dict]) -> Callable[[int, int], list[bytes]]:
    """read(start, stop) -> records [start, stop) of the split's concatenated windows."""
    bounds = np.cumsum([0] + [m["num_windows"] for m in metas])

    def read(start: int, stop: int) -> list[bytes]:
        got: list[bytes] = []
        for k, m in enumerate(metas):
            a, b = max(start, bounds[k]), min(stop, bounds[k + 1])
            if a < b:
                recs = shards.read_records(_win_records_path(out, m["file_id"]))
                got += recs[a - bounds[k]:b - bounds[k]]
        return got

    return read


def assemble(cfg: ml_collections.ConfigDict, out: Path, disc: datasets.Discovery,
             splits: dict[str, list[datasets.SourcePair]], pipe, command: str | None = None) -> dict:
    """Stage 5: shards per split + manifest.json (only shard_index 0 runs this).

    ``command``: the command line that ran (recorded; a programmatic run keeps the one an
    earlier run recorded, if any).
    """
    old = _previous_manifest(out)
    skipped = list(disc.skipped)
    split_info: dict[str, dict] = {}
    audio_name, audio_dim, audio_rate = None, None, None
    for split, pairs in splits.items():
        metas = []
        for p in pairs:
            err = _stats_error_path(out, p.file_id)
            if split == "train" and err.is_file():
                skipped.append(json.loads(err.read_text()))
                continue
            m = json.loads(_win_meta_path(out, p.file_id).read_text())
            if m["status"] != "ok":
                skipped.append({"path": p.bvh, "reason": m["reason"]})
                continue
            audio_name, audio_dim = m["audio_feature"], m["audio_dim"]
            audio_rate = m.get("audio_rate", cfg.data.fps)
            metas.append(m)
        total = sum(m["num_windows"] for m in metas)
        info = write_split(out, split, total, _split_records(out, metas), cfg.data.records_per_shard,
                           _previous_shards(old, split))
        keys = ("file_id", "bvh", "wav", "sha256", "num_frames", "num_windows", "warning")
        files = [{k: m[k] for k in keys if k in m} for m in metas]
        split_info[split] = {"num_windows": total, "num_files": len(metas), "shards": info, "files": files}
    if audio_name is None:
        raise PrepareError(f"no usable file under {cfg.data.root}; skipped: {skipped[:5]}")
    skipped.sort(key=lambda s: s["path"])
    m = manifest_lib.new_manifest(cfg, feature_names=list(pipe.feature_names), audio_feature=audio_name,
                                  audio_dim=audio_dim, splits=split_info, skipped=skipped,
                                  source_root=_source_root(cfg.data.root), audio_rate=audio_rate)
    if command := command or (old or {}).get("prepare_command"):
        m["prepare_command"] = command
    manifest_lib.save_manifest(out, m)
    return m


def _source_root(root: str) -> str:
    """data.root as recorded in the manifest: a bucket URL as given, a local folder resolved."""
    return os.fspath(storage.path(root)) if storage.is_remote(root) else str(LocalPath(root).resolve())


def write_split(out: Path, split: str, total: int, read: Callable[[int, int], list[bytes]],
                records_per_shard: int, previous: dict[str, dict] | None = None) -> list[dict]:
    """Shards of one split, streamed shard by shard (bounded memory); intact finished ones kept.

    ``previous``: the earlier manifest's shard entries by file name (shards.stale_reason
    decides what is intact). A finished shard that had to be replaced is reported.
    """
    if total == 0:
        return []
    count = max(1, -(-total // max(1, int(records_per_shard))))
    per = -(-total // count)
    count = -(-total // per)
    info = []
    for i in range(count):
        a, b = i * per, min(total, (i + 1) * per)
        path = out / shards.shard_name(split, i, count)
        entry, why = shards.sync_shard(path, b - a, (previous or {}).get(path.name), lambda: read(a, b))
        if why is not None:
            print(f"[prepare] rewrote {path}: {why}", file=sys.stderr)
        info.append(entry)
    return info


def _previous_manifest(out: Path) -> dict | None:
    """The manifest of an earlier run into ``out``, or None (absent, unreadable, other version)."""
    try:
        return manifest_lib.read_manifest(out)
    except manifest_lib.ManifestError:
        return None


def _previous_shards(m: dict | None, split: str) -> dict[str, dict]:
    return {s["path"]: s for s in ((m or {}).get("splits", {}).get(split, {}).get("shards", []))}


def cli_command(argv: Sequence[str]) -> str:
    """The prepare command line to record in the manifest: ``argv`` without the multi-machine
    flags, so that rerunning it on one machine repairs the data (it waits for nobody)."""
    drop = ("--num_shards", "--shard_index", "--wait_s")
    args, skip_value = [], False
    for a in argv[1:]:
        if skip_value:
            skip_value = False
        elif a in drop:
            skip_value = True  # "--flag value" form
        elif not a.startswith(tuple(d + "=" for d in drop)):
            args.append(a)
    return shlex.join(["python", "-m", "data_prep.prepare", *args])


def run_prepare(cfg: ml_collections.ConfigDict, *, num_shards: int = 1, shard_index: int = 0,
                wait_s: float = 86400.0, progress: bool = True, command: str | None = None) -> dict | None:
    """Prepare ``cfg.data.root`` into ``cfg.data.out``; returns the manifest (None on shard_index > 0).

    ``command``: the command line being run, recorded in the manifest as ``prepare_command``
    (the CLI passes :func:`cli_command`).
    """
    if not 0 <= shard_index < num_shards:
        raise PrepareError(f"--shard_index={shard_index} is not in [0, --num_shards={num_shards})")
    if not cfg.data.root or not cfg.data.out:
        raise PrepareError("set data.root (source files) and data.out (prepared shards)")
    from gesture_jax.motion.pipeline import MotionPipelineError
    from gesture_jax.motion.representations import pipeline_from_config
    try:  # an unknown representation / bad setting fails here once, not as every file skipped
        pipeline_from_config(cfg.data)
    except MotionPipelineError as e:
        raise PrepareError(str(e)) from None
    out = storage.path(cfg.data.out)
    if cfg.data.dataset == "demo" and not storage.path(cfg.data.root).is_dir():
        raise PrepareError(f"data.root {cfg.data.root} does not exist: write the synthetic corpus first "
                           f"(python -m data_prep.synthetic --config=configs/demo.py "
                           f"--config.data.root={cfg.data.root})")
    disc = datasets.discover(cfg.data.dataset, cfg.data.root)
    splits = datasets.assign_splits(cfg.data.dataset, disc.pairs, list(cfg.data.holdout), cfg.data.val_fraction)
    if not splits["train"]:
        raise PrepareError(f"{cfg.data.root}: no paired training files ({len(disc.pairs)} pairs, "
                           f"{len(disc.skipped)} skipped; holdout {list(cfg.data.holdout)})")
    for s in disc.skipped:
        print(f"[prepare] skipped {s['path']}: {s['reason']}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    _check_fingerprint(out, fingerprint(cfg, splits))

    order = {p.file_id: i for i, p in enumerate(disc.pairs)}
    mine = lambda p: order[p.file_id] % num_shards == shard_index  # noqa: E731
    train = splits["train"]

    # stage 2: stats of my training files, then wait for the others' (multi-machine)
    need_fit = not _pipeline_saved(out)
    stats_todo = [p for p in train if need_fit and mine(p) and not _stats_path(out, p.file_id).is_file()
                  and not _stats_error_path(out, p.file_id).is_file()]
    items = [(p, s) for s, ps in splits.items() for p in ps]
    items.sort(key=lambda it: order[it[0].file_id])
    win_todo = lambda: [(p, s) for p, s in items if mine(p) and not _win_meta_path(out, p.file_id).is_file()  # noqa: E731
                        and not (s == "train" and _stats_error_path(out, p.file_id).is_file())]
    with _Workers(cfg, out, max(len(stats_todo), len(win_todo())), progress) as workers:
        if need_fit:
            workers.run(stats_job, stats_todo, "motion stats")
            _wait_for(lambda: [_stats_path(out, q.file_id) for q in train
                               if not _stats_error_path(out, q.file_id).is_file()], "training-file stats", wait_s)
        pipe = fit_pipeline(cfg, out, train)
        # stage 4: windows of my files (all splits)
        workers.run(windows_job, win_todo(), "windows")
    if shard_index != 0:
        print(f"[prepare] shard {shard_index}/{num_shards} done; shard 0 assembles the shards", file=sys.stderr)
        return None
    _wait_for(lambda: [_win_meta_path(out, p.file_id) for p, s in items
                       if not (s == "train" and _stats_error_path(out, p.file_id).is_file())],
              "prepared files", wait_s)
    return assemble(cfg, out, disc, splits, pipe, command)


def main(argv: Sequence[str]) -> None:
    del argv
    t0 = time.perf_counter()
    try:
        m = run_prepare(_CONFIG.value, num_shards=_NUM_SHARDS.value, shard_index=_SHARD_INDEX.value,
                        wait_s=_WAIT_S.value, command=cli_command(sys.argv))
    except Exception as e:  # noqa: BLE001 - your files/config: one line, exit 2 (--verbose: traceback)
        if not (errors.is_user_error(e) or isinstance(e, ValueError)):
            raise
        raise SystemExit(errors.report(e, errors.verbose_requested())) from None
    if m is not None:
        print(json.dumps({"out": str(_CONFIG.value.data.out), "counts": m["counts"],
                          "motion_dim": m["motion"]["feature_dim"], "audio_dim": m["audio"]["dim"],
                          "skipped": len(m["skipped"]), "elapsed_s": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "dataset config, e.g. configs/demo.py",
                                              lock_config=True)
    _NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "machines sharing the preparation")
    _SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "this machine's index in [0, num_shards)")
    _WAIT_S = flags.DEFINE_float("wait_s", 86400.0, "how long to wait for other machines' results")
    flags.mark_flag_as_required("config")
    errors.define_verbose_flag()
    app.run(main)
