"""One ArrayRecord record = one training window, serialized without pickles.

Records are msgpack maps. Arrays travel as ``{"dtype", "shape", "data"}`` with raw
little-endian bytes, so a record can be read by any msgpack implementation and by
nothing that executes code. The schema is versioned; readers reject other versions with
a clear error rather than misinterpreting bytes.

Window schema (DESIGN.md "Records"):
    motion       [T, F] float32   standardized motion features at data.fps
    audio        [Ta, A] float16  audio features of the same span at the manifest's audio.rate:
                                  Ta = T at the motion rate (mel, MFCC), else the frames of a
                                  20 ms-hop/25 ms-window front end over T/fps s (WavLM at 50 Hz:
                                  999 for T=400), starting at audio frame floor(start_frame*rate/fps)
                                  of the file (gesture_jax.audio.frames.audio_window)
    file_id      str              source file stem
    start_frame  int              first frame of the window in the source file (at data.fps)
    mirrored     bool             left/right mirrored copy of the source motion
"""
from __future__ import annotations

from typing import Any, Mapping

import msgpack
import numpy as np

from gesture_jax.errors import UserError

# 2: audio may be at its own rate (Ta != T; manifest audio.rate). Version-1 records have the same
# layout with Ta == T (motion-rate audio) and are still read.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
WINDOW_FIELDS = {
    "motion": np.float32,
    "audio": np.float16,
    "file_id": str,
    "start_frame": int,
    "mirrored": bool,
}


class RecordError(UserError, ValueError):
    """A record that does not follow the window schema."""


def _pack_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str.replace(">", "<"), "shape": list(a.shape),
            "data": a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()}


def _unpack_array(d: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])


def encode_window(window: Mapping[str, Any], *, audio_frames: int | None = None) -> bytes:
    """Serialize one window dict (see module docstring) to bytes.

    audio_frames: the audio frame count the window must have (audio at its own rate,
    `gesture_jax.audio.frames.audio_frames_for`); None = as many as motion frames (motion rate).
    """
    missing = set(WINDOW_FIELDS) - set(window)
    if missing:
        raise RecordError(f"window is missing fields {sorted(missing)}")
    motion = np.asarray(window["motion"], np.float32)
    audio = np.asarray(window["audio"], np.float16)
    if motion.ndim != 2 or audio.ndim != 2:
        raise RecordError(f"motion and audio must be [T, C]; got {motion.shape} and {audio.shape}")
    want = motion.shape[0] if audio_frames is None else int(audio_frames)
    if audio.shape[0] != want:
        raise RecordError(f"motion has {motion.shape[0]} frames, so audio must have {want}"
                          f"{'' if audio_frames is None else ' (at its own rate)'}, but it has {audio.shape[0]}")
    if not np.isfinite(motion).all() or not np.isfinite(audio).all():
        raise RecordError(f"window {window['file_id']}@{window['start_frame']} contains NaN/inf")
    payload = {
        "v": SCHEMA_VERSION,
        "motion": _pack_array(motion),
        "audio": _pack_array(audio),
        "file_id": str(window["file_id"]),
        "start_frame": int(window["start_frame"]),
        "mirrored": bool(window["mirrored"]),
    }
    return msgpack.packb(payload, use_bin_type=True)


def decode_window(raw: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_window`; arrays are read-only views of ``raw``."""
    try:
        d = msgpack.unpackb(raw, raw=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise RecordError(f"record is not valid msgpack: {e}") from e
    if not isinstance(d, dict) or d.get("v") not in READABLE_VERSIONS:
        raise RecordError(f"record schema version {getattr(d, 'get', lambda _: None)('v')!r} "
                          f"is not one of {READABLE_VERSIONS}; re-run data_prep.prepare")
    return {
        "motion": _unpack_array(d["motion"]),
        "audio": _unpack_array(d["audio"]),
        "file_id": d["file_id"],
        "start_frame": d["start_frame"],
        "mirrored": d["mirrored"],
    }
