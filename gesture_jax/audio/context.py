"""Kucherenko et al. 2019 speech context: each motion frame sees +-30 audio frames.

The reference (create_vector.py `pad_sequence` / `create_vectors`) pads the feature
sequence at both ends with 30 copies of a "silence" vector -- the first frame of the
features of silence.wav (zeros for prosody) -- and gives motion frame t the audio frames
t-30 .. t+30 (61 frames, stride 1). Here the silence vector is the extractor applied to one
second of digital silence (its first frame), so it is exactly what that extractor makes of
a pause, whatever the feature kind.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CONTEXT = 30  # reference: N_CONTEXT 60 -> 30 past + current + 30 future


def silence_frame(extractor: Any, sr: int = 16000) -> np.ndarray:
    """float32 [dim]: the extractor's first frame of one second of zeros (the padding vector).

    For MFCC that is [log(eps), 0, ..., 0] (no energy in any band), with prosody 4 zeros
    after it, matching the reference's MFCC-of-silence + zero-prosody vector.
    """
    return np.asarray(extractor(np.zeros(int(sr), np.float32))[0], np.float32)


def context_windows(feats: np.ndarray, context: int = CONTEXT, pad: np.ndarray | None = None) -> np.ndarray:
    """[T, D] -> [T, 2*context+1, D]: row t holds frames t-context .. t+context.

    Frames before 0 or after T-1 are `pad` ([D]; zeros when None). Returned as a read-only
    strided view of one padded copy ([T+2*context, D]), so an hour at 20 fps costs one
    copy of the features instead of 61; np.ascontiguousarray it before writing.
    """
    x = np.asarray(feats)
    if x.ndim != 2:
        raise ValueError(f"expected features [frames, dims], got shape {x.shape}")
    if context < 0:
        raise ValueError(f"context must be >= 0 frames, got {context}")
    t, d = x.shape
    p = np.zeros(d, x.dtype) if pad is None else np.asarray(pad, x.dtype)
    if p.shape != (d,):
        raise ValueError(f"silence pad has shape {p.shape}, expected ({d},) to match the features")
    if t == 0:
        return np.zeros((0, 2 * context + 1, d), x.dtype)
    padded = np.concatenate([np.broadcast_to(p, (context, d)), x, np.broadcast_to(p, (context, d))])  # [T+2c, D]
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * context + 1, axis=0)  # [T, D, 2c+1]
    return win.transpose(0, 2, 1)                                                   # [T, 2c+1, D]
