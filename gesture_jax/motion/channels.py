"""BVH channel values <-> local joint transforms (rotation matrices + translations).

Every motion step (resampling, mirroring, root features, exp maps) works on local
rotation matrices, which have no Euler order; only reading a file and writing one go
through this module, so each joint's own channel order is honoured exactly once.
"""
from __future__ import annotations

import numpy as np

from gesture_jax.motion.bvh import BVH, Skeleton
from gesture_jax.motion.rotations import axis_rotation, matrix_to_euler

__all__ = ["local_transforms", "frames_from_local"]


def local_transforms(skeleton: Skeleton, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rotations [N, J, 3, 3], translations [N, J, 3]) from channel values [N, C].

    A joint's rotation is the product of its rotation channels in file order; its
    translation is its OFFSET with position channels replacing the matching components.
    """
    frames = np.asarray(frames, dtype=np.float64)
    N, J = frames.shape[0], skeleton.num_joints
    rots = np.tile(np.eye(3), (N, J, 1, 1))
    trans = np.broadcast_to(skeleton.offsets, (N, J, 3)).copy()
    for j, (start, chans) in enumerate(zip(skeleton.channel_starts(), skeleton.channels)):
        R = None
        for c, name in enumerate(chans):
            col = frames[:, start + c]
            if name.endswith("rotation"):
                Ra = axis_rotation(name[0], np.deg2rad(col))
                R = Ra if R is None else R @ Ra
            else:
                trans[:, j, "XYZ".index(name[0])] = col
        if R is not None:
            rots[:, j] = R
    return rots, trans


def frames_from_local(skeleton: Skeleton, rots: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Channel values [N, C] (degrees / file units) from local transforms, in each joint's order.

    A joint with fewer than three rotation channels keeps only the rotation about its own
    axes (exact when the motion has none about the others, as in the file it came from).
    """
    rots = np.asarray(rots, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    N = rots.shape[0]
    out = np.zeros((N, skeleton.num_channels))
    for j, (start, chans) in enumerate(zip(skeleton.channel_starts(), skeleton.channels)):
        order = skeleton.rotation_order(j)
        if order:
            full = order + "".join(a for a in "XYZ" if a not in order)
            ang = np.rad2deg(matrix_to_euler(rots[:, j], full))  # [N, 3]
        k = 0
        for c, name in enumerate(chans):
            if name.endswith("rotation"):
                out[:, start + c] = ang[:, k]
                k += 1
            else:
                out[:, start + c] = trans[:, j, "XYZ".index(name[0])]
    return out


def bvh_from_local(skeleton: Skeleton, rots: np.ndarray, trans: np.ndarray, frame_time: float) -> BVH:
    return BVH(skeleton, frames_from_local(skeleton, rots, trans), frame_time)
