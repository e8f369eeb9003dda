"""Kinematic statistics of joint positions: jerk, acceleration, L1 diversity, speed histograms.

All take one clip [N, J, 3] or a sequence of clips (a set); set values are frame-weighted, i.e.
the statistic of all frames of all clips pooled, never the mean of per-clip means (so long
files count for what they hold, and the result does not depend on how a set is split).

- acceleration / jerk: `np.diff` of order 2 / 3 along time, per-joint L2 norm, mean over
  frames and joints, times fps² / fps³ (units/s², units/s³).
- L1 diversity (BEAT/EMAGE `L1div`): per clip, |x - mean over the clip's frames| summed over
  every coordinate of every joint, then divided by the number of frames.
- speed histograms: per-frame per-joint speeds |x[t+1] - x[t]|·fps pooled into fixed bins;
  distance between two normalized histograms by the Hellinger distance
  H(p, q) = sqrt(1 - Σ sqrt(p_i q_i)) (0 identical, 1 disjoint).
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

Clips = Union[np.ndarray, Sequence[np.ndarray]]


def as_clips(x: Clips) -> list[np.ndarray]:
    """One clip [N, J, 3] or a sequence of clips -> list of float64 [N_i, J, 3]."""
    if isinstance(x, np.ndarray) and x.ndim == 3:
        x = [x]
    out = [np.asarray(c, np.float64) for c in x]
    for c in out:
        if c.ndim != 3 or c.shape[-1] != 3:
            raise ValueError(f"clips must be [N, J, 3] joint positions, got {c.shape}")
    return out


def _diff_norm_mean(x: Clips, order: int, fps: float) -> float:
    total, count = 0.0, 0
    for c in as_clips(x):
        if c.shape[0] <= order:
            continue
        norms = np.linalg.norm(np.diff(c, n=order, axis=0), axis=-1)  # [N-order, J]
        total += norms.sum()
        count += norms.size
    if count == 0:
        return float("nan")
    return float(total / count * fps ** order)


def acceleration(x: Clips, fps: float) -> float:
    """Mean acceleration magnitude (units/s²): 2nd differences, per-joint L2 norm, × fps²."""
    return _diff_norm_mean(x, 2, fps)


def jerk(x: Clips, fps: float) -> float:
    """Mean jerk magnitude (units/s³): 3rd differences, per-joint L2 norm, × fps³."""
    return _diff_norm_mean(x, 3, fps)


def l1_diversity(x: Clips) -> float:
    """L1div of BEAT/EMAGE: Σ over clips of Σ|x - clip mean| over frames and coordinates, / frames."""
    total, frames = 0.0, 0
    for c in as_clips(x):
        flat = c.reshape(c.shape[0], -1)
        flat = flat - flat[:1]  # same deviations; a constant pose then gives exactly 0, not 1e-14
        total += np.abs(flat - flat.mean(0, keepdims=True)).sum()
        frames += flat.shape[0]
    return float(total / frames) if frames else float("nan")


def speeds(x: Clips, fps: float, joints: Sequence[int] | None = None) -> np.ndarray:
    """All per-frame per-joint speeds [M] (forward differences × fps), pooled over clips."""
    out = []
    for c in as_clips(x):
        if joints is not None:
            c = c[:, np.asarray(joints)]
        if c.shape[0] >= 2:
            out.append(np.linalg.norm(np.diff(c, axis=0), axis=-1).ravel() * fps)
    return np.concatenate(out) if out else np.zeros((0,))


def speed_bin_edges(reference_speeds: np.ndarray, bins: int = 50, max_speed: float = 0.0,
                    quantile: float = 0.99) -> np.ndarray:
    """Bin edges [bins+1] from 0 to max_speed (0 = the `quantile` of the reference speeds).

    Values above the top edge fall into the last bin (see `speed_histogram`), so a jittery
    model cannot escape the comparison by being off the chart.
    """
    top = float(max_speed) if max_speed > 0 else float(np.quantile(reference_speeds, quantile))
    if not np.isfinite(top) or top <= 0:
        top = 1.0
    return np.linspace(0.0, top, bins + 1)


def speed_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Normalized histogram [bins] (sums to 1; zeros if no values) with the top bin open-ended."""
    v = np.clip(np.asarray(values, np.float64), edges[0], edges[-1])
    h, _ = np.histogram(v, bins=edges)
    s = h.sum()
    return h / s if s > 0 else h.astype(np.float64)


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance between two histograms (normalized here), in [0, 1]."""
    p = np.clip(np.asarray(p, np.float64), 0, None)
    q = np.clip(np.asarray(q, np.float64), 0, None)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    bc = np.sqrt(p * q).sum()
    return float(np.sqrt(max(0.0, 1.0 - bc)))
