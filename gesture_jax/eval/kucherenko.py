"""The evaluation protocol of Kucherenko et al. 2019 ("KA"), on 3-D joint positions.

KA scores generated motion against the ground truth of the same audio, file by file, in the
skeleton's units (cm for BEAT, ZEGGS and Trinity) and in *frames*, never seconds:

- every (generated, real) pair is first cut to its shorter length;
- APE: per joint, the mean over frames of the Euclidean distance to the paired real position;
  then the mean over joints, then over files;
- MAE: per coordinate, the mean over frames of |error|; averaged over x, y, z per joint, then
  over joints, then over files;
- average jerk / acceleration: 3rd / 2nd finite differences along frames, NOT scaled by fps
  (cm/frame³, cm/frame²), per-frame Euclidean norm per joint, mean over frames, joints, files;
  reported for the generated and for the real motion;
- speed histograms: per-frame speed = norm of the first difference (cm/frame), counted per
  joint into bins 0..max_speed of width bin_width (0..1 by 0.05); speeds above max_speed are
  dropped (not clipped); a "total" histogram sums the per-joint counts over all pairs;
- HMD: the Hellinger distance sqrt(1 - Σ sqrt(p q)) between the normalized total histograms of
  the generated and the real motion.

This differs from kinematic.py (per-second units, frame-weighted pooling, an open-ended top
bin), which stays the project's own protocol; both are reported under different keys. The
math shared with it (difference norms, speeds, Hellinger) is computed by kinematic.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from gesture_jax.eval import kinematic

BIN_WIDTH = 0.05    # cm/frame (KA calc_distance default)
MAX_SPEED = 1.0     # cm/frame: the top bin edge; faster frames are dropped


def paired(generated: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(generated, real) clips [N, J, 3] paired by index, each pair cut to its shorter length.

    KA pairs files by sorted name; here the caller's order is the pairing. A different number
    of clips or of joints is an error (a file would be scored against another file's motion).
    """
    gen, ref = kinematic.as_clips(generated), kinematic.as_clips(real)
    if len(gen) != len(ref):
        raise ValueError(f"KA metrics pair clips by index: {len(gen)} generated clips but {len(ref)} real ones")
    out = []
    for i, (g, r) in enumerate(zip(gen, ref)):
        if g.shape[1] != r.shape[1]:
            raise ValueError(f"KA metrics: clip {i} has {g.shape[1]} joints generated but {r.shape[1]} real")
        n = min(g.shape[0], r.shape[0])
        out.append((g[:n], r[:n]))
    return out


def _mean_over_files(values: Sequence[float]) -> float:
    """Mean of the per-file values that exist (a file too short for a statistic gives NaN)."""
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    return float(v.mean()) if v.size else float("nan")


def ape_per_file(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """APE of each pair: mean over joints of (mean over frames of |g - r|₂)."""
    out = []
    for g, r in pairs:
        if g.shape[0] == 0:
            out.append(float("nan"))
            continue
        dist = np.linalg.norm(g - r, axis=-1)          # [N, J]
        out.append(float(dist.mean(axis=0).mean()))
    return out


def mae_per_file(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """MAE of each pair: mean over joints of (mean over x,y,z of mean over frames of |g - r|)."""
    out = []
    for g, r in pairs:
        if g.shape[0] == 0:
            out.append(float("nan"))
            continue
        per_coord = np.abs(g - r).mean(axis=0)         # [J, 3]
        out.append(float(per_coord.mean(axis=-1).mean()))
    return out


def ape(generated: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> float:
    """Average position error (units of the positions), mean over files."""
    return _mean_over_files(ape_per_file(paired(generated, real)))


def mae(generated: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> float:
    """Mean absolute (per-coordinate) error, mean over files."""
    return _mean_over_files(mae_per_file(paired(generated, real)))


def jerk_per_file(clips: Sequence[np.ndarray]) -> list[float]:
    """Average jerk of each clip in units/frame³ (kinematic.jerk with fps = 1: no time scaling)."""
    return [kinematic.jerk(c, fps=1.0) for c in kinematic.as_clips(clips)]


def acceleration_per_file(clips: Sequence[np.ndarray]) -> list[float]:
    """Average acceleration of each clip in units/frame²."""
    return [kinematic.acceleration(c, fps=1.0) for c in kinematic.as_clips(clips)]


def average_jerk(clips: Sequence[np.ndarray]) -> float:
    """KA's AJ: per clip mean over frames and joints of |Δ³x|, then mean over clips."""
    return _mean_over_files(jerk_per_file(clips))


def average_acceleration(clips: Sequence[np.ndarray]) -> float:
    """KA's AA: per clip mean over frames and joints of |Δ²x|, then mean over clips."""
    return _mean_over_files(acceleration_per_file(clips))


def speed_bin_edges(bin_width: float = BIN_WIDTH, max_speed: float = MAX_SPEED) -> np.ndarray:
    """Bin edges [B+1] from 0 to max_speed (units/frame); max_speed must be a multiple of bin_width."""
    if not (bin_width > 0 and max_speed > 0):
        raise ValueError(f"KA speed histogram: bin_width ({bin_width}) and max_speed ({max_speed}) must be > 0")
    n = max_speed / bin_width
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"KA speed histogram: max_speed {max_speed} is not a whole number of bins of "
                         f"width {bin_width}")
    return np.linspace(0.0, max_speed, int(round(n)) + 1)


@dataclasses.dataclass(frozen=True)
class SpeedHistograms:
    """Speed-histogram counts of a set of clips (KA calc_distance's table)."""
    edges: np.ndarray       # [B+1] units/frame
    per_joint: np.ndarray   # [J, B] counts
    total: np.ndarray       # [B] counts: per_joint summed over joints


def speed_histograms(clips: Sequence[np.ndarray], bin_width: float = BIN_WIDTH,
                     max_speed: float = MAX_SPEED) -> SpeedHistograms:
    """Counts of per-frame joint speeds (units/frame) per joint and in total, pooled over clips.

    Speeds outside [0, max_speed] are dropped; max_speed itself falls in the top bin (np.histogram).
    """
    cs = kinematic.as_clips(clips)
    if not cs:
        raise ValueError("KA speed histogram of an empty set of clips")
    joints = cs[0].shape[1]
    if any(c.shape[1] != joints for c in cs):
        raise ValueError(f"KA speed histogram: clips have different joint counts {[c.shape[1] for c in cs]}")
    edges = speed_bin_edges(bin_width, max_speed)
    sp = kinematic.speeds(cs, fps=1.0).reshape(-1, joints)  # [sum(N_i - 1), J]: speeds() is frame-major
    per_joint = np.stack([np.histogram(sp[:, j], bins=edges)[0] for j in range(joints)]).astype(np.int64)
    return SpeedHistograms(edges, per_joint, per_joint.sum(axis=0))


def hellinger_distance(generated: SpeedHistograms | np.ndarray, real: SpeedHistograms | np.ndarray) -> float:
    """HMD: Hellinger distance between the normalized total histograms (0 identical, 1 disjoint)."""
    p = generated.total if isinstance(generated, SpeedHistograms) else generated
    q = real.total if isinstance(real, SpeedHistograms) else real
    return kinematic.hellinger(p, q)


def ka_metrics(generated: Sequence[np.ndarray], real: Sequence[np.ndarray], *, bin_width: float = BIN_WIDTH,
               max_speed: float = MAX_SPEED, file_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """KA's whole protocol for one set of clips paired with its ground truth.

    Returns ka_ape, ka_mae, ka_jerk, ka_accel (generated), ka_jerk_gt, ka_accel_gt (the real
    motion, cut to the same lengths), ka_hellinger, ka_speed_hist / ka_speed_hist_gt (total
    counts), ka_speed_edges and ka_per_file (file id -> ape, mae, jerk, accel).
    """
    pairs = paired(generated, real)
    gen = [g for g, _ in pairs]
    ref = [r for _, r in pairs]
    apes, maes = ape_per_file(pairs), mae_per_file(pairs)
    jerks, accels = jerk_per_file(gen), acceleration_per_file(gen)
    h_gen = speed_histograms(gen, bin_width, max_speed)
    h_ref = speed_histograms(ref, bin_width, max_speed)
    ids = list(file_ids) if file_ids is not None else [str(i) for i in range(len(pairs))]
    if len(ids) != len(pairs):
        raise ValueError(f"KA metrics: {len(ids)} file ids for {len(pairs)} clips")
    return {
        "ka_ape": _mean_over_files(apes),
        "ka_mae": _mean_over_files(maes),
        "ka_jerk": _mean_over_files(jerks),
        "ka_accel": _mean_over_files(accels),
        "ka_jerk_gt": average_jerk(ref),
        "ka_accel_gt": average_acceleration(ref),
        "ka_hellinger": hellinger_distance(h_gen, h_ref),
        "ka_speed_hist": h_gen.total.tolist(),
        "ka_speed_hist_gt": h_ref.total.tolist(),
        "ka_speed_edges": h_gen.edges.tolist(),
        "ka_per_file": {fid: {"ka_ape": a, "ka_mae": m, "ka_jerk": j, "ka_accel": c}
                        for fid, a, m, j, c in zip(ids, apes, maes, jerks, accels)},
    }
