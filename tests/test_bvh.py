"""BVH reading/writing: layouts, round trips, clear errors; forward kinematics on np and jnp."""
from pathlib import Path

import numpy as np
import pytest

from gesture_jax.motion.bvh import BVH, BVHError, Skeleton, read_bvh, write_bvh
from gesture_jax.motion.kinematics import bvh_local_transforms, bvh_positions, forward_kinematics
from tests.conftest import shared_file

REAL = ["zeggs/067_Speech_2_x_1_0.bvh", "zeggs/raw_zeggs_start_pose_0.bvh", "beat/10_kieks_0_96_96_1.bvh",
        "genea2023/sample1.bvh"]

# a small file exercising: CRLF, tabs and spaces mixed, scientific notation, per-joint Euler
# orders, a 6-channel non-root joint, End Sites
SMALL = (
    "HIERARCHY\r\n"
    "ROOT Hips\r\n{\r\n\tOFFSET 0 90 0\r\n\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\r\n"
    "\tJOINT Chest\r\n\t{\r\n  OFFSET 0 1.0e1 0\r\n\t\tCHANNELS 3 Xrotation Yrotation Zrotation\r\n"
    "\t\tJOINT Head\r\n\t\t{\r\n\t\t\tOFFSET 0 2E+1 1e-1\r\n"
    "\t\t\tCHANNELS 6 Xposition Yposition Zposition Yrotation Zrotation Xrotation\r\n"
    "\t\t\tEnd Site\r\n\t\t\t{\r\n\t\t\t\tOFFSET 0 5 0\r\n\t\t\t}\r\n\t\t}\r\n\t}\r\n"
    "\tJOINT LeftLeg\r\n\t{\r\n\t\tOFFSET 10 -40 0\r\n\t\tCHANNELS 3 Yrotation Xrotation Zrotation\r\n"
    "\t\tEnd Site\r\n\t\t{\r\n\t\t\tOFFSET 0 -45 0\r\n\t\t}\r\n\t}\r\n}\r\n"
    "MOTION\r\nFrames: 3\r\nFrame Time: 3.3333333e-02\r\n"
    "1.5 90 -2 10 0 0 1e1 2.5e-1 -3 0 20 0.1 5 6 7 1 2 3\r\n"
    "1.6 90.5 -2 11 0 0 1e1 2.5e-1 -3 0 20 0.1 5 6 7 1 2 3\r\n"
    "1.7\t91 -2 12 0 0 1e1 2.5e-1 -3 0 20 0.1 5 6 7 1 2 3\r\n"
)


def _write(tmp_path: Path, text: str, name="x.bvh") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode())
    return p


def test_small_layout_parses(tmp_path):
    b = read_bvh(_write(tmp_path, SMALL))
    sk = b.skeleton
    assert sk.names == ["Hips", "Chest", "Head", "LeftLeg"]
    assert sk.parents == [-1, 0, 1, 0]
    assert [sk.rotation_order(j) for j in range(4)] == ["ZXY", "XYZ", "YZX", "YXZ"]
    assert sk.position_axes(2) == "XYZ"
    np.testing.assert_allclose(sk.offsets[2], [0, 20, 0.1])
    assert set(sk.end_sites) == {2, 3}
    assert b.frames.shape == (3, 18)
    assert b.frames[1, 0] == pytest.approx(1.6)
    assert b.fps == pytest.approx(30.0, rel=1e-6)


def _write_read(b, tmp_path):
    """Write b, read it back, and check hierarchy, channels, offsets and frames to 1e-6."""
    write_bvh(tmp_path / "out.bvh", b)
    b2 = read_bvh(tmp_path / "out.bvh")
    assert b2.skeleton.names == b.skeleton.names and b2.skeleton.parents == b.skeleton.parents
    assert b2.skeleton.channels == b.skeleton.channels
    np.testing.assert_allclose(b2.skeleton.offsets, b.skeleton.offsets, atol=1e-6)
    np.testing.assert_allclose(b2.frames, b.frames, atol=1e-6)
    return b2


def test_write_read_round_trip_small(tmp_path):
    b = read_bvh(_write(tmp_path, SMALL))
    b2 = _write_read(b, tmp_path)
    assert b2.frame_time == pytest.approx(b.frame_time, rel=1e-12)
    for j, e in b.skeleton.end_sites.items():
        np.testing.assert_allclose(b2.skeleton.end_sites[j], e, atol=1e-6)


@pytest.mark.parametrize("rel", REAL)
def test_real_files_round_trip(rel, tmp_path):
    b = read_bvh(shared_file(rel))
    b2 = _write_read(b, tmp_path)
    assert len(b2.skeleton.end_sites) == len(b.skeleton.end_sites)


def test_real_layouts_match_readme():
    z = read_bvh(shared_file("zeggs/067_Speech_2_x_1_0.bvh"))
    assert (z.num_frames, z.frames.shape[1], z.skeleton.num_joints) == (2065, 228, 75)
    assert z.fps == pytest.approx(30.0) and z.skeleton.rotation_order(0) == "ZYX"
    g = read_bvh(shared_file("genea2023/sample1.bvh"))
    assert g.frames.shape == (759, 498) and all(len(c) == 6 for c in g.skeleton.channels)
    assert g.skeleton.rotation_order(5) == "ZXY"
    bt = read_bvh(shared_file("beat/10_kieks_0_96_96_1.bvh"))
    assert bt.frames.shape == (39, 228) and bt.skeleton.rotation_order(3) == "XYZ"
    assert bt.fps == pytest.approx(120.0, rel=1e-3)


def test_zeggs_loads_fast():
    import time
    p = shared_file("zeggs/067_Speech_2_x_1_0.bvh")
    t = time.perf_counter()
    read_bvh(p)
    assert time.perf_counter() - t < 2.0  # ~0.2 s on an idle core; generous for a shared CPU


# ----------------------------------------------------------------------------- bad input

def _lines(text):
    return text.replace("\r\n", "\n").split("\n")


@pytest.mark.parametrize("case, pattern, line", [
    ("truncated_motion", r"truncated file", 35),
    ("truncated_hierarchy", r"truncated", None),
    ("wrong_count", r"frame 1 has 17 values, expected 18", 34),
    ("nan", r"non-finite value nan in channel Chest.Xrotation", 35),
    ("empty_motion", r"empty MOTION section", None),
    ("zero_frames", r"empty MOTION section", None),
    ("bad_number", r"'abc' is not a number", 33),
    ("bad_channel", r"unknown channel 'Wrotation'", 5),
])
def test_bad_input_names_file_and_line(case, pattern, line, tmp_path):
    lines = _lines(SMALL)
    if case == "truncated_motion":
        text = "\n".join(lines[:34]) + "\n1.7 91 -2 12 0"
    elif case == "truncated_hierarchy":
        text = "\n".join(lines[:12])
    elif case == "wrong_count":
        lines[33] = lines[33].rsplit(" ", 1)[0]
        text = "\n".join(lines)
    elif case == "nan":
        lines[34] = lines[34].replace("1e1", "nan")
        text = "\n".join(lines)
    elif case == "empty_motion":
        text = "\n".join(lines[:30]) + "\nFrames: 3\nFrame Time: 0.0333\n"
    elif case == "zero_frames":
        text = "\n".join(lines[:30]) + "\nFrames: 0\nFrame Time: 0.0333\n"
    elif case == "bad_number":
        lines[32] = lines[32].replace("90", "abc", 1)
        text = "\n".join(lines)
    elif case == "bad_channel":
        lines[4] = lines[4].replace("Yrotation", "Wrotation")
        text = "\n".join(lines)
    p = _write(tmp_path, text, name=f"{case}.bvh")
    with pytest.raises(BVHError, match=pattern) as ei:
        read_bvh(p)
    msg = str(ei.value)
    assert str(p) in msg
    if line is not None:
        assert f"line {line}:" in msg, msg
    else:
        assert "line " in msg


def test_missing_file_is_bvherror(tmp_path):
    with pytest.raises(BVHError, match="cannot read"):
        read_bvh(tmp_path / "nope.bvh")


# ----------------------------------------------------------------------------- kinematics

def test_fk_small_by_hand(tmp_path):
    b = read_bvh(_write(tmp_path, SMALL))
    P = bvh_positions(b)
    assert P.shape == (3, 4, 3)
    # root position channels replace the OFFSET
    np.testing.assert_allclose(P[:, 0], b.frames[:, :3])
    # Chest: offset (0,10,0) rotated by the root's Rz(10..12 deg) (X,Y rotation 0)
    a = np.deg2rad(b.frames[:, 3])
    np.testing.assert_allclose(P[:, 1] - P[:, 0], np.stack([-10 * np.sin(a), 10 * np.cos(a), 0 * a], -1),
                               atol=1e-9)


def test_fk_numpy_equals_jax():
    import jax.numpy as jnp
    b = read_bvh(shared_file("beat/10_kieks_0_96_96_1.bvh"))
    rots, trans = bvh_local_transforms(b)
    p_np = forward_kinematics(b.skeleton.parents, b.skeleton.offsets, rots, trans[:, 0], trans)
    p_j = forward_kinematics(b.skeleton.parents, jnp.asarray(b.skeleton.offsets, jnp.float32),
                             jnp.asarray(rots, jnp.float32), jnp.asarray(trans[:, 0], jnp.float32))
    # without local_translations FK uses the offsets: equal here because BEAT has positions on the root only
    np.testing.assert_allclose(np.asarray(p_j), p_np, atol=1e-3)
    np.testing.assert_allclose(bvh_positions(b), p_np)


def test_skeleton_helpers():
    sk = Skeleton(["a", "b"], [-1, 0], np.zeros((2, 3)), [["Xposition", "Zrotation"], ["Yrotation"]])
    assert sk.num_channels == 3 and sk.channel_starts() == [0, 2] and sk.index("b") == 1
    with pytest.raises(ValueError):
        BVH(sk, np.zeros((2, 4)), 0.05)


def test_fk_jax_with_local_translations_and_jit(tmp_path):
    import jax
    import jax.numpy as jnp
    b = read_bvh(_write(tmp_path, SMALL))  # Head has its own position channels
    rots, trans = bvh_local_transforms(b)
    sk = b.skeleton
    fk = jax.jit(lambda r, t: forward_kinematics(sk.parents, sk.offsets, r, t[:, 0], t))
    p_j = fk(jnp.asarray(rots, jnp.float32), jnp.asarray(trans, jnp.float32))
    np.testing.assert_allclose(np.asarray(p_j), bvh_positions(b), atol=1e-3)
