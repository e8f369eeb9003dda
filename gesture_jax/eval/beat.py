"""Beat consistency (BC): do motion beats (pauses in joint speed) fall on audio onsets?

Port of the `alignment` metric of BEAT / EMAGE (PantoMatrix `utils/metric.py`), the version
DiffGesture-era papers report as "BC" for speech gestures:

1. Audio onsets: `librosa.onset.onset_detect(y, sr=16000, hop_length=512, units="time")`.
2. Joint speed: central differences (forward at the first frame, backward at the last) times
   fps, per-joint L2 norm, divided by the dataset's mean speed (per joint or one number).
3. Motion beats, per joint: local minima of that normalized speed by
   `scipy.signal.argrelextrema(np.less, order=7)` whose value is above 0.3 (a pause in a
   movement, not standing still).
4. Per joint: mean over audio onsets of exp(-d² / 2σ²), σ = 0.3 s, d = distance from the
   onset to the nearest motion beat of that joint; then the mean over the upper-body joints.
5. The first and last 60 frames are masked; over files, the mean weighted by unmasked frames.

Choices where the reference is loose (all parameters below):
- Masking: the interval is frames [m, N-m). The audio is cut to the same interval before
  onset detection (as EMAGE does, so onset times and beat times share the origin); speeds are
  computed on the whole clip so the interval's edges keep central differences; minima are
  searched inside the interval only. EMAGE tests the 0.3 threshold at the index relative to
  the interval but looks it up in the whole clip (an offset by m frames); we test it at the
  minimum itself, which is what the text of the method says.
- A joint with no motion beat scores 0 for every onset (the reference's exp(-inf)).
- A clip with no onset in the interval, or shorter than 2m+1 frames, has no score (NaN) and
  weight 0: the set score ignores it and `BCResult.n_onsets` says why.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy.signal import argrelextrema


@dataclasses.dataclass(frozen=True)
class BCResult:
    """Beat consistency of one clip."""
    score: float                 # mean over joints of the per-joint score; NaN when undefined
    frames: int                  # unmasked frames (the file's weight in the set average)
    n_onsets: int                # audio onsets inside the unmasked interval
    per_joint: np.ndarray        # [K] per-joint scores (NaN when undefined)
    onsets: np.ndarray           # [n_onsets] onset times (s, from the interval start)
    beats: list[np.ndarray]      # K arrays of motion-beat times (s, from the interval start)


def audio_onsets(wave: np.ndarray, sr: int = 16000, hop_length: int = 512) -> np.ndarray:
    """Onset times (s) of a mono waveform [S], librosa's default onset detector."""
    import librosa  # imported here: its first call compiles with numba (~14 s)

    y = np.asarray(wave, np.float32)
    if y.ndim != 1:
        raise ValueError(f"waveform must be mono [S], got shape {y.shape}")
    if y.size < hop_length * 2:
        return np.zeros((0,), np.float64)
    return np.asarray(librosa.onset.onset_detect(y=y, sr=sr, hop_length=hop_length, units="time"),
                      np.float64)


def joint_speed(positions: np.ndarray, fps: float) -> np.ndarray:
    """Per-frame joint speed [N, J] from positions [N, J, 3] (units/s; EMAGE's differences).

    Frame 0 uses the forward difference, the last frame the backward one, the rest the
    central difference (x[t+1] - x[t-1]) / 2dt.
    """
    p = np.asarray(positions, np.float64)
    if p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"positions must be [N, J, 3], got {p.shape}")
    if p.shape[0] < 2:
        return np.zeros(p.shape[:2])
    v = np.empty_like(p)
    v[0] = (p[1] - p[0]) * fps
    v[-1] = (p[-1] - p[-2]) * fps
    v[1:-1] = (p[2:] - p[:-2]) * (fps / 2.0)
    return np.linalg.norm(v, axis=-1)


def mean_joint_speed(clips: Sequence[np.ndarray], fps: float) -> np.ndarray:
    """Dataset mean speed per joint [J] (the BC normalizer), frame-weighted over clips."""
    total, count = None, 0
    for c in clips:
        s = joint_speed(c, fps)
        total = s.sum(0) if total is None else total + s.sum(0)
        count += s.shape[0]
    if total is None or count == 0:
        raise ValueError("mean_joint_speed needs at least one non-empty clip")
    return total / count


def motion_beats(norm_speed: np.ndarray, start: int, end: int, order: int = 7,
                 threshold: float = 0.3) -> list[np.ndarray]:
    """Per joint, frame indices (relative to `start`) of speed minima in [start, end) above threshold.

    norm_speed: [N, K] speed divided by the dataset mean speed.
    """
    out = []
    for k in range(norm_speed.shape[1]):
        seg = norm_speed[start:end, k]
        idx = argrelextrema(seg, np.less, order=order)[0]
        out.append(idx[seg[idx] > threshold])
    return out


def alignment_score(onsets: np.ndarray, beats: np.ndarray, sigma: float = 0.3) -> float:
    """Mean over onsets of exp(-d²/2σ²), d = distance to the nearest beat (EMAGE's GAHR).

    No onsets -> NaN (undefined). No beats -> 0.
    """
    onsets = np.asarray(onsets, np.float64)
    beats = np.asarray(beats, np.float64)
    if onsets.size == 0:
        return float("nan")
    if beats.size == 0:
        return 0.0
    d = np.min(np.abs(onsets[:, None] - beats[None, :]), axis=1)
    return float(np.mean(np.exp(-(d ** 2) / (2.0 * sigma ** 2))))


def beat_consistency(positions: np.ndarray, wave: np.ndarray, fps: float, mean_speed: np.ndarray | float,
                     joints: Sequence[int] | None = None, *, sr: int = 16000, hop_length: int = 512,
                     sigma: float = 0.3, order: int = 7, threshold: float = 0.3,
                     mask_frames: int = 60) -> BCResult:
    """BC of one clip: positions [N, J, 3] at `fps` against its waveform [S] at `sr`.

    mean_speed: dataset mean speed, [J] per joint or a scalar (same units as positions*fps).
    joints: indices of the joints scored (upper body); None = all.
    """
    p = np.asarray(positions, np.float64)
    n = p.shape[0]
    joints = np.arange(p.shape[1]) if joints is None else np.asarray(joints, np.int64)
    start, end = mask_frames, n - mask_frames
    empty = BCResult(float("nan"), 0, 0, np.full(len(joints), np.nan), np.zeros(0), [])
    if end - start < 1:
        return empty
    mean_speed = np.broadcast_to(np.asarray(mean_speed, np.float64), (p.shape[1],))
    if np.any(mean_speed[joints] <= 0):
        raise ValueError("mean_speed must be positive for every scored joint")
    norm = joint_speed(p, fps)[:, joints] / mean_speed[joints]
    a0 = int(round(start * sr / fps))
    a1 = min(int(round(end * sr / fps)), len(wave))
    onsets = audio_onsets(np.asarray(wave)[a0:a1], sr=sr, hop_length=hop_length)
    beats = [b / fps for b in motion_beats(norm, start, end, order=order, threshold=threshold)]
    if onsets.size == 0:
        return dataclasses.replace(empty, frames=0, beats=beats)
    per_joint = np.asarray([alignment_score(onsets, b, sigma) for b in beats])
    return BCResult(float(per_joint.mean()), end - start, int(onsets.size), per_joint, onsets, beats)


def beat_consistency_set(results: Sequence[BCResult]) -> float:
    """Set BC: per-clip scores averaged with their unmasked frame counts as weights (EMAGE)."""
    w = np.asarray([r.frames if np.isfinite(r.score) else 0 for r in results], np.float64)
    if w.sum() == 0:
        return float("nan")
    s = np.asarray([r.score if np.isfinite(r.score) else 0.0 for r in results])
    return float((w * s).sum() / w.sum())
