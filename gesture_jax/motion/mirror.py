"""Left/right mirroring: swap paired joints by name and reflect across the YZ plane (x -> -x).

With M = diag(-1, 1, 1), a mirrored joint j takes its partner's rotation conjugated,
M R M, and its partner's translation reflected, M t. Conjugating a rotation matrix is
independent of the Euler order, so joints with different channel orders mirror correctly
(the reference negated the Y and Z Euler angles, which is the same thing for its files).
`mirror_bvh` also mirrors the skeleton's offsets, so forward kinematics of the mirrored
file is the exact reflection of the original even on an asymmetric skeleton; the feature
pipeline only uses the rotations and translations, like the reference.
"""
from __future__ import annotations

import re

import numpy as np

from gesture_jax.motion.bvh import BVH, Skeleton
from gesture_jax.motion.channels import frames_from_local, local_transforms

__all__ = ["mirror_name", "mirror_pairs", "mirror_local", "mirror_skeleton", "mirror_bvh"]

_M = np.diag([-1.0, 1.0, 1.0])
_WORDS = [("Left", "Right"), ("left", "right"), ("LEFT", "RIGHT")]
_TOKENS = {"l": "r", "r": "l", "L": "R", "R": "L"}


def mirror_name(name: str) -> str:
    """The name of the opposite-side joint ('LeftHand' <-> 'RightHand', 'b_l_arm' <-> 'b_r_arm')."""
    out = name
    for a, b in _WORDS:
        if a in out or b in out:
            out = out.replace(a, "\0").replace(b, a).replace("\0", b)
    if out != name:
        return out
    parts = re.split(r"([_.\-\s])", name)  # separators kept at odd indices
    swapped = [_TOKENS.get(p, p) if i % 2 == 0 else p for i, p in enumerate(parts)]
    return "".join(swapped)


def mirror_pairs(names: list[str]) -> list[int]:
    """For each joint, the index of its mirror partner (itself for central/unpaired joints)."""
    index = {n: i for i, n in enumerate(names)}
    return [index.get(mirror_name(n), i) for i, n in enumerate(names)]


def mirror_local(rots: np.ndarray, trans: np.ndarray, pairs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """rots [N, J, 3, 3], trans [N, J, 3] -> mirrored (partner swap + reflection)."""
    p = np.asarray(pairs)
    return _M @ rots[:, p] @ _M, trans[:, p] * np.array([-1.0, 1.0, 1.0])


def mirror_skeleton(sk: Skeleton, pairs: list[int] | None = None) -> Skeleton:
    """Offsets (and End Sites) of each joint replaced by its partner's, reflected."""
    pairs = mirror_pairs(sk.names) if pairs is None else pairs
    flip = np.array([-1.0, 1.0, 1.0])
    offsets = sk.offsets[pairs] * flip
    ends = {}
    for j in sk.end_sites:
        src = pairs[j] if pairs[j] in sk.end_sites else j
        ends[j] = sk.end_sites[src] * flip
    return Skeleton(list(sk.names), list(sk.parents), offsets, [list(c) for c in sk.channels], ends)


def mirror_bvh(bvh: BVH) -> BVH:
    """The mirrored take: mirror(mirror(x)) == x, and FK(mirror(x)) is FK(x) reflected with sides swapped."""
    sk = bvh.skeleton
    pairs = mirror_pairs(sk.names)
    rots, trans = local_transforms(sk, bvh.frames)
    r, t = mirror_local(rots, trans, pairs)
    msk = mirror_skeleton(sk, pairs)
    return BVH(msk, frames_from_local(msk, r, t), bvh.frame_time, path=bvh.path)
