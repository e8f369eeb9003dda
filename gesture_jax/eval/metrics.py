"""The metric suite: every number `metrics.json` reports for one set of clips, from its constants.

One function, `evaluate_set`, turns a set of generated position clips plus the matching real
clips and waveforms into FGD (feature and raw space), BC, L1 diversity, jerk, acceleration and
the speed-histogram Hellinger distance. The constants live in `MetricConstants`, built from
`cfg.eval` and written next to the results, so a number can always be traced to how it was
measured. The model and every baseline go through this same function.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from gesture_jax.eval import beat, fgd, kinematic, kucherenko
from gesture_jax.eval.fgd_ae import FGDAutoencoder
from gesture_jax.eval.joints import root_relative

# the scalar metrics of one set, in table order: this project's protocol, then Kucherenko 2019's
SUMMARY_KEYS = ("fgd", "fgd_raw", "bc", "l1div", "jerk", "acceleration", "hellinger_speed")
KA_KEYS = ("ka_ape", "ka_mae", "ka_jerk", "ka_accel", "ka_jerk_gt", "ka_accel_gt", "ka_hellinger")


@dataclasses.dataclass(frozen=True)
class MetricConstants:
    """Every constant a metric depends on (defaults: DESIGN.md / the reference implementations)."""
    fps: float = 20.0
    sample_rate: int = 16000
    root_relative: bool = True       # subtract the root's x,z per frame before every metric
    heading_free: bool = True        # positions seen from the root: its heading (yaw) and ground position removed
    fgd_window: int = 34             # GENEA: windows of n frames ...
    fgd_stride: int = 17             # ... stride n/2
    fgd_eps: float = 1e-6            # covariance-diagonal offset when sqrtm is not finite
    fgd_method: str = "sqrtm"        # feature space: the reference scipy sqrtm
    fgd_raw_method: str = "auto"     # raw space: sqrtm up to fgd_auto_max_dim dims, else exact SVD route
    fgd_auto_max_dim: int = 1024
    bc_hop: int = 512                # librosa onset hop (samples at sample_rate)
    bc_sigma: float = 0.3            # seconds
    bc_order: int = 7                # argrelextrema order (frames)
    bc_threshold: float = 0.3        # minimum normalized speed of a motion beat
    bc_mask_frames: int = 60         # frames ignored at each end of a clip
    hist_joints: str = "upper"       # speed histograms over the BC joints ("upper") or "all" joints
    hist_bins: int = 50
    hist_max_speed: float = 0.0      # 0 = quantile of the real speeds
    hist_quantile: float = 0.99
    ka_hist_bin_width: float = 0.05  # Kucherenko 2019 speed histogram: bins of cm/frame ...
    ka_hist_max_speed: float = 1.0   # ... from 0 to this; faster frames dropped

    @classmethod
    def from_config(cls, cfg_eval: Any, fps: float, sample_rate: int = 16000) -> "MetricConstants":
        """Constants from a `cfg.eval` ConfigDict (missing keys keep their defaults)."""
        kw: dict[str, Any] = {"fps": float(fps), "sample_rate": int(sample_rate)}
        for f in dataclasses.fields(cls):
            if f.name in kw:
                continue
            if f.name in cfg_eval:
                kw[f.name] = type(f.default)(cfg_eval[f.name])
        if kw.get("fgd_stride", 0) <= 0:  # absent or 0: GENEA's n/2
            kw["fgd_stride"] = max(1, int(kw.get("fgd_window", cls.fgd_window)) // 2)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prepare_positions(clips: Sequence[np.ndarray], constants: MetricConstants) -> list[np.ndarray]:
    """World positions [N, J, 3] -> what every metric sees (root-relative when configured)."""
    return [root_relative(c) if constants.root_relative else np.asarray(c, np.float64) for c in clips]


@dataclasses.dataclass
class SetReference:
    """Everything about the real set that every compared set reuses (computed once)."""
    clips: list[np.ndarray]          # prepared real positions
    features: np.ndarray | None      # [W, latent] AE features of the real windows
    speed_edges: np.ndarray          # [bins+1]
    speed_hist: np.ndarray           # [bins]


def hist_joint_indices(constants: MetricConstants, bc_joints: Sequence[int] | None) -> Sequence[int] | None:
    """Joints pooled into the speed histograms (None = all)."""
    if constants.hist_joints not in ("upper", "all"):
        raise ValueError(f"eval.hist_joints must be 'upper' or 'all', got {constants.hist_joints!r}")
    return bc_joints if constants.hist_joints == "upper" else None


def make_reference(real: Sequence[np.ndarray], constants: MetricConstants, ae: FGDAutoencoder | None,
                   bc_joints: Sequence[int] | None = None) -> SetReference:
    """Prepare the real set once: positions, AE features, speed-histogram bins."""
    clips = prepare_positions(real, constants)
    feats = ae.features(clips) if ae is not None else None
    sp = kinematic.speeds(clips, constants.fps, hist_joint_indices(constants, bc_joints))
    edges = kinematic.speed_bin_edges(sp, constants.hist_bins, constants.hist_max_speed, constants.hist_quantile)
    return SetReference(clips, feats, edges, kinematic.speed_histogram(sp, edges))


def evaluate_set(generated: Sequence[np.ndarray], waves: Sequence[np.ndarray], reference: SetReference,
                 constants: MetricConstants, *, mean_speed: np.ndarray | float,
                 bc_joints: Sequence[int] | None, ae: FGDAutoencoder | None,
                 file_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """All metrics of one set of clips (world positions [N_i, J, 3]) paired with its waveforms.

    `reference` is the real set (`make_reference`); generated clip i is scored for BC against
    waves[i]. FGD is NaN (with the reason under "notes") when a set has fewer than two windows.

    The ka_* keys are Kucherenko 2019's protocol (eval/kucherenko.py, units/frame, all joints):
    generated clip i is paired with reference.clips[i], each pair cut to its shorter length.
    ka_ape / ka_mae are errors against that paired ground truth, computed for every set; they
    mean something only where clip i is meant to reproduce file i's motion (a model, ground
    truth), not for the mismatched, mean-pose or noise baselines, which have no such target.
    ka_jerk_gt / ka_accel_gt are the real motion's own values on the same frames.
    """
    if len(generated) != len(waves):
        raise ValueError(f"{len(generated)} clips but {len(waves)} waveforms")
    c = constants
    clips = prepare_positions(generated, c)
    notes: list[str] = []
    out: dict[str, Any] = {}
    try:
        if ae is None:
            out["fgd"] = float("nan")
            notes.append("fgd: no FGD autoencoder given")
        else:
            out["fgd"] = fgd.fgd_from_features(reference.features, ae.features(clips), eps=c.fgd_eps,
                                               method=c.fgd_method, auto_max_dim=c.fgd_auto_max_dim)
    except fgd.FGDError as e:
        out["fgd"] = float("nan")
        notes.append(f"fgd: {e}")
    try:
        out["fgd_raw"] = fgd.fgd_raw(reference.clips, clips, c.fgd_window, c.fgd_stride, eps=c.fgd_eps,
                                     method=c.fgd_raw_method, auto_max_dim=c.fgd_auto_max_dim)
    except fgd.FGDError as e:
        out["fgd_raw"] = float("nan")
        notes.append(f"fgd_raw: {e}")

    bcs = [beat.beat_consistency(p, w, c.fps, mean_speed, bc_joints, sr=c.sample_rate, hop_length=c.bc_hop,
                                 sigma=c.bc_sigma, order=c.bc_order, threshold=c.bc_threshold,
                                 mask_frames=c.bc_mask_frames)
           for p, w in zip(clips, waves)]
    out["bc"] = beat.beat_consistency_set(bcs)
    if not np.isfinite(out["bc"]):
        notes.append(f"bc: no clip has onsets inside frames [{c.bc_mask_frames}, N-{c.bc_mask_frames})")
    out["l1div"] = kinematic.l1_diversity(clips)
    out["jerk"] = kinematic.jerk(clips, c.fps)
    out["acceleration"] = kinematic.acceleration(clips, c.fps)
    hist = kinematic.speed_histogram(kinematic.speeds(clips, c.fps, hist_joint_indices(c, bc_joints)),
                                     reference.speed_edges)
    out["hellinger_speed"] = kinematic.hellinger(hist, reference.speed_hist)
    ids = list(file_ids) if file_ids is not None else [str(i) for i in range(len(clips))]
    ka = kucherenko.ka_metrics(clips, reference.clips, bin_width=c.ka_hist_bin_width,
                               max_speed=c.ka_hist_max_speed, file_ids=ids)
    ka_per_file = ka.pop("ka_per_file")
    out.update(ka)
    if not np.isfinite(out["ka_hellinger"]):
        notes.append(f"ka_hellinger: a set has no joint speed within [0, {c.ka_hist_max_speed}] units/frame")
    out["per_file"] = {
        fid: {"bc": r.score, "bc_frames": r.frames, "onsets": r.n_onsets,
              "motion_beats_mean": float(np.mean([len(b) for b in r.beats])) if r.beats else 0.0,
              "frames": int(p.shape[0]), "jerk": kinematic.jerk(p, c.fps),
              "acceleration": kinematic.acceleration(p, c.fps), "l1div": kinematic.l1_diversity(p),
              **ka_per_file[fid]}
        for fid, r, p in zip(ids, bcs, clips)}
    out["speed_hist"] = hist.tolist()
    out["notes"] = notes
    return out
