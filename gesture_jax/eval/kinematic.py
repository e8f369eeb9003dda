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


def border_vs_elsewhere(positions: list[np.ndarray], borders: list[np.ndarray], guard: int = 2,
                         draws: int = 500) -> tuple[float, float, float]:
    """(p99 at borders, p99 elsewhere, rank) of frame-to-frame joint displacement, pooled over
    several samples of the same audio (borders[k]: the border frames of sample k).

    Border transitions: frame b-1 -> b for every border b (where a window starts or ends);
    elsewhere: transitions at least `guard` frames from any border. Why pooled samples: one
    70 s clip has ~46 borders, so its border p99 is close to the maximum of ~46 strongly
    correlated frames (all joints of a frame move together) and swings by +-10-20% from
    sample to sample, while the elsewhere p99 rests on ~1300 frames. rank: the fraction of
    `draws` random sets of equally many non-border transitions (per sample) whose p99 is
    below the border p99 (~0.5 when borders are like any other frames, 1.0 for real seams).
    """
    at_b, at_e = [], []
    for pos, bd in zip(positions, borders):
        at = np.asarray(bd) - 1
        step = np.linalg.norm(np.diff(pos, axis=0), axis=-1)  # [N-1, J]: transition n = frame n -> n+1
        near = np.zeros(step.shape[0], bool)
        for b in at:
            near[max(0, b - guard):b + guard + 1] = True
        at_b.append(step[at])
        at_e.append(step[~near])
    p_border = float(np.percentile(np.concatenate(at_b), 99))
    rng = np.random.default_rng(0)
    null = [np.percentile(np.concatenate([e[rng.choice(len(e), len(b), replace=False)]
                                          for b, e in zip(at_b, at_e)]), 99) for _ in range(draws)]
    return p_border, float(np.percentile(np.concatenate(at_e), 99)), float(np.mean(np.asarray(null) < p_border))
