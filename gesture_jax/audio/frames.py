"""Frame-time geometry of audio features: chunking long files and changing frame rate.

Two problems share one coordinate system (encoder frames of `hop` samples, each seeing
`receptive_field` samples):

* A long file is encoded as overlapping chunks whose frames coincide exactly with the
  whole file's frames (chunks start on a hop boundary), and the chunks are blended with
  weights that vanish near every chunk edge not at a file end, so no frame is taken
  from where a chunk lacked context and the blend is continuous (no seams).
* Model frames at `fps` are defined by time: frame k <-> time k/fps, and a clip of S
  samples has floor(S*fps/sr) of them (a window of N seconds <-> exactly fps*N frames).
  Encoder frame j is centred at (j*hop + receptive_field/2)/sr seconds; features at
  frame times are linearly interpolated between the two nearest encoder frames.
"""
from __future__ import annotations

import math

import numpy as np


def num_model_frames(num_samples: int, fps: float, sr: int) -> int:
    """Frames at `fps` for a clip of `num_samples` at `sr` Hz: floor(S * fps / sr)."""
    return int(math.floor(num_samples * float(fps) / sr + 1e-9))


# ---- audio frames of a motion window ------------------------------------------------------
# Audio features may be stored at their own rate (WavLM: 50 Hz, audio.native_rate) next to motion
# at data.fps. Audio frame j of a file <-> time j/rate, motion frame k <-> time k/fps. A window of
# T motion frames starting at motion frame s holds the audio frames
#     [floor(s*rate/fps), floor(s*rate/fps) + audio_frames_for(T, fps, rate))
# i.e. it starts at the last audio frame at or before the window's start time (at 20 fps / 50 Hz
# an odd s starts 10 ms early: s*2.5 is not whole) and has as many frames as a 20 ms-hop,
# 25 ms-window front end yields for T/fps seconds (999 for 20 s at 50 Hz). Because
# floor(a) + floor(b) <= floor(a + b), every such window of a span [s0, s0 + N) lies inside the
# audio_frames_for(N) frames of that span: random crops of a record and windows of a file never
# read past its audio. At rate == fps this is the motion window itself (start s, T frames).


def audio_frames_for(frames: int, fps: float, rate: float) -> int:
    """Audio frames at `rate` of `frames` motion frames at `fps`: `frames` when rate == fps, else
    the frames of a front end with a 1.25-hop window over frames/fps seconds, floor(frames*rate/fps
    - 1.25) + 1 (400 @ 20 fps -> 999 @ 50 Hz, WavLM's count for 320000 samples)."""
    if float(rate) == float(fps):
        return int(frames)
    return int(math.floor(frames * float(rate) / float(fps) - 1.25 + 1e-9)) + 1


def audio_start(start_frame: int, fps: float, rate: float) -> int:
    """First audio frame of the window starting at motion frame `start_frame`: floor(s*rate/fps)."""
    if float(rate) == float(fps):
        return int(start_frame)
    return int(math.floor(start_frame * float(rate) / float(fps) + 1e-9))


def audio_window(start_frame: int, frames: int, fps: float, rate: float) -> tuple[int, int]:
    """(first audio frame, audio frame count) of motion frames [start_frame, start_frame + frames)."""
    return audio_start(start_frame, fps, rate), audio_frames_for(frames, fps, rate)


def motion_frames_covered(audio_frames: int, fps: float, rate: float) -> int:
    """The most motion frames N whose audio window [0, audio_frames_for(N)) fits in `audio_frames`
    (the inverse of audio_frames_for: motion_frames_covered(audio_frames_for(N)) == N)."""
    if float(rate) == float(fps):
        return int(audio_frames)
    n = max(0, int(math.ceil((audio_frames + 1.25) * float(fps) / float(rate))) + 1)
    while n > 0 and audio_frames_for(n, fps, rate) > audio_frames:
        n -= 1
    return n


def plan_chunks(total_frames: int, chunk_frames: int, overlap_frames: int) -> list[int]:
    """First frames of chunks of `chunk_frames` covering [0, total_frames).

    Chunks advance by chunk - overlap; the last one is moved back to end exactly at the
    file's end (so its overlap with the previous chunk may be larger than asked). A file
    no longer than one chunk is one chunk of its own length.
    """
    if total_frames <= chunk_frames:
        return [0]
    if not 0 <= overlap_frames < chunk_frames:
        raise ValueError(f"overlap ({overlap_frames} frames) must be in [0, chunk ({chunk_frames} frames))")
    hop = chunk_frames - overlap_frames
    starts = []
    a = 0
    while a + chunk_frames < total_frames:
        starts.append(a)
        a += hop
    starts.append(total_frames - chunk_frames)
    return starts


def blend_weights(starts: list[int], chunk_frames: int, total_frames: int, margin: int) -> np.ndarray:
    """Per-chunk frame weights [num_chunks, chunk_frames] (float64) for an overlap-add blend.

    A chunk's weight is the distance (in frames) to its nearest *interior* edge minus
    `margin`, clipped at 0: zero within `margin` frames of an edge that has a neighbour
    (where the chunk lacked context), rising linearly inwards; edges at a file end carry
    no penalty because the unchunked encoding has the same boundary there. Normalising by
    the per-frame sum gives a continuous cross-fade. Requires every overlap to exceed
    2*margin so some chunk always has positive weight (checked).
    """
    n = min(chunk_frames, total_frames)
    idx = np.arange(n, dtype=np.float64)
    big = float(total_frames + chunk_frames)
    w = np.empty((len(starts), n), np.float64)
    for c, a in enumerate(starts):
        left = idx - margin + 1.0 if a > 0 else np.full(n, big)
        right = (n - idx) - margin if a + n < total_frames else np.full(n, big)
        w[c] = np.clip(np.minimum(left, right), 0.0, None)
    total = np.zeros(total_frames, np.float64)
    for c, a in enumerate(starts):
        total[a:a + n] += w[c]
    if np.any(total <= 0):
        raise ValueError(f"chunk overlap too small for a blend margin of {margin} frames")
    return w


def resample_frames(feats: np.ndarray, num_samples: int, fps: float, *, hop: int, receptive_field: int,
                    sr: int) -> np.ndarray:
    """Encoder frames [L, D] -> model frames [floor(S*fps/sr), D] at times k/fps (linear).

    Frame times before the first / after the last encoder frame centre take that frame.
    """
    n = num_model_frames(num_samples, fps, sr)
    length = feats.shape[0]
    if length == 0:
        raise ValueError("no encoder frames to resample")
    pos = (np.arange(n, dtype=np.float64) * (sr / float(fps)) - receptive_field / 2.0) / hop
    pos = np.clip(pos, 0.0, length - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, length - 1)
    w = (pos - i0).astype(np.float32)[:, None]
    return (feats[i0] * (1.0 - w) + feats[i1] * w).astype(np.float32)
