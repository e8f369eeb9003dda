"""Forward kinematics checked against a chain of 4x4 matrices multiplied out in the test.

The expected world positions are computed here from the skeleton *description* the test
itself writes into the BVH text (offsets, channel names in file order, random values on
every channel), with rotation matrices written out by hand: nothing from gesture_jax but
`read_bvh` (the parser under test) and `bvh_positions` (the FK under test) is used. So a
swapped multiplication order in FK, a reversed Euler order, a channel read from the
wrong column, or a position channel added to (instead of replacing) the OFFSET each move
deep joints such as Head and LeftLeg by centimetres and fail here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gesture_jax.motion.bvh import read_bvh
from gesture_jax.motion.kinematics import bvh_positions

# (name, parent, offset, channels in file order). Joints are listed depth first, parents first.
Joint = tuple[str, str | None, tuple[float, float, float], list[str]]

POS = ["Xposition", "Yposition", "Zposition"]


def _rot(order: str) -> list[str]:
    return [f"{a}rotation" for a in order]


# Mixed layout: a different Euler order on every joint, a 6-channel non-root joint (Head)
# whose position channels come in a scrambled order, and the root's positions after its
# rotations, so the parser must map every column by name, not by position.
MIXED: list[Joint] = [
    ("Hips", None, (1.0, 90.0, -2.0), _rot("ZXY") + POS),
    ("Spine", "Hips", (0.0, 10.0, 1.0), _rot("XYZ")),
    ("Chest", "Spine", (0.5, 12.0, 0.0), _rot("YZX")),
    ("Neck", "Chest", (0.0, 15.0, 2.0), _rot("ZYX")),
    ("Head", "Neck", (0.0, 9.0, 1.0), ["Zposition", "Xposition", "Yposition"] + _rot("YXZ")),
    ("LeftUpLeg", "Hips", (9.0, -4.0, 0.0), _rot("XZY")),
    ("LeftLeg", "LeftUpLeg", (0.0, -42.0, 1.5), _rot("ZXY")),
]

# Every joint ZYX (ZEGGS / BEAT), root with positions first.
ZYX: list[Joint] = [(n, p, o, (POS if p is None else []) + _rot("ZYX")) for n, p, o, _ in MIXED]

# Every joint with 6 channels (GENEA 2023 style): positions replace each OFFSET, orders vary.
ALL6: list[Joint] = [(n, p, o, POS + _rot(order)) for (n, p, o, _), order in
                     zip(MIXED, ["ZXY", "YXZ", "XYZ", "ZYX", "YZX", "XZY", "ZXY"])]

LAYOUTS = {"mixed": MIXED, "zyx": ZYX, "all6": ALL6}


def _rx(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _ry(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rz(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


_AXIS_ROT = {"X": _rx, "Y": _ry, "Z": _rz}


def _bvh_text(joints: list[Joint], frames: np.ndarray, frame_time: float) -> str:
    """BVH text for the description (written here, not with write_bvh, so the writer is not trusted)."""
    names = [j[0] for j in joints]
    children: dict[str | None, list[int]] = {}
    for k, (_, parent, _, _) in enumerate(joints):
        children.setdefault(parent, []).append(k)
    out = ["HIERARCHY"]

    def emit(k: int, depth: int) -> None:
        name, parent, off, chans = joints[k]
        ind = "  " * depth
        out.append(f"{ind}{'ROOT' if parent is None else 'JOINT'} {name}")
        out.append(f"{ind}{{")
        out.append(f"{ind}  OFFSET {off[0]!r} {off[1]!r} {off[2]!r}")
        out.append(f"{ind}  CHANNELS {len(chans)} {' '.join(chans)}")
        kids = children.get(name, [])
        for c in kids:
            emit(c, depth + 1)
        if not kids:
            out.extend([f"{ind}  End Site", f"{ind}  {{", f"{ind}    OFFSET 0 5 0", f"{ind}  }}"])
        out.append(f"{ind}}}")

    emit(names.index(joints[0][0]), 0)
    out += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {frame_time!r}"]
    out += [" ".join(repr(float(v)) for v in row) for row in frames]
    return "\n".join(out) + "\n"


def _random_frames(joints: list[Joint], n: int, seed: int) -> np.ndarray:
    """A value on every channel: angles anywhere in (-180, 180) degrees, positions in cm."""
    rng = np.random.default_rng(seed)
    cols = []
    for _, parent, off, chans in joints:
        for c in chans:
            if c.endswith("rotation"):
                cols.append(rng.uniform(-180.0, 180.0, n))
            else:  # near the rest offset (or a walking root), but never equal to it
                base = off["XYZ".index(c[0])]
                cols.append(base + rng.uniform(-20.0, 20.0, n) * (1.0 if parent is None else 0.25))
    return np.stack(cols, axis=1)


def _positions_by_hand(joints: list[Joint], frames: np.ndarray) -> dict[str, np.ndarray]:
    """World position [N, 3] of each joint: product of [R | t] 4x4 matrices from the root down.

    Local transform of a joint: R = product of its rotation channels in file order (intrinsic,
    so 'Zrotation Xrotation Yrotation' gives Rz @ Rx @ Ry); t = its OFFSET with each position
    channel replacing that axis' component. World = parent world @ local.
    """
    names = [j[0] for j in joints]
    out: dict[str, np.ndarray] = {n: np.zeros((len(frames), 3)) for n in names}
    for f, row in enumerate(frames):
        world: dict[str, np.ndarray] = {}
        col = 0
        for name, parent, off, chans in joints:
            R, t = np.eye(3), np.array(off, dtype=np.float64)
            for c in chans:
                v = row[col]
                col += 1
                if c.endswith("rotation"):
                    R = R @ _AXIS_ROT[c[0]](np.deg2rad(v))
                else:
                    t["XYZ".index(c[0])] = v
            local = np.eye(4)
            local[:3, :3], local[:3, 3] = R, t
            world[name] = local if parent is None else world[parent] @ local
            out[name][f] = world[name][:3, 3]
    return out


def _chain(joints: list[Joint], name: str) -> list[str]:
    """Names from `name` up to the root."""
    parent_of = {n: p for n, p, _, _ in joints}
    out: list[str] = []
    cur: str | None = name
    while cur is not None:
        out.append(cur)
        cur = parent_of[cur]
    return out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fk_of_deep_joints_equals_matrix_chain_by_hand(layout: str, tmp_path: Path) -> None:
    """Head (4 levels below the root) and LeftLeg, random values on every channel, to 1e-6 cm."""
    joints = LAYOUTS[layout]
    frames = _random_frames(joints, n=6, seed=len(layout))
    path = tmp_path / f"{layout}.bvh"
    path.write_text(_bvh_text(joints, frames, 1.0 / 30.0))
    b = read_bvh(path)
    assert b.skeleton.names == [j[0] for j in joints]
    assert b.skeleton.channels == [j[3] for j in joints]
    P = bvh_positions(b)
    expected = _positions_by_hand(joints, frames)
    for name in ("Head", "LeftLeg"):
        j = b.skeleton.names.index(name)
        np.testing.assert_allclose(P[:, j], expected[name], atol=1e-6, err_msg=f"{layout}: {name}")
        # not a degenerate case: the joint sits far from where its rest offsets alone would put it
        rest = sum(np.array(o) for n, _, o, _ in joints if n in _chain(joints, name))
        assert np.linalg.norm(expected[name] - rest, axis=-1).min() > 1.0
    # and every other joint too (the chain above them is what the deep joints inherit)
    np.testing.assert_allclose(P, np.stack([expected[n] for n in b.skeleton.names], axis=1), atol=1e-6)
