"""manifest.json: what a prepared dataset folder holds, and the check that it fits a config.

Training reads shapes (motion feature dimension, audio dimension, window length) from the
manifest instead of recomputing them, so a stale or mismatched data folder must fail
before the first step with a message naming the folder and the mismatch, not as a shape
error deep inside a jitted function.

Layout (CONTRACTS.md): ``data.out/manifest.json``, ``data.out/motion_pipeline/``,
``data.out/{split}-{i:05d}-of-{n:05d}.array_record``. ``data.out`` may be local or a bucket
(``gs://...``; paths go through :mod:`gesture_jax.storage`).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections

from gesture_jax import storage
from gesture_jax.data import records, shards
from gesture_jax.errors import UserError
from gesture_jax.storage import Path

MANIFEST_NAME = "manifest.json"
PIPELINE_DIR = "motion_pipeline"
MANIFEST_SCHEMA = "gesture_jax.windows"
MANIFEST_VERSION = 1


class ManifestError(UserError, ValueError):
    """A prepared-data folder that is missing, corrupt, or does not match the config."""


def window_frames(cfg_data: ml_collections.ConfigDict) -> int:
    """Frames per window: window_s * fps (must be a whole number)."""
    return seconds_to_frames(cfg_data.window_s, cfg_data.fps, "window_s")


def seconds_to_frames(seconds: float, fps: float, what: str) -> int:
    n = seconds * fps
    if n <= 0 or not math.isclose(n, round(n), abs_tol=1e-6):
        raise ManifestError(f"data.{what}={seconds} s at {fps} fps is not a positive whole number of frames")
    return int(round(n))


def config_to_json(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (recorded in the manifest for provenance)."""
    return json.loads(json.dumps(cfg.to_dict(), default=str, sort_keys=True))


def save_manifest(data_out: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically with sorted keys (byte-stable across runs)."""
    path = storage.path(data_out) / MANIFEST_NAME
    shards.atomic_write_bytes(path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return path


def read_manifest(data_out: str | os.PathLike) -> dict[str, Any]:
    """Parse manifest.json without checking it against a config."""
    path = storage.path(data_out) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path} does not exist: prepare the data first "
                            f"(python -m data_prep.prepare --config=...)")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e}); re-run data_prep.prepare") from e
    if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError(f"{path}: not a gesture_jax manifest (schema {m.get('schema')!r})")
    if (m.get("manifest_version") != MANIFEST_VERSION
            or m.get("record_schema_version") not in records.READABLE_VERSIONS):
        raise ManifestError(f"{path}: manifest version {m.get('manifest_version')} / record schema "
                            f"{m.get('record_schema_version')} is not {MANIFEST_VERSION} / "
                            f"{records.SCHEMA_VERSION}; re-run data_prep.prepare")
    rate = audio_rate(m)
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ManifestError(f"{path}: audio.rate {m['audio'].get('rate')!r} is not a positive frame rate: "
                            f"corrupt manifest; re-run data_prep.prepare")
    return m


def audio_rate(m: dict[str, Any]) -> float:
    """Frames/s of the records' audio (manifest ``audio.rate``). Manifests written before audio could
    be kept at its own rate have no such field: their audio is at the motion rate (``fps``)."""
    return float(m.get("audio", {}).get("rate", m["fps"]))


def audio_window_frames(m: dict[str, Any], frames: int | None = None) -> int:
    """Audio frames of a window of ``frames`` motion frames (default: a record's) at the records' rate."""
    from gesture_jax.audio.frames import audio_frames_for  # numpy only

    return audio_frames_for(int(m["window_frames"] if frames is None else frames), float(m["fps"]), audio_rate(m))


def _mismatch(path: Path, key: str, have: Any, want: Any) -> ManifestError:
    return ManifestError(f"{path}: {key} is {have!r} in the prepared data but {want!r} in the config; "
                         f"re-run data_prep.prepare with this config or point data.out elsewhere")


def validate_against_config(m: dict[str, Any], cfg: ml_collections.ConfigDict, path: Path) -> None:
    """Raise :class:`ManifestError` when the prepared data cannot serve ``cfg``."""
    d, a = cfg.data, cfg.audio
    if m["fps"] != d.fps:
        raise _mismatch(path, "fps", m["fps"], d.fps)
    if m["window_frames"] != window_frames(d):
        raise _mismatch(path, "window (frames)", m["window_frames"], window_frames(d))
    if not math.isclose(m["stride_s"], d.stride_s):
        raise _mismatch(path, "stride_s", m["stride_s"], d.stride_s)
    if list(m["motion"]["joints"]) != list(d.joints):
        raise _mismatch(path, "data.joints", m["motion"]["joints"], list(d.joints))
    rep_m, rep_c = m["motion"].get("representation", "expmap"), d.get("representation", "expmap")
    if rep_m != rep_c:
        raise _mismatch(path, "motion representation (data.representation)", rep_m, rep_c)
    if m["audio"]["feature"] != a.feature:
        raise _mismatch(path, "audio feature", m["audio"]["feature"], a.feature)
    if a.feature == "mel" and m["audio"]["dim"] != a.n_mels:
        raise _mismatch(path, "audio feature dim (n_mels)", m["audio"]["dim"], a.n_mels)
    from gesture_jax.audio.mfcc import mfcc_dim  # numpy only; local keeps the data package free of audio imports

    if a.feature == "mfcc" and m["audio"]["dim"] != mfcc_dim(a):
        raise _mismatch(path, "audio feature dim (audio.mfcc_numcep + 4 if audio.prosody)", m["audio"]["dim"],
                        mfcc_dim(a))
    if a.feature == "wavlm" and m["audio"].get("layer") != a.layer:
        raise _mismatch(path, "WavLM layer", m["audio"].get("layer"), a.layer)
    from gesture_jax.audio.features import native_rate  # imports nothing heavy at module level

    at_motion_rate = audio_rate(m) == float(m["fps"])
    if native_rate(a) == at_motion_rate:
        raise _mismatch(path, "audio rate (audio.native_rate)",
                        f"{audio_rate(m):g} frames/s" + (" (the motion rate)" if at_motion_rate else " (native)"),
                        "native" if native_rate(a) else f"{d.fps:g} frames/s (the motion rate)")
    if len(m["motion"]["feature_names"]) != m["motion"]["feature_dim"]:
        raise ManifestError(f"{path}: {len(m['motion']['feature_names'])} feature names for "
                            f"feature_dim {m['motion']['feature_dim']}: corrupt manifest")
    if d.random_crop_s and d.random_crop_s > d.window_s:
        raise ManifestError(f"data.random_crop_s={d.random_crop_s} is longer than data.window_s={d.window_s}")


def prepare_command(m: dict[str, Any] | None, data_out: str | os.PathLike) -> str:
    """The command that (re)creates ``data_out``: as recorded by data_prep.prepare, else a template."""
    return (m or {}).get("prepare_command") or (f"python -m data_prep.prepare --config=<your config> "
                                                f"--config.data.out={data_out}")


def repair_hint(m: dict[str, Any] | None, data_out: str | os.PathLike) -> str:
    """What to do about a damaged shard of ``data_out`` (ends ShardError messages).

    Rerunning preparation rewrites exactly the shards whose bytes differ from the sha256
    recorded in the manifest; a manifest written before shards were hashed only lets it
    see missing or miscounted shards, so the user must delete the damaged one first.
    """
    cmd = prepare_command(m, data_out)
    hashed = any("sha256" in s for info in (m or {}).get("splits", {}).values() for s in info.get("shards", []))
    if hashed:
        return f"re-create it with: {cmd} (only damaged shards are rewritten)"
    return f"delete it and re-create it with: {cmd} (this manifest predates shard checksums)"


def checked_window(raw: bytes, *, shard: Path, record: int, shapes: tuple[tuple[int, int], tuple[int, int]],
                   fix: str) -> dict[str, Any]:
    """Decode record ``record`` of ``shard`` and check its shapes; any fault -> ShardError naming both.

    ``shapes`` = ((T, F), (Ta, A)) from the manifest (:func:`record_shapes`). Shared by the training input
    pipeline, the quick check at training start and ``gesture_jax.data.check --full``.
    """
    try:
        w = records.decode_window(raw)
    except Exception as e:  # RecordError, or a KeyError/ValueError from a garbled map
        raise shards.ShardError(f"{shard}: record {record} is corrupt ({e}); {fix}", shard=shard, record=record) from e
    if (w["motion"].shape, w["audio"].shape) != tuple(shapes):
        raise shards.ShardError(f"{shard}: record {record} has motion {w['motion'].shape} audio {w['audio'].shape}, "
                                f"manifest.json says {shapes[0]} and {shapes[1]}; {fix}", shard=shard, record=record)
    return w


def record_shapes(m: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((T, F), (Ta, A)): the motion and audio shapes every record of ``m`` has; Ta = T at the
    motion rate, else the audio frames of T motion frames at ``audio.rate`` (999 for 400 @ 50 Hz)."""
    T = m["window_frames"]
    return (T, m["motion"]["feature_dim"]), (audio_window_frames(m), m["audio"]["dim"])


def check_split(data_out: str | os.PathLike, m: dict[str, Any], split: str) -> list[Path]:
    """Check one split's shards (present, sizes, counts, a decodable first/last record).

    Returns the shard paths in order. Raises ManifestError / ShardError (naming the shard
    and the command that re-creates it). Bucket shards are staged to the local cache here
    (``shards.local_shard``: downloaded once, checked against the manifest's sha256).
    """
    data_out = storage.path(data_out)
    path = data_out / MANIFEST_NAME
    if split not in m["splits"]:
        raise ManifestError(f"{path}: no split {split!r} (have {sorted(m['splits'])})")
    info = m["splits"][split]
    if info["num_windows"] == 0 or not info["shards"]:
        raise ManifestError(f"{path}: split {split!r} is empty (0 windows from {len(info['files'])} "
                            f"files): check data.holdout and the source folder")
    shapes, fix = record_shapes(m), repair_hint(m, data_out)
    out = []
    for s in info["shards"]:
        p = data_out / s["path"]
        n = s["num_records"]
        probed = shards.check_shard(p, num_records=n, num_bytes=s["num_bytes"], fix=fix, sha256=s.get("sha256"))
        for i, raw in zip(sorted({0, n - 1}) if n else [], probed):
            checked_window(raw, shard=p, record=i, shapes=shapes, fix=fix)
        out.append(p)
    if sum(s["num_records"] for s in info["shards"]) != info["num_windows"]:
        raise ManifestError(f"{path}: split {split!r} shard record counts do not add up to num_windows")
    return out


def load_manifest(data_out: str | os.PathLike, cfg: ml_collections.ConfigDict,
                  splits: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read ``data_out/manifest.json``, check it against ``cfg`` and check ``splits``' shards."""
    m = read_manifest(data_out)
    path = storage.path(data_out) / MANIFEST_NAME
    validate_against_config(m, cfg, path)
    pipe_dir = storage.path(data_out) / m["motion"]["pipeline"]
    if not pipe_dir.is_dir():
        raise ManifestError(f"{pipe_dir}: motion pipeline folder is missing; re-run data_prep.prepare")
    pipe_json = pipe_dir / "pipeline.json"  # MotionPipeline.save's description (gesture_jax.motion)
    try:
        pipe_dim = json.loads(pipe_json.read_text()).get("feature_dim") if pipe_json.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{pipe_json}: not valid JSON ({e}); re-run data_prep.prepare") from e
    if pipe_dim is not None and pipe_dim != m["motion"]["feature_dim"]:
        raise ManifestError(f"{pipe_json}: feature_dim {pipe_dim} but {path} says {m['motion']['feature_dim']}: "
                            f"the motion pipeline belongs to another preparation")
    for split in splits:
        check_split(data_out, m, split)
    return m


def new_manifest(cfg: ml_collections.ConfigDict, *, feature_names: list[str], audio_feature: str,
                 audio_dim: int, splits: dict[str, dict[str, Any]], skipped: list[dict[str, str]],
                 source_root: str, audio_rate: float | None = None) -> dict[str, Any]:
    """Assemble manifest.json's content.

    ``audio_rate``: frames/s of the records' audio (None: the motion rate, data.fps).

    ``splits[name]`` = {"num_windows", "shards": [{"path","num_records","num_bytes","sha256"}],
    "files": [{"file_id","bvh","wav","sha256": {"bvh","wav"},"num_frames","num_windows"}]}.
    """
    d = cfg.data
    return {
        "schema": MANIFEST_SCHEMA,
        "manifest_version": MANIFEST_VERSION,
        "record_schema_version": records.SCHEMA_VERSION,
        "record_fields": {"motion": "[T,F] float32 standardized (motion_pipeline)",
                          "audio": "[Ta,A] float16 at audio.rate frames/s: frame j <-> time "
                                   "(floor(start_frame * rate / fps) + j) / rate; Ta = T at rate == fps, else "
                                   "floor(T * rate / fps - 1.25) + 1",
                          "file_id": "str", "start_frame": "int (frames at fps)", "mirrored": "bool"},
        "dataset": d.dataset,
        "fps": d.fps,
        "window_s": d.window_s,
        "window_frames": window_frames(d),
        "stride_s": d.stride_s,
        "test_stride_s": d.test_stride_s,
        "mirror": bool(d.mirror),
        "motion": {"feature_dim": len(feature_names), "feature_names": list(feature_names),
                   "joints": list(d.joints), "pipeline": PIPELINE_DIR,
                   # absent = "expmap" (manifests written before other representations existed)
                   **({"representation": rep} if (rep := d.get("representation", "expmap")) != "expmap" else {})},
        "audio": {"feature": audio_feature, "dim": int(audio_dim), "sample_rate": cfg.audio.sample_rate,
                  "rate": float(d.fps if audio_rate is None else audio_rate),
                  **({"layer": cfg.audio.layer} if audio_feature == "wavlm" else {})},
        "splits": splits,
        "counts": {k: v["num_windows"] for k, v in splits.items()},
        "skipped": skipped,
        "source_root": source_root,
        "config": config_to_json(cfg),
    }
