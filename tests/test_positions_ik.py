"""Joint positions as motion features (positions.py), IK back to BVH (ik.py), the registry.

Hand-computed positions of a tiny skeleton, the feature layout, fixed vs world root,
velocities, IK exactness on random poses (synthetic skeleton, a skeleton with multi-child
joints), smooth twist, save/load, registry errors, a positions-prepared corpus, and the
must-show: positions -> BVH (written as text) -> positions on every BVH in ../shared/data.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep import stats_io
from data_prep.synthetic import generate_corpus, make_skeleton
from gesture_jax.motion.bvh import BVH, Skeleton, parse_bvh_text, read_bvh, write_bvh
from gesture_jax.motion.channels import frames_from_local
from gesture_jax.motion.kinematics import forward_kinematics_global
from gesture_jax.motion.ik import (IKRig, fk_node_positions, inverse_kinematics, minimal_rotation, node_names,
                                   position_nodes, prefix_products)
from gesture_jax.motion.pipeline import MotionPipeline, MotionPipelineError, merge_stats
from gesture_jax.motion.positions import PositionPipeline
from gesture_jax.motion.representations import (REPRESENTATIONS, load_pipeline, pipeline_from_config,
                                                representation_name)
from gesture_jax.motion.root import RootStart
from gesture_jax.motion.rotations import expmap_to_matrix

from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]

# Hips -> Spine -> (Arm -> End Site, Head -> End Site); ZXY rotations, 20 fps, two frames.
SMALL = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Spine
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT Arm
    {
      OFFSET 5 0 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      End Site
      {
        OFFSET 0 0 3
      }
    }
    JOINT Head
    {
      OFFSET 0 4 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      End Site
      {
        OFFSET 0 2 0
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.05
1 2 3 0 0 90  90 0 0  0 0 0  0 0 0
3 2 5 0 0 90  90 0 0  0 0 0  0 0 0
"""
# by hand, frame 0 (root at (1, 2, 3), yaw 90 deg: x -> -z, z -> x; Spine rolled 90 deg about z: x -> y, y -> -x)
SMALL_NAMES = ["Hips", "Spine", "Arm", "Head", "Arm_End", "Head_End"]
SMALL_P0 = np.array([[1, 2, 3],     # Hips
                     [1, 12, 3],    # Spine = Hips + Ry (0, 10, 0)
                     [1, 17, 3],    # Arm = Spine + Ry Rz (5, 0, 0) = + Ry (0, 5, 0)
                     [1, 12, 7],    # Head = Spine + Ry Rz (0, 4, 0) = + Ry (-4, 0, 0) = + (0, 0, 4)
                     [4, 17, 3],    # Arm_End = Arm + Ry Rz (0, 0, 3) = + (3, 0, 0)
                     [1, 12, 9]],   # Head_End = Head + Ry Rz (0, 2, 0) = + Ry (-2, 0, 0) = + (0, 0, 2)
                    np.float64)


def _small() -> BVH:
    return parse_bvh_text(SMALL, "small.bvh")


def _random_local(sk: Skeleton, n: int, rng: np.random.Generator, scale: float = 1.5):
    rots = expmap_to_matrix(rng.normal(size=(n, sk.num_joints, 3)) * scale)   # [N, J, 3, 3]
    trans = np.broadcast_to(sk.offsets, (n, sk.num_joints, 3)).copy()          # [N, J, 3]
    trans[:, 0] = rng.normal(size=(n, 3)) * 20.0
    return rots, trans


def _hand_skeleton() -> Skeleton:
    """Hips (spine + two legs), Chest (neck + two shoulders), Hand (three fingers + a zero-offset
    child), a joint with two collinear children, and leaves with and without End Sites."""
    joints = [  # name, parent, offset
        ("Hips", None, (0, 90, 0)), ("Spine", "Hips", (0, 10, 0)), ("Chest", "Spine", (0, 15, 2)),
        ("Neck", "Chest", (0, 12, 0)), ("Head", "Neck", (0, 8, 1)),
        ("LShoulder", "Chest", (4, 10, 0)), ("LArm", "LShoulder", (12, 0, 0)), ("LForeArm", "LArm", (25, 0, 0)),
        ("LHand", "LForeArm", (24, 0, 0)), ("LThumb", "LHand", (3, -1, 3)), ("LIndex", "LHand", (9, 0, 2)),
        ("LPinky", "LHand", (8, 0, -3)), ("LHandTwist", "LHand", (0, 0, 0)),
        ("RShoulder", "Chest", (-4, 10, 0)), ("RArm", "RShoulder", (-12, 0, 0)),
        ("RForeArm", "RArm", (-25, 0, 0)), ("RForeArmEnd", "RForeArm", (0, 0, 0)), ("RHand", "RForeArm", (-24, 0, 0)),
        ("RFinger", "RHand", (-8, 0, 0)), ("RFinger2", "RHand", (-4, 0, 0)),   # collinear children
        ("LUpLeg", "Hips", (9, -4, 0)), ("LLeg", "LUpLeg", (0, -42, 0)), ("LFoot", "LLeg", (0, -41, 0)),
        ("RUpLeg", "Hips", (-9, -4, 0)), ("RLeg", "RUpLeg", (0, -42, 0)), ("RFoot", "RLeg", (0, -41, 0)),
    ]
    names = [j[0] for j in joints]
    parents = [-1 if p is None else names.index(p) for _, p, _ in joints]
    channels = [(["Xposition", "Yposition", "Zposition"] if p is None else []) + ["Zrotation", "Xrotation", "Yrotation"]
                for _, p, _ in joints]
    ends = {names.index("Head"): (0, 10, 0), names.index("LThumb"): (2, 0, 2), names.index("LIndex"): (4, 0, 0),
            names.index("LFoot"): (0, -5, 12), names.index("RFoot"): (0, -5, 12), names.index("RFinger"): (-3, 0, 0)}
    return Skeleton(names, parents, np.array([o for _, _, o in joints], np.float64), channels, ends)


def _angles(R: np.ndarray) -> np.ndarray:
    """Rotation angles (radians) of matrices [..., 3, 3]."""
    return np.arccos(np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0))


# ------------------------------------------------------------------------------ positions by hand

def test_positions_of_a_small_skeleton_by_hand():
    b = _small()
    p = PositionPipeline(fps=20, root="world").fit([b])
    assert p.node_names == SMALL_NAMES
    raw = p.raw(b).reshape(2, 6, 6)                       # [N, nodes, (p, v)]
    np.testing.assert_allclose(raw[0, :, :3], SMALL_P0, atol=1e-9)
    np.testing.assert_allclose(raw[1, :, :3], SMALL_P0 + [2, 0, 2], atol=1e-9)   # root moved by (2, 0, 2)
    np.testing.assert_allclose(raw[0, :, 3:], 0.0, atol=1e-12)                  # v_0 = 0
    np.testing.assert_allclose(raw[1, :, 3:], np.tile([2.0, 0, 2], (6, 1)), atol=1e-9)  # per frame, no fps scaling


def test_fixed_root_stays_at_its_training_mean_and_keeps_its_rotation():
    b = _small()
    p = PositionPipeline(fps=20, root="fixed").fit([b])
    raw = p.raw(b).reshape(2, 6, 6)
    mean_root = np.array([2.0, 2.0, 4.0])                 # mean of (1, 2, 3) and (3, 2, 5)
    for t in range(2):
        np.testing.assert_allclose(raw[t, :, :3], SMALL_P0 - SMALL_P0[0] + mean_root, atol=1e-9)
    np.testing.assert_allclose(raw[:, :, 3:], 0.0, atol=1e-12)   # the body does not move relative to the root
    # nothing varies: every channel is constant and dropped, and its value is the fill
    assert p.feature_dim == 0
    # the yaw of the root is in the positions: Arm_End sits at +x of the arm, not +z
    assert raw[0, 4, 0] - raw[0, 2, 0] == pytest.approx(3.0)


def test_layout_names_velocities_and_raw_statistics():
    b = _small()
    p = PositionPipeline(fps=20, root="world").fit([b])
    assert p.raw_feature_names[:6] == ["Hips_px", "Hips_py", "Hips_pz", "Hips_vx", "Hips_vy", "Hips_vz"]
    assert p.raw_feature_names[-6:] == [f"Head_End_{k}{a}" for k in "pv" for a in "xyz"]
    assert len(p.raw_feature_names) == 36
    # varying channels only: every x and z (positions and velocities); y never changes
    assert p.feature_names == [n for n in p.raw_feature_names if n[-1] in "xz"]
    raw = p.raw(b)[:, [i for i, n in enumerate(p.raw_feature_names) if n[-1] in "xz"]]
    np.testing.assert_allclose(p.raw_mean, raw.mean(0))
    np.testing.assert_allclose(p.raw_std, raw.std(0))
    np.testing.assert_allclose(p.raw_max_abs, np.abs(raw).max(0))
    z = p.transform(b)
    assert z.dtype == np.float32 and z.shape == (2, p.feature_dim)
    np.testing.assert_allclose(z, (raw - raw.mean(0)) / raw.std(0), atol=1e-6)

    q = PositionPipeline(fps=20, root="world", velocities=False).fit([b])
    assert q.raw_feature_names == [f"{n}_p{a}" for n in SMALL_NAMES for a in "xyz"]
    # a joint subset: the selected joints (root always) and their End Sites only
    s = PositionPipeline(fps=20, root="world", joints=["Head"]).fit([b])
    assert s.node_names == ["Hips", "Head", "Head_End"] and s.selected_joints == ["Hips", "Head"]


def test_fixed_root_max_abs_uses_the_shifted_training_frames():
    """KA's M = max |y| of the raw frames, with the root at its training-mean position."""
    sk = make_skeleton()
    rng = np.random.default_rng(3)
    rots, trans = _random_local(sk, 30, rng, scale=0.4)
    trans[:, 0] += [50.0, 90.0, -30.0]
    b = BVH(sk, frames_from_local(sk, rots, trans), 0.05)
    p = PositionPipeline(fps=20, root="fixed").fit([b])
    raw = p.raw(b)
    keep = [p.raw_feature_names.index(n) for n in p.feature_names]
    np.testing.assert_allclose(raw[:, 0:3], np.broadcast_to(trans[:, 0].mean(0), (30, 3)), atol=1e-9)
    np.testing.assert_allclose(p.raw_max_abs, np.abs(raw[:, keep]).max(0), atol=1e-9)
    np.testing.assert_allclose(p.raw_mean, raw[:, keep].mean(0), atol=1e-9)


# ------------------------------------------------------------------------------ IK

@pytest.mark.parametrize("skeleton", [make_skeleton, _hand_skeleton])
def test_ik_is_exact_on_random_poses(skeleton):
    sk = skeleton()
    rots, trans = _random_local(sk, 60, np.random.default_rng(0))
    nodes = position_nodes(sk, range(sk.num_joints))
    X = fk_node_positions(sk, nodes, rots, trans)                              # [N, K, 3]
    r2, t2 = inverse_kinematics(sk, nodes, X)
    assert np.abs(fk_node_positions(sk, nodes, r2, t2) - X).max() < 1e-9
    np.testing.assert_allclose(np.linalg.det(r2), 1.0, atol=1e-9)             # proper rotations
    # joints with children in several directions are fully determined: their world rotation is
    # the original one (their local one is not: the twist of a one-child parent is a choice)
    W = forward_kinematics_global(sk.parents, sk.offsets, rots, trans[:, 0], trans)[1]     # [N, J, 3, 3]
    W2 = forward_kinematics_global(sk.parents, sk.offsets, r2, t2[:, 0], t2)[1]
    for name in ["Hips", "Spine3", "Chest", "LHand"]:
        if name in sk.names:
            j = sk.names.index(name)
            np.testing.assert_allclose(W2[:, j], W[:, j], atol=1e-9)


def test_ik_gives_proper_rotations_for_unreachable_targets():
    """Model output is not a skeleton: noisy or mirrored targets still give rotations (det +1)
    and keep every bone pointing at its target when it has one child."""
    sk = _hand_skeleton()
    nodes = position_nodes(sk, range(sk.num_joints))
    rots, trans = _random_local(sk, 30, np.random.default_rng(5))
    X = fk_node_positions(sk, nodes, rots, trans)
    noisy = X + np.random.default_rng(6).normal(size=X.shape) * 3.0
    mirrored = X * [-1.0, 1.0, 1.0]                                            # a reflection: no rotation fits
    for target in (noisy, mirrored):
        r2, t2 = inverse_kinematics(sk, nodes, target)
        np.testing.assert_allclose(np.linalg.det(r2), 1.0, atol=1e-9)
        np.testing.assert_allclose(r2 @ np.swapaxes(r2, -1, -2), np.broadcast_to(np.eye(3), r2.shape), atol=1e-9)
        P = fk_node_positions(sk, nodes, r2, t2)
        k = nodes.index((sk.names.index("LForeArm"), False))
        kc = nodes.index((sk.names.index("LHand"), False))
        d_out = (P[:, kc] - P[:, k]) / np.linalg.norm(P[:, kc] - P[:, k], axis=-1, keepdims=True)
        d_in = target[:, kc] - P[:, k]
        np.testing.assert_allclose(d_out, d_in / np.linalg.norm(d_in, axis=-1, keepdims=True), atol=1e-9)


def test_ik_through_unselected_joints_and_zero_offsets():
    """A subset of joints: unselected ones keep their mean rotation, selected ones still land."""
    sk = _hand_skeleton()
    rng = np.random.default_rng(1)
    rots, trans = _random_local(sk, 40, rng)
    sel = [sk.names.index(n) for n in ["Hips", "Chest", "Head", "LForeArm", "LHand", "LIndex", "RHand", "LFoot"]]
    rest = expmap_to_matrix(rng.normal(size=(sk.num_joints, 3)) * 0.5)
    unsel = [j for j in range(sk.num_joints) if j not in sel]
    rots[:, unsel] = rest[unsel]
    nodes = position_nodes(sk, sel)
    X = fk_node_positions(sk, nodes, rots, trans)
    r2, t2 = IKRig.build(sk, nodes, rest, sk.offsets).solve(X)
    assert np.abs(fk_node_positions(sk, nodes, r2, t2) - X).max() < 1e-9
    np.testing.assert_allclose(r2[:, unsel], np.broadcast_to(rest[unsel], r2[:, unsel].shape), atol=1e-12)


def test_minimal_rotation_and_prefix_products():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 3))
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    b = np.concatenate([rng.normal(size=(198, 3)), -a[198:]])               # the last two: opposite
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    R = minimal_rotation(a, b)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", R, a), b, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    # minimal: the axis is perpendicular to both, the angle is the angle between them
    np.testing.assert_allclose(_angles(R[:198]), np.arccos(np.clip(np.sum(a * b, -1), -1, 1))[:198], atol=1e-7)
    S = expmap_to_matrix(rng.normal(size=(37, 3)))
    P = prefix_products(S)
    ref = [S[0]]
    for t in range(1, 37):
        ref.append(S[t] @ ref[-1])
    np.testing.assert_allclose(P, np.array(ref), atol=1e-12)


def test_twist_is_continuous_on_smooth_motion():
    """A smooth take (every joint swinging by up to ~1 rad, the body turning round twice, an arm
    circling through the pose opposite its rest direction): no frame-to-frame flips."""
    sk = make_skeleton()
    J, N = sk.num_joints, 600
    t = np.arange(N)[:, None] / 60.0
    rng = np.random.default_rng(4)
    freq, phase = rng.uniform(0.1, 0.5, (J, 3)), rng.uniform(0, 2 * np.pi, (J, 3))
    e = np.sin(2 * np.pi * freq[None] * t[..., None] + phase[None]) * 1.0               # [N, J, 3]
    e[:, 0] = [0.0, 1.0, 0.0] * (4 * np.pi * np.arange(N) / (N - 1))[:, None]          # two turns about +Y
    arm = sk.names.index("RightArm")
    e[:, arm] = [0.0, 0.0, 1.0] * (2 * np.pi * np.arange(N) / (N - 1))[:, None]        # a full circle
    rots = expmap_to_matrix(e)
    trans = np.broadcast_to(sk.offsets, (N, J, 3)).copy()
    nodes = position_nodes(sk, range(J))
    X = fk_node_positions(sk, nodes, rots, trans)
    r2, t2 = inverse_kinematics(sk, nodes, X)
    assert np.abs(fk_node_positions(sk, nodes, r2, t2) - X).max() < 1e-9
    step_in = _angles(np.swapaxes(rots[:-1], -1, -2) @ rots[1:]).max()
    step_out = _angles(np.swapaxes(r2[:-1], -1, -2) @ r2[1:]).max(axis=0)             # [J]
    assert step_in < 0.1
    assert step_out.max() < 3 * step_in, {sk.names[j]: float(s) for j, s in enumerate(step_out) if s >= 3 * step_in}


def test_twist_follows_the_previous_frame_not_the_rest_pose():
    """A forearm circling close to the direction opposite its rest direction, turning as little as
    possible: a swing from the rest pose would spin the bone about itself by a full turn per
    circle (big steps on tiny motion); the previous-frame swing does not."""
    sk = make_skeleton()
    J, N = sk.num_joints, 200
    arm = sk.names.index("RightArm")                       # its child RightForeArm lies along -x
    phi = np.linspace(0.0, 4 * np.pi, N)
    alpha = 0.05
    d = np.stack([np.full(N, np.cos(alpha)), np.sin(alpha) * np.cos(phi), np.sin(alpha) * np.sin(phi)], -1)
    R = np.empty((N, 3, 3))
    R[0] = minimal_rotation(np.array([-1.0, 0, 0]), d[0])
    for t in range(1, N):                                  # the input turns minimally, frame to frame
        R[t] = minimal_rotation(d[t - 1], d[t]) @ R[t - 1]
    rots = np.tile(np.eye(3), (N, J, 1, 1))
    rots[:, arm] = R
    trans = np.broadcast_to(sk.offsets, (N, J, 3)).copy()
    nodes = position_nodes(sk, range(J))
    X = fk_node_positions(sk, nodes, rots, trans)
    r2, t2 = inverse_kinematics(sk, nodes, X)
    assert np.abs(fk_node_positions(sk, nodes, r2, t2) - X).max() < 1e-9
    step_in = _angles(np.swapaxes(R[:-1], -1, -2) @ R[1:]).max()
    step_out = _angles(np.swapaxes(r2[:-1], -1, -2) @ r2[1:]).max()
    assert step_in < 0.01 and step_out < 3 * step_in, (step_in, step_out)


# ------------------------------------------------------------------------------ pipeline

def _take(seed: int, n: int = 50) -> BVH:
    sk = make_skeleton()
    rots, trans = _random_local(sk, n, np.random.default_rng(seed), scale=0.5)
    return BVH(sk, frames_from_local(sk, rots, trans), 1 / 30, path=f"take{seed}.bvh")


@pytest.mark.parametrize("root", ["fixed", "world"])
def test_inverse_writes_a_bvh_whose_positions_match(root, tmp_path):
    b = _take(0)
    p = PositionPipeline(fps=20, root=root).fit([b, _take(1)], mirror=True)
    z = p.transform(b)
    rec = p.inverse(z)
    assert rec.skeleton.names == b.skeleton.names and rec.fps == pytest.approx(20)
    write_bvh(tmp_path / "rec.bvh", rec)
    back = p.positions(p.transform(read_bvh(tmp_path / "rec.bvh")))
    assert np.linalg.norm(back - p.positions(z), axis=-1).max() < 1e-3
    if root == "fixed":  # start moves the fixed root on the ground; the heading is already in the positions
        moved = p.inverse(z, RootStart(x=100.0, z=-50.0, heading=1.0))
        shift = p.raw(moved)[:, :3] - p.raw(rec)[:, :3]
        np.testing.assert_allclose(moved.joint_channels(0)[:, [0, 2]], np.broadcast_to([100.0, -50.0], (len(z), 2)),
                                   atol=1e-6)
        np.testing.assert_allclose(shift, 0.0, atol=1e-6)  # fixed-root features do not see it


def test_save_load_identical(tmp_path):
    b = _take(2)
    p = PositionPipeline(fps=20, root="world", joints=["RightHand", "LeftHand", "Head"]).fit([b, _take(3)])
    p.save(tmp_path / "pipe")
    meta = json.loads((tmp_path / "pipe" / "pipeline.json").read_text())
    assert meta["format"] == "gesture_jax.position_pipeline/1" and meta["feature_names"] == p.feature_names
    with np.load(tmp_path / "pipe" / "pipeline.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    q = PositionPipeline.load(tmp_path / "pipe")
    r = load_pipeline(tmp_path / "pipe")
    assert isinstance(r, PositionPipeline)
    for other in (q, r):
        assert other.feature_names == p.feature_names and other.node_names == p.node_names
        np.testing.assert_array_equal(other.transform(b), p.transform(b))
        np.testing.assert_array_equal(other.raw_max_abs, p.raw_max_abs)
        np.testing.assert_array_equal(other.inverse(p.transform(b)).frames, p.inverse(p.transform(b)).frames)


def test_stats_max_abs_and_extrema_merge_and_round_trip():
    a, b = _take(4), _take(5)
    for pipe in (PositionPipeline(fps=20), MotionPipeline(fps=20)):
        sa, sb = pipe.file_stats(a), pipe.file_stats(b)
        m = merge_stats(sa, sb)
        np.testing.assert_array_equal(m.max_abs, np.maximum(sa.max_abs, sb.max_abs))
        np.testing.assert_array_equal(m.minimum, np.minimum(sa.minimum, sb.minimum))
        np.testing.assert_array_equal(m.maximum, np.maximum(sa.maximum, sb.maximum))
        back = stats_io.stats_from_bytes(stats_io.stats_to_bytes([m]))[0]
        for k in ("max_abs", "minimum", "maximum", "mean", "m2"):
            np.testing.assert_array_equal(getattr(back, k), getattr(m, k))
    # a cache written before the fields existed: merges to None, the exp-map fit still works,
    # the positions fit says what to do
    old = PositionPipeline(fps=20).file_stats(a)
    old.max_abs = old.minimum = old.maximum = None
    merged = merge_stats(old, PositionPipeline(fps=20).file_stats(b))
    assert merged.max_abs is None and merged.minimum is None
    with pytest.raises(MotionPipelineError, match="no min/max.*prepare again"):
        PositionPipeline(fps=20).fit_from_stats([merged])
    old_m = MotionPipeline(fps=20).file_stats(a)
    old_m.max_abs = old_m.minimum = old_m.maximum = None
    MotionPipeline(fps=20).fit_from_stats([old_m])


# ------------------------------------------------------------------------------ registry

def test_registry():
    import ml_collections
    from configs.base import get_base_config
    cfg = get_base_config()
    assert type(pipeline_from_config(cfg.data)) is MotionPipeline          # default: expmap
    assert cfg.data.positions_root == "fixed" and cfg.data.position_velocities is True
    with cfg.unlocked():
        cfg.data.representation = "positions"
        cfg.data.positions_root = "world"
        cfg.data.position_velocities = False
    p = pipeline_from_config(cfg.data)
    assert isinstance(p, PositionPipeline) and p.root == "world" and not p.velocities
    assert representation_name(p) == "positions" and representation_name(MotionPipeline()) == "expmap"
    assert set(REPRESENTATIONS) == {"expmap", "positions"}
    with pytest.raises(MotionPipelineError, match=r"data.representation='quats'.*known: expmap, positions"):
        pipeline_from_config(ml_collections.ConfigDict({"representation": "quats"}))
    with pytest.raises(MotionPipelineError, match="positions_root must be one of fixed, world; got 'floating'"):
        pipeline_from_config({"representation": "positions", "positions_root": "floating"})
    with pytest.raises(MotionPipelineError, match="is not a registered motion representation"):
        representation_name(object())


def test_load_pipeline_dispatches_and_refuses_unknown_formats(tmp_path):
    b = _take(6)
    MotionPipeline(fps=20).fit([b]).save(tmp_path / "e")
    assert type(load_pipeline(tmp_path / "e")) is MotionPipeline
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "pipeline.json").write_text(json.dumps({"format": "someone.else/3"}))
    with pytest.raises(MotionPipelineError, match=r"x/pipeline.json: unknown format 'someone.else/3'"):
        load_pipeline(tmp_path / "x")
    with pytest.raises(MotionPipelineError, match="not a saved motion pipeline"):
        load_pipeline(tmp_path / "missing")


# ------------------------------------------------------------------------------ wiring

def test_prepare_with_positions(tmp_path):
    """`data_prep.prepare --config.data.representation=positions` on a tiny synthetic corpus."""
    root, out = tmp_path / "src", tmp_path / "out"
    generate_corpus(root, num_train=2, num_test=1, duration_s=5.0, seed=3)
    r = subprocess.run([sys.executable, "-m", "data_prep.prepare", "--config=configs/demo.py",
                        f"--config.data.root={root}", f"--config.data.out={out}", "--config.data.num_workers=1",
                        "--config.data.representation=positions"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    pipe = load_pipeline(out / m["motion"]["pipeline"])
    assert isinstance(pipe, PositionPipeline) and pipe.root == "fixed" and pipe.velocities
    assert m["motion"]["feature_names"] == pipe.feature_names
    assert m["motion"].get("representation") == "positions"
    names = m["motion"]["feature_names"]
    assert "RightHand_px" in names and "RightHand_vz" in names and "Head_End_py" in names
    assert not any(n.startswith("Hips_p") for n in names)       # fixed root: constant, dropped
    assert m["motion"]["feature_dim"] == len(names) == (pipe.feature_dim)


def test_prepare_refuses_an_unknown_representation_at_once(tmp_path):
    from configs import demo
    from data_prep import prepare
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out, cfg.data.representation = str(tmp_path), str(tmp_path / "out"), "quats"
    with pytest.raises(prepare.PrepareError, match=r"data.representation='quats'.*known: expmap, positions"):
        prepare.run_prepare(cfg, progress=False)
    assert not (tmp_path / "out").exists()


def test_roundtrip_cli_positions(tmp_path):
    # through the command line (a subprocess: the CLI module defines absl flags on import,
    # which would clash with other CLI modules imported by this test process)
    import json
    import subprocess
    import sys

    from conftest import REPO
    b = _take(7, n=60)
    write_bvh(tmp_path / "in.bvh", b)
    p = subprocess.run([sys.executable, "-m", "gesture_jax.motion.roundtrip", str(tmp_path / "in.bvh"),
                        f"--out={tmp_path / 'out.bvh'}", "--fps=20", "--representation=positions"],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout[p.stdout.index("{"):])
    assert s["representation"] == "positions" and s["frames_out"] == 40
    assert s["feature_dim"] == PositionPipeline(fps=20).fit([b]).feature_dim      # the positions pipeline ran
    assert s["max_position_error_cm"] < 1e-3
    assert read_bvh(tmp_path / "out.bvh").skeleton.names == b.skeleton.names


# ------------------------------------------------------------------------------ the must-show

def _shared_bvhs() -> list[Path]:
    return sorted(SHARED_DATA.rglob("*.bvh")) if SHARED_DATA.is_dir() else []


@pytest.mark.parametrize("root", ["fixed", "world"])
def test_positions_bvh_positions_on_every_shared_bvh(root, tmp_path):
    """positions -> BVH (IK, written as text, read back) -> positions: max node error < 1 cm."""
    files = _shared_bvhs()
    if not files:
        pytest.skip(f"no BVH under {SHARED_DATA} (../shared/data is not beside this checkout)")
    for f in files:
        b = read_bvh(f)
        p = PositionPipeline(fps=20, root=root).fit([b])
        z = p.transform(b)
        P = p.positions(z)                                                     # [N, K, 3]
        height = np.ptp(p.positions(p.transform(b))[0, :, 1])
        assert 100.0 < height < 250.0, f"{f}: a {height:.1f}-unit tall body: the units are not cm"
        out = tmp_path / f"{f.stem}.bvh"
        write_bvh(out, p.inverse(z))
        P2 = p.positions(p.transform(read_bvh(out)))
        err = np.linalg.norm(P2 - P, axis=-1)
        print(f"\n[positions->BVH->positions] {f.relative_to(SHARED_DATA)} root={root}: {len(P)} frames at 20 fps, "
              f"{P.shape[1]} nodes, body {height:.0f} cm, max error {err.max():.2e} cm, mean {err.mean():.2e} cm")
        assert err.max() < 1.0, f"{f}: max joint error {err.max():.3f} cm"
