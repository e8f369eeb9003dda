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
           "joint_rotation_matrices"]


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


def bvh_positions(bvh: BVH) -> np.ndarray:
    """[N, J, 3] world positions (file units, cm) of every joint of a BVH."""
    rots, trans = bvh_local_transforms(bvh)
    return forward_kinematics(bvh.skeleton.parents, bvh.skeleton.offsets, rots, trans[:, 0], trans)
