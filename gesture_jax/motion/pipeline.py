"""Motion features with an exact inverse: BVH -> standardized [N, F] float32 -> BVH.

Steps, in the reference's order (Persona-Gestor's pymo pipeline: DownSampler, Mirror,
JointSelector(include_root=True), RootTransformer('pos_rot_deltas'),
MocapParameterizer('expmap'), ConstantsRemover, then a standard scaler):

  1. resample to `fps` (slerp, resample.py)     5. exp maps of joint rotations, continuous in time
  2. optional mirror (mirror.py)                 6. drop channels constant over the training set
  3. joint selection (root always kept)          7. standardize with training mean / std
  4. root as pos_rot_deltas (root.py)

Raw feature layout (before 6-7), per frame:
  root: <root>_{X,Y,Z}position (in the heading frame, minus the ground reference),
        <root>_dXposition, <root>_dZposition, <root>_dYrotation, <root>_expmap_{x,y,z}
  each other selected joint, in skeleton order: its position channels (6-channel joints,
        e.g. GENEA 2023) then <joint>_expmap_{x,y,z}.

Differences from the reference, on purpose:
  * resampling interpolates (slerp) instead of taking every k-th frame, so any frame rate
    works; for integer ratios the frames are the same except that the reference also
    dropped the last frame of every take;
  * constant channels and their fill values come from the whole training set (pooled
    std < constant_eps; fill = mean), not from the first file only;
  * joints left out of the selection are restored with their mean rotation over the
    training set (a normalized quaternion mean) instead of the first file's first frame;
  * the root's first-frame ground position and heading, which pos_rot_deltas cannot hold,
    can be given to `inverse` (`root_start`) so a round trip is exact in world space.

Features come in raw order minus the dropped channels, or in an explicit order given by
`MotionPipeline.from_feature_order` (e.g. Persona-Gestor's PyMO column order, see
methods/persona_gestor/reference_data.py); `save` / `load` keep that order.

Fitting streams: `file_stats` reduces one file to mergeable moments (count, mean, M2 of
every raw channel plus rotation/translation sums of every joint), so preparation can run
in parallel processes and fit with `fit_from_stats` in bounded memory.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from gesture_jax import storage
from gesture_jax.errors import UserError
from gesture_jax.motion.bvh import BVH, Skeleton
from gesture_jax.motion.channels import frames_from_local
from gesture_jax.motion.mirror import mirror_local, mirror_pairs
from gesture_jax.motion.resample import effective_fps, resample_to_local
from gesture_jax.motion.root import RootStart, deltas_to_root, root_to_deltas
from gesture_jax.motion.rotations import (expmap_continuity, expmap_to_matrix, matrix_to_expmap, matrix_to_quat,
                                          quat_to_matrix)

__all__ = ["MotionPipeline", "MotionPipelineError", "MotionStats", "merge_stats", "RootStart", "select_joints",
           "local_at_fps", "stats_from_raw", "merge_all", "rest_pose", "skeleton_from_dict", "skeleton_to_saved",
           "skeleton_from_saved"]

FORMAT = "gesture_jax.motion_pipeline/1"
ROOT_DIMS = 9  # pos 3, dpos 2, dyaw 1, expmap 3


class MotionPipelineError(UserError, ValueError):
    """A file or joint list that does not fit the pipeline; the message names the file/joint."""


# ------------------------------------------------------------------------------------- stats

@dataclass
class MotionStats:
    """Mergeable summary of one or more files (all arrays float64).

    count: frames; mean / m2: [D] running mean and sum of squared deviations of the raw
    features; quat_sum [J, 4] / trans_sum [J, 3]: sums of every joint's local rotation
    (unit quaternion, w >= 0) and translation, for restoring unselected joints.
    max_abs / minimum / maximum: optional [D] max |x|, min x and max x of the raw features
    (Kucherenko's normalizer divides by max |y| of the raw training frames); None in caches
    written before they existed, and a merge with such a cache gives None.
    """

    source: str
    skeleton: dict
    raw_names: list[str]
    count: int
    mean: np.ndarray
    m2: np.ndarray
    quat_sum: np.ndarray
    trans_sum: np.ndarray
    sources: int = 1
    max_abs: np.ndarray | None = None
    minimum: np.ndarray | None = None
    maximum: np.ndarray | None = None


def merge_stats(a: MotionStats, b: MotionStats) -> MotionStats:
    """Chan et al.'s parallel update: merging in any order gives the same moments."""
    if list(a.raw_names) != list(b.raw_names):
        raise MotionPipelineError(f"{b.source}: feature layout differs from {a.source} "
                                  f"(different skeleton or channels for the selected joints)")
    if list(a.skeleton["names"]) != list(b.skeleton["names"]):
        raise MotionPipelineError(f"{b.source}: skeleton joints differ from {a.source}")
    n = a.count + b.count
    if n == 0:
        return a
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / n)
    both = lambda x, y, f: None if x is None or y is None else f(x, y)  # noqa: E731
    return MotionStats(a.source, a.skeleton, list(a.raw_names), n, mean, m2, a.quat_sum + b.quat_sum,
                       a.trans_sum + b.trans_sum, a.sources + b.sources,
                       max_abs=both(a.max_abs, b.max_abs, np.maximum), minimum=both(a.minimum, b.minimum, np.minimum),
                       maximum=both(a.maximum, b.maximum, np.maximum))


def stats_from_raw(source: str, skeleton: Skeleton, raw_names: list[str], raw: np.ndarray, rots: np.ndarray,
                   trans: np.ndarray) -> MotionStats:
    """Moments of one file's raw features [N, D] plus its local rotations [N, J, 3, 3] and
    translations [N, J, 3] (for the mean pose); shared by every motion representation."""
    q = matrix_to_quat(rots)  # [N, J, 4], w >= 0
    mean = raw.mean(axis=0)
    return MotionStats(source=source, skeleton=_skeleton_to_dict(skeleton), raw_names=list(raw_names),
                       count=int(raw.shape[0]), mean=mean, m2=((raw - mean) ** 2).sum(axis=0), quat_sum=q.sum(axis=0),
                       trans_sum=trans.sum(axis=0), max_abs=np.abs(raw).max(axis=0), minimum=raw.min(axis=0),
                       maximum=raw.max(axis=0))


def merge_all(stats: Sequence[MotionStats]) -> MotionStats:
    """All stats merged (any order), or a clear error when there is nothing to fit on."""
    stats = list(stats)
    if not stats:
        raise MotionPipelineError("fit_from_stats needs at least one file's stats")
    total = stats[0]
    for s in stats[1:]:
        total = merge_stats(total, s)
    if total.count < 1:
        raise MotionPipelineError("no frames to fit the motion pipeline on")
    return total


def rest_pose(total: MotionStats) -> tuple[np.ndarray, np.ndarray]:
    """(mean local rotation [J, 4] quaternions, mean local translation [J, 3]) of every joint:
    what joints outside the features are restored with (a normalized quaternion mean)."""
    qs = total.quat_sum / np.maximum(np.linalg.norm(total.quat_sum, axis=-1, keepdims=True), 1e-12)
    qs[np.linalg.norm(total.quat_sum, axis=-1) < 1e-12] = [1.0, 0.0, 0.0, 0.0]
    return qs, total.trans_sum / total.count


def select_joints(sk: Skeleton, joints: Sequence[str], source: str) -> list[int]:
    """Indices of the selected joints (root first, then skeleton order); [] selects every joint."""
    if not joints:
        return list(range(sk.num_joints))
    index = {n: i for i, n in enumerate(sk.names)}
    missing = [j for j in joints if j not in index]
    if missing:
        raise MotionPipelineError(
            f"{source}: joint {missing[0]!r} of the joint list is not in the skeleton"
            + (f" (also missing: {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else "")
            + f"; the file's joints are: {', '.join(sk.names)}")
    return sorted({0} | {index[j] for j in joints})


def local_at_fps(bvh: BVH, fps: float, mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """Local rotations [N, J, 3, 3] and translations [N, J, 3] at `fps` (mirrored if asked)."""
    sk = bvh.skeleton
    if bvh.num_frames == 0:
        raise MotionPipelineError(f"{bvh.path or '<bvh>'}: no frames")
    rots, trans = resample_to_local(sk, bvh.frames, effective_fps(bvh.frame_time), fps)
    if mirror:
        rots, trans = mirror_local(rots, trans, mirror_pairs(sk.names))
    return rots, trans


def skeleton_to_saved(sk: Skeleton) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON part, npz arrays) of a skeleton, as every saved pipeline stores it."""
    ends = sorted(sk.end_sites)
    meta = {"names": sk.names, "parents": sk.parents, "channels": sk.channels, "end_site_joints": ends}
    arrays = {"offsets": sk.offsets, "end_site_offsets": np.array([sk.end_sites[j] for j in ends]).reshape(-1, 3)}
    return meta, arrays


def skeleton_from_saved(meta: dict, arr: dict[str, np.ndarray]) -> Skeleton:
    ends = {int(j): arr["end_site_offsets"][k] for k, j in enumerate(meta["end_site_joints"])}
    return Skeleton(meta["names"], meta["parents"], arr["offsets"], meta["channels"], ends)


def _skeleton_to_dict(sk: Skeleton) -> dict:
    return {"names": list(sk.names), "parents": [int(p) for p in sk.parents], "offsets": sk.offsets.copy(),
            "channels": [list(c) for c in sk.channels],
            "end_sites": {int(k): np.asarray(v, np.float64) for k, v in sk.end_sites.items()}}


def skeleton_from_dict(d: dict) -> Skeleton:
    """The skeleton a MotionStats holds (its `skeleton` dict)."""
    return Skeleton(list(d["names"]), [int(p) for p in d["parents"]], np.asarray(d["offsets"], np.float64),
                    [list(c) for c in d["channels"]], {int(k): v for k, v in d["end_sites"].items()})


_skeleton_from_dict = skeleton_from_dict


# ------------------------------------------------------------------------------------- pipeline

@dataclass
class _Fitted:
    skeleton: Skeleton
    raw_names: list[str]
    keep: np.ndarray          # [D] bool
    const_values: np.ndarray  # [D] fill for dropped channels (training mean)
    mean: np.ndarray          # [F]
    std: np.ndarray           # [F]
    rest_quats: np.ndarray    # [J, 4] mean local rotation of every joint
    rest_trans: np.ndarray    # [J, 3] mean local translation of every joint
    count: int
    sources: int
    order: np.ndarray | None = None  # [F] int: raw-channel index of each feature (None: raw order of `keep`)


def save_fitted(directory: str | os.PathLike, fmt: str, config: dict, skeleton: Skeleton, fitted_meta: dict,
                arrays: dict[str, np.ndarray]) -> None:
    """pipeline.json (format, config, skeleton, names) + pipeline.npz (arrays): the saved form of
    every feature pipeline (no pickles). ``directory`` may be local or in a bucket (gs://);
    pipeline.json is written last, so its presence marks a complete save."""
    d = storage.path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sk_meta, sk_arrays = skeleton_to_saved(skeleton)
    meta = {"format": fmt, "config": config, "skeleton": sk_meta, **fitted_meta}
    buf = io.BytesIO()
    np.savez(buf, **sk_arrays, **arrays)
    (d / "pipeline.npz").write_bytes(buf.getvalue())
    (d / "pipeline.json").write_text(json.dumps(meta, indent=1))


def read_fitted(directory: str | os.PathLike, fmt: str, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(pipeline.json, pipeline.npz arrays) of a pipeline saved by ``save_fitted`` in format ``fmt``;
    MotionPipelineError naming the folder when unreadable or of another format."""
    d = storage.path(directory)
    try:
        meta = json.loads((d / "pipeline.json").read_text())
        with np.load(io.BytesIO((d / "pipeline.npz").read_bytes()), allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise MotionPipelineError(f"{d}: not a saved {kind} pipeline ({e})") from None
    if meta.get("format") != fmt:
        raise MotionPipelineError(f"{d}/pipeline.json: unknown format {meta.get('format')!r} (want {fmt})")
    return meta, arr


class FittedFeatures:
    """The read-only view of a fitted feature pipeline that every representation shares
    (MotionPipeline, positions.PositionPipeline): needs ``self._fit`` with ``keep``,
    ``raw_names`` and ``skeleton``, ``self.joints`` and a ``_KIND`` for the error message."""

    _KIND = "motion"

    @property
    def fitted(self) -> bool:
        return self._fit is not None

    def _need_fit(self):
        if self._fit is None:
            raise MotionPipelineError(f"the {self._KIND} pipeline is not fitted (call fit / fit_from_stats or load)")
        return self._fit

    @property
    def feature_dim(self) -> int:
        f = self._need_fit()
        order = getattr(f, "order", None)
        return int(f.keep.sum()) if order is None else len(order)

    @property
    def feature_names(self) -> list[str]:
        f = self._need_fit()
        order = getattr(f, "order", None)
        if order is not None:
            return [f.raw_names[i] for i in order]
        return [n for n, k in zip(f.raw_names, f.keep) if k]

    @property
    def raw_feature_names(self) -> list[str]:
        return list(self._need_fit().raw_names)

    @property
    def skeleton(self) -> Skeleton:
        return self._need_fit().skeleton

    @property
    def selected_joints(self) -> list[str]:
        sk = self._need_fit().skeleton
        return [sk.names[j] for j in select_joints(sk, self.joints, "<fitted skeleton>")]


@dataclass
class MotionPipeline(FittedFeatures):
    """Fitted on training files, then `transform` (BVH -> features) and `inverse` (features -> BVH).

    fps: model frame rate; joints: selected joint names ([] = every joint; the root is
    always kept); position_smoothing / rotation_smoothing: Gaussian sigmas (frames) of the
    root trajectory / heading (reference Persona-Gestor configs: 0, 0); constant_eps: a
    channel whose training std is below this is dropped (reference: 1e-6).
    """

    fps: float = 20.0
    joints: list[str] = field(default_factory=list)
    position_smoothing: float = 0.0
    rotation_smoothing: float = 0.0
    constant_eps: float = 1e-6
    _fit: _Fitted | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.fps = float(self.fps)
        self.joints = [str(j) for j in self.joints]
        if not self.fps > 0:
            raise MotionPipelineError(f"fps must be positive, got {self.fps}")
        dup = sorted({j for j in self.joints if self.joints.count(j) > 1})
        if dup:
            raise MotionPipelineError(f"joint list names {dup} more than once")

    @classmethod
    def from_config(cls, data_cfg: Any) -> "MotionPipeline":
        """From the `data` section of a config (fps, joints, optional root smoothing / constant_eps)."""
        get = data_cfg.get if hasattr(data_cfg, "get") else (lambda k, d=None: getattr(data_cfg, k, d))
        return cls(fps=float(get("fps", 20)), joints=list(get("joints", []) or []),
                   position_smoothing=float(get("root_position_smoothing", 0.0) or 0.0),
                   rotation_smoothing=float(get("root_rotation_smoothing", 0.0) or 0.0),
                   constant_eps=float(get("constant_eps", 1e-6) or 1e-6))

    @classmethod
    def from_feature_order(cls, skeleton: Skeleton, feature_names: Sequence[str], mean: Any, std: Any,
                           const_values: dict[str, float], rest_quats: Any, rest_trans: Any, *, fps: float,
                           joints: Sequence[str] = (), position_smoothing: float = 0.0,
                           rotation_smoothing: float = 0.0, constant_eps: float = 1e-6) -> "MotionPipeline":
        """A fitted pipeline whose features come in an explicit order (e.g. another implementation's).

        feature_names: raw channel names of this pipeline (``raw_feature_names`` of `skeleton` with
        `joints`), each at most once, in the wanted feature order; every raw channel left out
        must have a fill in `const_values` (it is dropped as constant and restored with that
        value by `inverse`). mean / std [F]: standardization of the features in that order.
        rest_quats [J, 4] / rest_trans [J, 3]: local rotation (w, x, y, z) and translation that
        joints outside the selection get in `inverse`.
        """
        p = cls(fps=fps, joints=list(joints), position_smoothing=position_smoothing,
                rotation_smoothing=rotation_smoothing, constant_eps=constant_eps)
        raw = p._raw_names(skeleton, p._selection(skeleton, "<skeleton>"))
        index = {n: i for i, n in enumerate(raw)}
        names = [str(n) for n in feature_names]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise MotionPipelineError(f"feature(s) {unknown[:5]} are not channels of this skeleton and joint "
                                      f"selection (its channels are: {', '.join(raw)})")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise MotionPipelineError(f"feature(s) {dup[:5]} named more than once")
        named = set(names)
        unfilled = [n for n in raw if n not in named and n not in const_values]
        if unfilled:
            raise MotionPipelineError(f"channel(s) {unfilled[:5]} are neither features nor constants with a fill "
                                      f"value ({len(unfilled)} in all)")
        order = np.array([index[n] for n in names], dtype=np.int64)
        mean = np.asarray(mean, np.float64).reshape(-1)
        std = np.asarray(std, np.float64).reshape(-1)
        if mean.shape != (len(order),) or std.shape != (len(order),):
            raise MotionPipelineError(f"mean / std must have {len(order)} values (one per feature), "
                                      f"got {mean.shape[0]} / {std.shape[0]}")
        keep = np.zeros(len(raw), bool)
        keep[order] = True
        fill = np.array([float(const_values.get(n, 0.0)) for n in raw], np.float64)
        fill[order] = mean
        J = skeleton.num_joints
        p._fit = _Fitted(skeleton=skeleton.copy(), raw_names=list(raw), keep=keep, const_values=fill,
                         mean=mean.copy(), std=std.copy(),
                         rest_quats=np.asarray(rest_quats, np.float64).reshape(J, 4).copy(),
                         rest_trans=np.asarray(rest_trans, np.float64).reshape(J, 3).copy(), count=0, sources=0,
                         order=order)
        return p

    def _feature_index(self, f: _Fitted) -> np.ndarray:
        """Raw-channel index (int array) or mask (bool, raw order) selecting the features."""
        return f.keep if f.order is None else f.order

    # ---------------------------------------------------------------- layout
    def _selection(self, sk: Skeleton, source: str) -> list[int]:
        """Indices of the selected joints (root first, then skeleton order)."""
        return select_joints(sk, self.joints, source)

    @staticmethod
    def _raw_names(sk: Skeleton, sel: list[int]) -> list[str]:
        r = sk.names[sel[0]]
        names = [f"{r}_Xposition", f"{r}_Yposition", f"{r}_Zposition", f"{r}_dXposition", f"{r}_dZposition",
                 f"{r}_dYrotation", f"{r}_expmap_x", f"{r}_expmap_y", f"{r}_expmap_z"]
        for j in sel[1:]:
            names += [f"{sk.names[j]}_{a}position" for a in sk.position_axes(j)]
            names += [f"{sk.names[j]}_expmap_{a}" for a in "xyz"]
        return names

    def _local(self, bvh: BVH, mirror: bool) -> tuple[np.ndarray, np.ndarray]:
        """Local rotations [N, J, 3, 3] and translations [N, J, 3] at the target fps (mirrored if asked)."""
        return local_at_fps(bvh, self.fps, mirror)

    def _raw(self, bvh: BVH, mirror: bool) -> tuple[np.ndarray, RootStart, np.ndarray, np.ndarray, list[str]]:
        """(raw features [N, D] float64, root start, rots, trans, raw names)."""
        sk = bvh.skeleton
        source = bvh.path or "<bvh>"
        sel = self._selection(sk, source)
        rots, trans = self._local(bvh, mirror)
        root = sel[0]
        feats, start = root_to_deltas(rots[:, root], trans[:, root], self.position_smoothing,
                                      self.rotation_smoothing)
        N = rots.shape[0]
        cols = [feats["pos"], feats["dpos"], feats["dyaw"][:, None],
                expmap_continuity(matrix_to_expmap(feats["rot"]), axis=0)]
        exps = expmap_continuity(matrix_to_expmap(rots[:, sel[1:]]), axis=0) if len(sel) > 1 else None
        for k, j in enumerate(sel[1:]):
            axes = sk.position_axes(j)
            if axes:
                cols.append(trans[:, j, ["XYZ".index(a) for a in axes]])
            cols.append(exps[:, k])
        raw = np.concatenate([c.reshape(N, -1) for c in cols], axis=1)
        return raw, start, rots, trans, self._raw_names(sk, sel)

    # ---------------------------------------------------------------- fitting
    def file_stats(self, bvh: BVH, mirror: bool = False) -> MotionStats:
        """Mergeable moments of one file (its mirrored copy when mirror=True). Needs no fit."""
        raw, _, rots, trans, names = self._raw(bvh, mirror)
        return stats_from_raw(str(bvh.path or "<bvh>") + (" (mirrored)" if mirror else ""), bvh.skeleton, names,
                              raw, rots, trans)

    def fit_from_stats(self, stats: Sequence[MotionStats]) -> "MotionPipeline":
        """Fit constants, standardization and rest pose from `file_stats` results (any order)."""
        total = merge_all(stats)
        std = np.sqrt(np.maximum(total.m2, 0.0) / total.count)
        keep = std >= self.constant_eps
        qs, ts = rest_pose(total)
        self._fit = _Fitted(skeleton=_skeleton_from_dict(total.skeleton), raw_names=list(total.raw_names),
                            keep=keep, const_values=total.mean.copy(), mean=total.mean[keep].copy(),
                            std=std[keep].copy(), rest_quats=qs, rest_trans=ts,
                            count=int(total.count), sources=int(total.sources))
        return self

    def fit(self, bvhs: Iterable[BVH], mirror: bool = False) -> "MotionPipeline":
        """Fit on training files, one at a time (bounded memory); mirror=True adds mirrored copies."""
        acc: MotionStats | None = None
        for b in bvhs:
            for m in ([False, True] if mirror else [False]):
                s = self.file_stats(b, mirror=m)
                acc = s if acc is None else merge_stats(acc, s)
        if acc is None:
            raise MotionPipelineError("fit needs at least one BVH")
        return self.fit_from_stats([acc])

    # ---------------------------------------------------------------- transform / inverse
    def _check_layout(self, names: list[str], source: str) -> None:
        f = self._need_fit()
        if names != f.raw_names:
            extra = sorted(set(names) ^ set(f.raw_names))[:5]
            raise MotionPipelineError(f"{source}: its selected joints/channels differ from the fitted skeleton "
                                      f"(e.g. {extra}); was the pipeline fitted on another dataset?")

    def transform(self, bvh: BVH, mirror: bool = False) -> np.ndarray:
        """BVH -> standardized features, float32 [N at self.fps, feature_dim]."""
        f = self._need_fit()
        raw, _, _, _, names = self._raw(bvh, mirror)
        self._check_layout(names, str(bvh.path or "<bvh>"))
        return ((raw[:, self._feature_index(f)] - f.mean) / f.std).astype(np.float32)

    def root_start(self, bvh: BVH, mirror: bool = False) -> RootStart:
        """First-frame ground position and heading of a file (what the features leave out)."""
        sk = bvh.skeleton
        root = self._selection(sk, str(bvh.path or "<bvh>"))[0]
        rots, trans = self._local(bvh, mirror)
        return root_to_deltas(rots[:, root], trans[:, root], self.position_smoothing, self.rotation_smoothing)[1]

    def inverse(self, features: Any, start: RootStart | None = None) -> BVH:
        """Features [N, F] (standardized, any float array) -> BVH in the source skeleton at self.fps.

        Unselected joints take their mean training rotation/translation; `start` places the
        first frame (default: origin, facing +Z).
        """
        f = self._need_fit()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise MotionPipelineError(f"features must be [N, {self.feature_dim}], got {tuple(x.shape)}")
        N = x.shape[0]
        raw = np.broadcast_to(f.const_values, (N, f.const_values.shape[0])).copy()
        raw[:, self._feature_index(f)] = x * f.std + f.mean
        sk = f.skeleton
        sel = self._selection(sk, "<fitted skeleton>")
        rots = np.broadcast_to(quat_to_matrix(f.rest_quats), (N, sk.num_joints, 3, 3)).copy()
        trans = np.broadcast_to(f.rest_trans, (N, sk.num_joints, 3)).copy()
        root = sel[0]
        R_root, p_root = deltas_to_root({"pos": raw[:, 0:3], "dpos": raw[:, 3:5], "dyaw": raw[:, 5],
                                         "rot": expmap_to_matrix(raw[:, 6:9])}, start)
        rots[:, root], trans[:, root] = R_root, p_root
        c = ROOT_DIMS
        for j in sel[1:]:
            axes = sk.position_axes(j)
            for a in axes:
                trans[:, j, "XYZ".index(a)] = raw[:, c]
                c += 1
            rots[:, j] = expmap_to_matrix(raw[:, c:c + 3])
            c += 3
        return BVH(sk.copy(), frames_from_local(sk, rots, trans), 1.0 / self.fps)

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> None:
        """pipeline.json (config, skeleton, names) + pipeline.npz (arrays). No pickles."""
        f = self._need_fit()
        save_fitted(directory, FORMAT,
                    {"fps": self.fps, "joints": self.joints, "position_smoothing": self.position_smoothing,
                     "rotation_smoothing": self.rotation_smoothing, "constant_eps": self.constant_eps},
                    f.skeleton,
                    {"raw_feature_names": f.raw_names, "feature_names": self.feature_names,
                     "feature_dim": self.feature_dim, "frames_fitted": f.count, "files_fitted": f.sources},
                    dict(keep=f.keep, const_values=f.const_values, mean=f.mean, std=f.std, rest_quats=f.rest_quats,
                         rest_trans=f.rest_trans, **({} if f.order is None else {"order": f.order})))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "MotionPipeline":
        d = storage.path(directory)
        meta, arr = read_fitted(d, FORMAT, "motion")
        c = meta["config"]
        p = cls(fps=c["fps"], joints=c["joints"], position_smoothing=c["position_smoothing"],
                rotation_smoothing=c["rotation_smoothing"], constant_eps=c["constant_eps"])
        sk = skeleton_from_saved(meta["skeleton"], arr)
        p._fit = _Fitted(skeleton=sk, raw_names=meta["raw_feature_names"], keep=arr["keep"].astype(bool),
                         const_values=arr["const_values"], mean=arr["mean"], std=arr["std"],
                         rest_quats=arr["rest_quats"], rest_trans=arr["rest_trans"],
                         count=int(meta.get("frames_fitted", 0)), sources=int(meta.get("files_fitted", 0)),
                         order=arr["order"].astype(np.int64) if "order" in arr else None)
        if p.feature_names != meta["feature_names"]:
            raise MotionPipelineError(f"{d}: pipeline.json and pipeline.npz disagree (feature names)")
        return p
