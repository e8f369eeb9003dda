"""Which joints and which frame of reference the metrics look at.

Beat consistency is measured on the upper body (the reference implementation, EMAGE/BEAT,
uses spine, neck, head, collars, shoulders, elbows and wrists: no fingers, no legs). Our
skeletons come from BVH files with dataset-specific names, so the set is derived from the
hierarchy: every joint below the first joint whose name contains "spine", minus finger
joints. A config can instead list the names explicitly (`cfg.eval.bc_joints`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

FINGER_WORDS = ("thumb", "index", "middle", "ring", "pinky", "finger", "hand_end", "end_site")


def subtree(parents: Sequence[int], root: int) -> list[int]:
    """Indices of `root` and all its descendants, in skeleton order."""
    inside = {root}
    out = []
    for j, p in enumerate(parents):
        if j == root or p in inside:
            inside.add(j)
            out.append(j)
    return out


def upper_body_joints(names: Sequence[str], parents: Sequence[int], explicit: Sequence[str] = (),
                      spine_word: str = "spine", exclude_words: Sequence[str] = FINGER_WORDS) -> np.ndarray:
    """Joint indices [K] used by beat consistency.

    explicit: names to use as they are (must all exist). Otherwise: the subtree of the first
    joint whose lower-cased name contains `spine_word`, without joints whose name contains one
    of `exclude_words`. Parents must precede children (BVH order guarantees this).
    """
    names = list(names)
    if explicit:
        missing = [n for n in explicit if n not in names]
        if missing:
            raise ValueError(f"eval joints {missing} are not in the skeleton (joints: {names})")
        return np.asarray([names.index(n) for n in explicit], np.int64)
    spine = next((j for j, n in enumerate(names) if spine_word in n.lower()), None)
    if spine is None:
        raise ValueError(f"no joint name contains {spine_word!r}; list the upper-body joints in "
                         f"cfg.eval.bc_joints (skeleton joints: {names})")
    keep = [j for j in subtree(parents, spine)
            if not any(w in names[j].lower() for w in exclude_words)]
    return np.asarray(keep, np.int64)


def root_relative(positions: np.ndarray, root: int = 0) -> np.ndarray:
    """Positions [N, J, 3] with the root's horizontal (x, z) position of each frame subtracted.

    Why: generated root trajectories drift (root motion is integrated from per-frame deltas),
    and a few metres of wander would dominate diversity, FGD and histograms while saying
    nothing about gesturing. Height (y) is kept so crouching and bending still count.
    """
    p = np.array(positions, dtype=np.float64, copy=True)
    p[..., 0] -= p[:, root:root + 1, 0]
    p[..., 2] -= p[:, root:root + 1, 2]
    return p
