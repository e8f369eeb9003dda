"""Change the frame rate of motion: slerp for rotations, linear for translations.

Per-channel linear interpolation of Euler angles is wrong near +-180 degrees and at gimbal
lock; interpolating unit quaternions along the shortest arc is the rotation-correct way.
For integer ratios (60 -> 20 fps) the output frames are exactly every k-th input frame.
"""
from __future__ import annotations

import numpy as np

from gesture_jax.motion.bvh import BVH, Skeleton
from gesture_jax.motion.channels import frames_from_local, local_transforms
from gesture_jax.motion.rotations import matrix_to_quat, quat_slerp, quat_to_matrix

__all__ = ["effective_fps", "same_fps", "resample_times", "resample_local", "resample_to_local", "resample_bvh"]


def effective_fps(frame_time: float, tol: float = 1e-3) -> float:
    """1/frame_time, snapped to the nearest integer when within `tol` (relative).

    Files store rounded frame times (0.016667, 0.03333); taking them literally would
    shift frame 3000 of a 60 fps take by a sixth of a frame.
    """
    fps = 1.0 / float(frame_time)
    r = round(fps)
    return float(r) if r > 0 and abs(fps - r) <= tol * fps else fps


def same_fps(a: float, b: float, tol: float = 1e-3) -> bool:
    return abs(a - b) <= tol * max(a, b)


def resample_times(n_src: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Fractional source-frame positions [M] of the output frames (t = k / dst_fps, inside the take)."""
    if n_src <= 0:
        return np.zeros((0,))
    duration = (n_src - 1) / src_fps
    m = int(np.floor(duration * dst_fps + 1e-6)) + 1
    pos = np.arange(m) * (src_fps / dst_fps)
    return np.minimum(pos, n_src - 1)


def _brackets(n_src: int, src_fps: float, dst_fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output frame: source frames (i0, i1) around it and the weight w of i1."""
    pos = resample_times(n_src, src_fps, dst_fps)
    i0 = np.minimum(np.floor(pos + 1e-9).astype(np.int64), n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w = np.clip(pos - i0, 0.0, 1.0)  # [M]
    w[np.abs(w) < 1e-9] = 0.0
    return i0, i1, w


def _interpolate(r0, r1, t0, t1, w):
    """Slerp between rotations r0 -> r1 [M, J, 3, 3] and lerp t0 -> t1 [M, J, 3] at weights w [M]."""
    J = r0.shape[1]
    qm = quat_slerp(matrix_to_quat(r0), matrix_to_quat(r1), np.broadcast_to(w[:, None], (len(w), J)))
    out_r = quat_to_matrix(qm)
    exact = w == 0.0
    out_r[exact] = r0[exact]  # keep input frames bit-exact where they coincide
    out_t = t0 * (1.0 - w)[:, None, None] + t1 * w[:, None, None]
    return out_r, out_t


def resample_local(rots: np.ndarray, trans: np.ndarray, src_fps: float, dst_fps: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """rots [N, J, 3, 3], trans [N, J, 3] at src_fps -> same at dst_fps (M frames)."""
    if same_fps(src_fps, dst_fps):
        return rots, trans
    i0, i1, w = _brackets(rots.shape[0], src_fps, dst_fps)
    return _interpolate(rots[i0], rots[i1], trans[i0], trans[i1], w)


def resample_to_local(skeleton: Skeleton, frames: np.ndarray, src_fps: float, dst_fps: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Local transforms at dst_fps straight from channel values [N, C] at src_fps.

    Only the source frames that output frames need are converted (120 -> 20 fps touches
    one frame in six), which is what makes preparing BEAT at 120 fps cheap.
    """
    frames = np.asarray(frames, np.float64)
    if same_fps(src_fps, dst_fps):
        return local_transforms(skeleton, frames)
    i0, i1, w = _brackets(frames.shape[0], src_fps, dst_fps)
    need = np.unique(np.concatenate([i0, i1[w > 0]]))
    rots, trans = local_transforms(skeleton, frames[need])
    k0, k1 = np.searchsorted(need, i0), np.searchsorted(need, np.where(w > 0, i1, i0))
    return _interpolate(rots[k0], rots[k1], trans[k0], trans[k1], w)


def resample_bvh(bvh: BVH, fps: float) -> BVH:
    """The same motion at `fps` (frame time 1/fps), every channel layout kept."""
    src = effective_fps(bvh.frame_time)
    if same_fps(src, fps):
        return BVH(bvh.skeleton, bvh.frames.copy(), 1.0 / fps, path=bvh.path)
    r, t = resample_to_local(bvh.skeleton, bvh.frames, src, fps)
    return BVH(bvh.skeleton, frames_from_local(bvh.skeleton, r, t), 1.0 / fps, path=bvh.path)
