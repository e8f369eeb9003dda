"""Forward kinematics: joint rotations + skeleton -> world joint positions (numpy or jax.numpy).

Used by the round-trip checks (positions are what a viewer sees, so "the inverse is exact"
is judged in centimetres), by the mirror test, and by sampling/eval (stick figures, metrics).
"""
from __future__ import annotations

import numpy as np

from gesture_jax.motion.bvh import BVH, Skeleton
from gesture_jax.motion.channels import local_transforms
from gesture_jax.motion.rotations import namespace

__all__ = ["forward_kinematics", "forward_kinematics_global", "bvh_local_transforms", "bvh_positions",
           "joint_rotation_matrices", "remove_heading"]


def forward_kinematics_global(parents, offsets, local_rotmats, root_pos, local_translations=None, xp=None):
    """World positions [..., J, 3] and world rotations [..., J, 3, 3].

    parents: [J] ints (-1 root; parents precede children); offsets: [J, 3] rest offsets;
    local_rotmats: [..., J, 3, 3]; root_pos: [..., 3] position of root joints (every joint
    with parent -1); local_translations: optional [..., J, 3] per-frame translation from the
    parent that replaces `offsets` (BVH joints with position channels).
    """
    xp = namespace(local_rotmats, root_pos, xp=xp)
    parents = [int(p) for p in parents]
    offsets = xp.asarray(offsets, dtype=local_rotmats.dtype)
    pos: list = []
    rot: list = []
    for j, p in enumerate(parents):
        t = offsets[j] if local_translations is None else local_translations[..., j, :]
        if p < 0:
            rot.append(local_rotmats[..., j, :, :])
            # the first root is placed at root_pos; further roots (rare) at their translation
            pos.append(root_pos if j == 0 else xp.broadcast_to(t, root_pos.shape))
        else:
            if p >= j:
                raise ValueError(f"parent {p} of joint {j} does not precede it")
            rot.append(rot[p] @ local_rotmats[..., j, :, :])
            pos.append(pos[p] + xp.einsum("...ij,...j->...i", rot[p], t))
    return xp.stack(pos, axis=-2), xp.stack(rot, axis=-3)


def forward_kinematics(parents, offsets, local_rotmats, root_pos, local_translations=None, xp=None):
    """World joint positions [..., J, 3] (see forward_kinematics_global)."""
    return forward_kinematics_global(parents, offsets, local_rotmats, root_pos, local_translations, xp)[0]


def joint_rotation_matrices(skeleton: Skeleton, frames: np.ndarray) -> np.ndarray:
    """[N, J, 3, 3] local rotations from BVH channel values (degrees), each joint's own order."""
    return local_transforms(skeleton, frames)[0]


def bvh_local_transforms(bvh: BVH) -> tuple[np.ndarray, np.ndarray]:
    """(local rotations [N, J, 3, 3], local translations [N, J, 3]) of a BVH.

    A joint's translation is its OFFSET with any position channels replacing the matching
    components (root positions in ZEGGS/BEAT/GENEA are absolute, not added to the OFFSET).
    """
    return local_transforms(bvh.skeleton, bvh.frames)


def remove_heading(root_rot: np.ndarray) -> np.ndarray:
    """Root rotations [N, 3, 3] with their heading (the yaw of the root's forward axis +Z about
    the vertical axis +Y) taken out: R -> Ry(-yaw) R. What is left is the root's tilt and roll,
    and the twist that does not turn the forward axis away from the vertical plane it spans."""
    fwd = root_rot[..., :, 2]  # R @ (0, 0, 1)
    yaw = np.arctan2(fwd[..., 0], fwd[..., 2])  # 0 when facing +Z
    c, s = np.cos(-yaw), np.sin(-yaw)
    ry = np.zeros(root_rot.shape, root_rot.dtype)
    ry[..., 0, 0], ry[..., 0, 2], ry[..., 1, 1], ry[..., 2, 0], ry[..., 2, 2] = c, s, 1.0, -s, c
    return ry @ root_rot


def bvh_positions(bvh: BVH, *, heading_free: bool = False) -> np.ndarray:
    """[N, J, 3] world positions (file units, cm) of every joint of a BVH.

    heading_free: every frame seen from its root (Y up): the root's ground position (x, z) is
    set to 0 and its heading (rotation about Y) removed, so a body that slowly turns or walks
    gives the same positions as one that does not. Evaluation uses this: generated root motion
    is integrated from per-frame deltas and drifts (tens of degrees over a 20 s clip for a small
    model), which would otherwise dominate FGD while saying nothing about gesturing.
    """
    rots, trans = bvh_local_transforms(bvh)
    root = trans[:, 0]
    if heading_free:
        rots = rots.copy()
        rots[:, 0] = remove_heading(rots[:, 0])
        root = root.copy()
        root[:, [0, 2]] = 0.0
    return forward_kinematics(bvh.skeleton.parents, bvh.skeleton.offsets, rots, root, trans)
