"""Joint positions (+ velocities) as motion features, with the way back to BVH through IK.

The representation of Kucherenko et al. 2019 (and of the position-based methods after it):
BVH -> resample to fps -> optional mirror -> forward kinematics -> per node [px, py, pz] and,
when `velocities`, [vx, vy, vz] (v_t = p_t - p_{t-1}, v_0 = 0, per frame: no fps scaling), nodes
interleaved as [p, v] -> drop channels constant over the training set -> standardize.
`inverse` drops the velocities (as KA does after decoding) and solves joint rotations on the
source skeleton (ik.py), so every position-predicting method writes a BVH a user can open.

Nodes: the selected joints (`joints`, [] = all; the root always) in skeleton order, then the
End Sites of the selected joints; names `Hips_px`, `Hips_vx`, `LeftHand_End_pz`. Units are the
BVH's own (cm in our datasets).

Root (`root`):
  "fixed" (KA's reference): the root translation is ignored -- the root stays at its training-
          mean position (KA: hips at (0, 60, 0)) -- while the root rotation is applied, so the
          heading is in the positions. The root's own channels are then constant and dropped.
  "world": the root translation is kept (positions in the file's world frame).

Fitting streams like MotionPipeline (`file_stats` -> mergeable MotionStats -> `fit_from_stats`).
In "fixed" mode a file's stats are taken with the root at the origin (the training mean is not
known yet); the fit shifts mean, min and max by the mean root translation, which the stats hold.
`raw_mean`, `raw_std`, `raw_max_abs` give Kucherenko's normalizer (mean and max |y| of the raw
training frames) in raw units for the kept channels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from gesture_jax.motion.bvh import BVH, Skeleton
from gesture_jax.motion.channels import frames_from_local
from gesture_jax.motion.ik import IKRig, Node, fk_node_positions, node_names, position_nodes
from gesture_jax.motion.pipeline import (FittedFeatures, MotionPipelineError, MotionStats, RootStart, local_at_fps,
                                         merge_all, merge_stats, read_fitted, rest_pose, save_fitted, select_joints,
                                         skeleton_from_dict, skeleton_from_saved, stats_from_raw)
from gesture_jax.motion.root import root_to_deltas
from gesture_jax.motion.rotations import quat_to_matrix
from gesture_jax.storage import Path

__all__ = ["PositionPipeline", "FORMAT", "ROOT_MODES"]

FORMAT = "gesture_jax.position_pipeline/1"
ROOT_MODES = ("fixed", "world")


@dataclass
class _Fitted:
    skeleton: Skeleton
    raw_names: list[str]
    keep: np.ndarray          # [D] bool
    shift: np.ndarray         # [D] added to a file's raw features (the fixed root's mean position)
    const_values: np.ndarray  # [D] fill for dropped channels (training mean, raw units)
    mean: np.ndarray          # [F]
    std: np.ndarray           # [F]
    max_abs: np.ndarray       # [F] max |raw| over the training frames
    rest_quats: np.ndarray    # [J, 4] mean local rotation of every joint
    rest_trans: np.ndarray    # [J, 3] mean local translation of every joint
    count: int
    sources: int
    rig: IKRig | None = None  # built on first inverse


@dataclass
class PositionPipeline(FittedFeatures):
    """Fitted on training files, then `transform` (BVH -> features) and `inverse` (features -> BVH).

    fps: model frame rate; joints: selected joint names ([] = every joint; the root always
    kept); root: "fixed" (KA reference) or "world"; velocities: add per-frame velocities (KA:
    True); constant_eps: a channel whose training std is below this is dropped.
    """

    fps: float = 20.0
    joints: list[str] = field(default_factory=list)
    root: str = "fixed"
    velocities: bool = True
    constant_eps: float = 1e-6
    _fit: _Fitted | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.fps = float(self.fps)
        self.joints = [str(j) for j in self.joints]
        self.velocities = bool(self.velocities)
        if not self.fps > 0:
            raise MotionPipelineError(f"fps must be positive, got {self.fps}")
        if self.root not in ROOT_MODES:
            raise MotionPipelineError(f"data.positions_root must be one of {', '.join(ROOT_MODES)}; got {self.root!r}")
        dup = sorted({j for j in self.joints if self.joints.count(j) > 1})
        if dup:
            raise MotionPipelineError(f"joint list names {dup} more than once")

    @classmethod
    def from_config(cls, data_cfg: Any) -> "PositionPipeline":
        """From the `data` section (fps, joints, positions_root, position_velocities, constant_eps)."""
        get = data_cfg.get if hasattr(data_cfg, "get") else (lambda k, d=None: getattr(data_cfg, k, d))
        vel = get("position_velocities", True)
        return cls(fps=float(get("fps", 20)), joints=list(get("joints", []) or []),
                   root=str(get("positions_root", "fixed")), velocities=True if vel is None else bool(vel),
                   constant_eps=float(get("constant_eps", 1e-6) or 1e-6))

    _KIND = "position"

    # ---------------------------------------------------------------- properties (and FittedFeatures')
    @property
    def nodes(self) -> list[Node]:
        """(joint index, is End Site) of every node, in feature order."""
        sk = self._need_fit().skeleton
        return position_nodes(sk, select_joints(sk, self.joints, "<fitted skeleton>"))

    @property
    def node_names(self) -> list[str]:
        return node_names(self._need_fit().skeleton, self.nodes)

    @property
    def channels_per_node(self) -> int:
        return 6 if self.velocities else 3

    @property
    def raw_mean(self) -> np.ndarray:
        """[F] float64 training mean of the kept channels, raw units."""
        return self._need_fit().mean.copy()

    @property
    def raw_std(self) -> np.ndarray:
        """[F] float64 training std of the kept channels, raw units."""
        return self._need_fit().std.copy()

    @property
    def raw_max_abs(self) -> np.ndarray:
        """[F] float64 max |y| of the kept channels over the raw training frames (KA's M)."""
        return self._need_fit().max_abs.copy()

    # ---------------------------------------------------------------- layout
    def _names(self, sk: Skeleton, nodes: Sequence[Node]) -> list[str]:
        kinds = ["p", "v"] if self.velocities else ["p"]
        return [f"{n}_{k}{a}" for n in node_names(sk, nodes) for k in kinds for a in "xyz"]

    def _shift(self, names: list[str], root_mean: np.ndarray) -> np.ndarray:
        """[D] the fixed root's mean position on every position channel (0 in world mode)."""
        s = np.zeros(len(names))
        if self.root == "fixed":
            for i, n in enumerate(names):
                if n[-3:-1] == "_p":
                    s[i] = root_mean["xyz".index(n[-1])]
        return s

    def _raw(self, bvh: BVH, mirror: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(raw features [N, D] float64 before the fixed-root shift, local rots, trans, raw names)."""
        sk = bvh.skeleton
        sel = select_joints(sk, self.joints, str(bvh.path or "<bvh>"))
        rots, trans = local_at_fps(bvh, self.fps, mirror)
        nodes = position_nodes(sk, sel)
        names = node_names(sk, nodes)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise MotionPipelineError(f"{bvh.path or '<bvh>'}: node names {dup} clash (a joint named like an End Site)")
        root_pos = np.zeros_like(trans[:, 0]) if self.root == "fixed" else trans[:, 0]
        X = fk_node_positions(sk, nodes, rots, trans, root_pos)                # [N, K, 3]
        N = X.shape[0]
        if self.velocities:
            V = np.zeros_like(X)
            V[1:] = X[1:] - X[:-1]                                              # per frame, v_0 = 0
            raw = np.stack([X, V], axis=2).reshape(N, -1)                       # [N, K * 6]: [p, v] per node
        else:
            raw = X.reshape(N, -1)                                              # [N, K * 3]
        return raw, rots, trans, self._names(sk, nodes)

    # ---------------------------------------------------------------- fitting
    def file_stats(self, bvh: BVH, mirror: bool = False) -> MotionStats:
        """Mergeable moments of one file (its mirrored copy when mirror=True). Needs no fit."""
        raw, rots, trans, names = self._raw(bvh, mirror)
        return stats_from_raw(str(bvh.path or "<bvh>") + (" (mirrored)" if mirror else ""), bvh.skeleton, names,
                              raw, rots, trans)

    def fit_from_stats(self, stats: Sequence[MotionStats]) -> "PositionPipeline":
        """Fit constants, standardization, max |y| and the rest pose from `file_stats` results."""
        total = merge_all(stats)
        if total.minimum is None or total.maximum is None:
            raise MotionPipelineError(f"{total.source}: its stats have no min/max (written by an older version); "
                                      f"delete the stats cache and prepare again")
        sk = skeleton_from_dict(total.skeleton)
        qs, ts = rest_pose(total)
        names = list(total.raw_names)
        shift = self._shift(names, ts[0])
        std = np.sqrt(np.maximum(total.m2, 0.0) / total.count)
        keep = std >= self.constant_eps
        mean = total.mean + shift
        max_abs = np.maximum(np.abs(total.minimum + shift), np.abs(total.maximum + shift))
        self._fit = _Fitted(skeleton=sk, raw_names=names, keep=keep, shift=shift, const_values=mean.copy(),
                            mean=mean[keep].copy(), std=std[keep].copy(), max_abs=max_abs[keep].copy(),
                            rest_quats=qs, rest_trans=ts, count=int(total.count), sources=int(total.sources))
        return self

    def fit(self, bvhs: Iterable[BVH], mirror: bool = False) -> "PositionPipeline":
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
    def raw(self, bvh: BVH, mirror: bool = False) -> np.ndarray:
        """BVH -> unstandardized features [N at fps, D] float64 (every channel, constant ones too)."""
        f = self._need_fit()
        raw, _, _, names = self._raw(bvh, mirror)
        if names != f.raw_names:
            extra = sorted(set(names) ^ set(f.raw_names))[:5]
            raise MotionPipelineError(f"{bvh.path or '<bvh>'}: its selected joints/end sites differ from the fitted "
                                      f"skeleton (e.g. {extra}); was the pipeline fitted on another dataset?")
        return raw + f.shift

    def transform(self, bvh: BVH, mirror: bool = False) -> np.ndarray:
        """BVH -> standardized features, float32 [N at self.fps, feature_dim]."""
        f = self._need_fit()
        return ((self.raw(bvh, mirror)[:, f.keep] - f.mean) / f.std).astype(np.float32)

    def positions(self, features: Any) -> np.ndarray:
        """Standardized features [N, F] -> node positions [N, K, 3] float64 (raw units, velocities dropped)."""
        f = self._need_fit()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise MotionPipelineError(f"features must be [N, {self.feature_dim}], got {tuple(x.shape)}")
        raw = np.broadcast_to(f.const_values, (x.shape[0], f.const_values.shape[0])).copy()
        raw[:, f.keep] = x * f.std + f.mean
        per_node = raw.reshape(x.shape[0], -1, self.channels_per_node)        # [N, K, 3 or 6]
        return per_node[:, :, :3].copy()

    def root_start(self, bvh: BVH, mirror: bool = False) -> RootStart:
        """First-frame ground position and heading of a file (see `inverse` for what it is used for)."""
        root = select_joints(bvh.skeleton, self.joints, str(bvh.path or "<bvh>"))[0]
        rots, trans = local_at_fps(bvh, self.fps, mirror)
        return root_to_deltas(rots[:, root], trans[:, root])[1]

    def _rig(self) -> IKRig:
        f = self._need_fit()
        if f.rig is None:
            f.rig = IKRig.build(f.skeleton, self.nodes, quat_to_matrix(f.rest_quats), f.rest_trans)
        return f.rig

    def inverse(self, features: Any, start: RootStart | None = None) -> BVH:
        """Features [N, F] (standardized) -> BVH in the source skeleton at self.fps, by IK.

        The positions hold the heading already (the root rotation is in them), so `start` only
        moves a "fixed" root from its training-mean ground position to (start.x, start.z); in
        "world" mode the positions are where they are and `start` is ignored.
        """
        f = self._need_fit()
        X = self.positions(features)                                           # [N, K, 3]
        if start is not None and self.root == "fixed":
            X = X + np.array([start.x - f.rest_trans[0, 0], 0.0, start.z - f.rest_trans[0, 2]])
        rots, trans = self._rig().solve(X)
        sk = f.skeleton
        return BVH(sk.copy(), frames_from_local(sk, rots, trans), 1.0 / self.fps)

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> None:
        """pipeline.json (config, skeleton, names) + pipeline.npz (arrays). No pickles."""
        f = self._need_fit()
        save_fitted(directory, FORMAT,
                    {"fps": self.fps, "joints": self.joints, "root": self.root, "velocities": self.velocities,
                     "constant_eps": self.constant_eps},
                    f.skeleton,
                    {"node_names": self.node_names, "raw_feature_names": f.raw_names,
                     "feature_names": self.feature_names, "feature_dim": self.feature_dim,
                     "frames_fitted": f.count, "files_fitted": f.sources},
                    dict(keep=f.keep, shift=f.shift, const_values=f.const_values, mean=f.mean, std=f.std,
                         max_abs=f.max_abs, rest_quats=f.rest_quats, rest_trans=f.rest_trans))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "PositionPipeline":
        d = Path(directory)
        meta, arr = read_fitted(d, FORMAT, "position")
        c = meta["config"]
        p = cls(fps=c["fps"], joints=c["joints"], root=c["root"], velocities=c["velocities"],
                constant_eps=c["constant_eps"])
        p._fit = _Fitted(skeleton=skeleton_from_saved(meta["skeleton"], arr), raw_names=meta["raw_feature_names"],
                         keep=arr["keep"].astype(bool), shift=arr["shift"], const_values=arr["const_values"],
                         mean=arr["mean"], std=arr["std"], max_abs=arr["max_abs"], rest_quats=arr["rest_quats"],
                         rest_trans=arr["rest_trans"], count=int(meta.get("frames_fitted", 0)),
                         sources=int(meta.get("files_fitted", 0)))
        if p.feature_names != meta["feature_names"]:
            raise MotionPipelineError(f"{d}: pipeline.json and pipeline.npz disagree (feature names)")
        return p
