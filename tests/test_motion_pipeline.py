"""Motion feature pipeline: exact inverse, mirror, resampling, root deltas, persistence, errors."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep import stats_io
from gesture_jax.motion.bvh import BVH, Skeleton, read_bvh
from gesture_jax.motion.kinematics import bvh_positions
from gesture_jax.motion.mirror import mirror_bvh, mirror_name, mirror_pairs
from gesture_jax.motion.pipeline import MotionPipeline, MotionPipelineError, merge_stats
from gesture_jax.motion.resample import effective_fps, resample_bvh
from gesture_jax.motion.channels import local_transforms
from tests.conftest import SHARED_DATA, shared_file

ALL_SHARED = sorted(str(p.relative_to(SHARED_DATA)) for p in SHARED_DATA.rglob("*.bvh")) if SHARED_DATA.is_dir() \
    else ["zeggs/067_Speech_2_x_1_0.bvh"]


def toy_bvh(n=90, fps=30.0, seed=0, order="ZXY") -> BVH:
    """A small symmetric body with smooth random motion: walking root, turning, arms swinging."""
    names = ["Hips", "Spine", "Head", "LeftArm", "LeftHand", "RightArm", "RightHand", "LeftUpLeg", "RightUpLeg"]
    parents = [-1, 0, 1, 1, 3, 1, 5, 0, 0]
    offsets = np.array([[0, 90, 0], [0, 20, 0], [0, 25, 0], [15, 18, 0], [25, 0, 0], [-15, 18, 0], [-25, 0, 0],
                        [9, -5, 0], [-9, -5, 0]], float)
    rot = [f"{a}rotation" for a in order]
    channels = [["Xposition", "Yposition", "Zposition"] + rot] + [rot] * 8
    sk = Skeleton(names, parents, offsets, channels, {2: np.array([0, 10.0, 0]), 4: np.array([8.0, 0, 0]),
                                                        6: np.array([-8.0, 0, 0])})
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    frames = np.zeros((n, sk.num_channels))
    frames[:, 0] = 30 * np.sin(0.5 * t)                      # x
    frames[:, 1] = 90 + 2 * np.sin(3 * t)                     # y
    frames[:, 2] = 40 * t                                     # z: walks forward
    yaw_col = 3 + order.index("Y")
    frames[:, yaw_col] = np.rad2deg(1.5 * t) + 170            # turns through +-180 degrees
    for c in range(3, sk.num_channels):
        if c != yaw_col:
            ph, fr = rng.uniform(0, 6), rng.uniform(0.5, 3)
            frames[:, c] += rng.uniform(5, 40) * np.sin(fr * t + ph)
    return BVH(sk, frames, 1.0 / fps, path="toy.bvh")


def roundtrip_positions(bvh: BVH, pipe: MotionPipeline) -> tuple[np.ndarray, np.ndarray]:
    pipe.fit([bvh])
    inv = pipe.inverse(pipe.transform(bvh), pipe.root_start(bvh))
    return bvh_positions(bvh), bvh_positions(inv)


# ----------------------------------------------------------------------------- exact inverse

@pytest.mark.parametrize("rel", ALL_SHARED)
def test_round_trip_every_shared_bvh_within_half_cm(rel):
    """features -> inverse -> BVH -> FK equals the original, every frame, every joint (own fps)."""
    b = read_bvh(shared_file(rel))
    pipe = MotionPipeline(fps=effective_fps(b.frame_time))
    P, P2 = roundtrip_positions(b, pipe)
    assert P2.shape == P.shape
    err = np.linalg.norm(P2 - P, axis=-1)
    assert err.max() < 0.5, f"{rel}: max error {err.max():.4f} cm at frame {np.unravel_index(err.argmax(), err.shape)}"


@pytest.mark.parametrize("rel, cfg_name", [("zeggs/067_Speech_2_x_1_0.bvh", "zeggs"),
                                           ("beat/10_kieks_0_96_96_1.bvh", "beat")])
def test_round_trip_with_dataset_joint_sets(rel, cfg_name):
    import importlib
    joints = importlib.import_module(f"configs.{cfg_name}").get_config().data.joints
    b = read_bvh(shared_file(rel))
    pipe = MotionPipeline(fps=effective_fps(b.frame_time), joints=list(joints))
    P, P2 = roundtrip_positions(b, pipe)
    assert np.linalg.norm(P2 - P, axis=-1).max() < 0.5


def test_dataset_joint_sets_feature_dims():
    from configs import beat, zeggs
    z = read_bvh(shared_file("zeggs/067_Speech_2_x_1_0.bvh"))
    pz = MotionPipeline(fps=20, joints=list(zeggs.ZEGGS_JOINTS)).fit([z])
    # 54 joints: 9 root + 53 * 3 = 168 raw; the reference's 166 drops the root's constant X/Z residual
    assert len(pz.raw_feature_names) == 168
    assert "Hips_Xposition" not in pz.feature_names and "Hips_Zposition" not in pz.feature_names
    bt = read_bvh(shared_file("beat/10_kieks_0_96_96_1.bvh"))
    pb = MotionPipeline(fps=120, joints=list(beat.BEAT_JOINTS)).fit([bt])
    assert len(pb.raw_feature_names) == 9 + 74 * 3


def test_constant_removal_and_standardization_are_exactly_invertible():
    b = toy_bvh()
    b.frames[:, 4 + 3 * 2] = 7.0  # a constant channel (Head's 2nd rotation)... still varies in exp-map space
    pipe = MotionPipeline(fps=30).fit([b])
    x = pipe.transform(b)
    assert x.dtype == np.float32 and x.shape == (b.num_frames, pipe.feature_dim)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-4)
    # the root's X/Z residual is exactly 0 without smoothing: removed, and filled back on inverse
    assert "Hips_Xposition" not in pipe.feature_names and "Hips_Yposition" in pipe.feature_names
    x2 = pipe.transform(pipe.inverse(x, pipe.root_start(b)))
    np.testing.assert_allclose(x2, x, atol=2e-4)


def test_six_channel_non_root_joints_and_smoothing():
    b = toy_bvh(order="XYZ")
    sk = b.skeleton
    # give Spine position channels that move (GENEA 2023 style)
    sk.channels[1] = ["Xposition", "Yposition", "Zposition"] + sk.channels[1]
    starts = sk.channel_starts()
    frames = np.insert(b.frames, starts[1], np.zeros((3, b.num_frames)), axis=1)
    frames[:, starts[1]:starts[1] + 3] = sk.offsets[1] + np.sin(np.arange(b.num_frames))[:, None] * [1, 2, 0.5]
    b6 = BVH(sk, frames, b.frame_time, path="six.bvh")
    pipe = MotionPipeline(fps=30, position_smoothing=5, rotation_smoothing=10)
    P, P2 = roundtrip_positions(b6, pipe)
    assert "Spine_Xposition" in pipe.feature_names and "Hips_Xposition" in pipe.feature_names
    assert np.abs(P2 - P).max() < 1e-3


def _all_six_channel(b: BVH) -> BVH:
    """`b` with position channels on every joint (GENEA 2023 layout), each moving about its OFFSET."""
    sk = b.skeleton.copy()
    rng = np.random.default_rng(5)
    cols, t = [], np.arange(b.num_frames)[:, None] / b.fps
    for j in range(sk.num_joints):
        vals = b.joint_channels(j)
        if j > 0:
            sk.channels[j] = ["Xposition", "Yposition", "Zposition"] + sk.channels[j]
            vals = np.concatenate([sk.offsets[j] + rng.uniform(0.5, 3.0, 3) * np.sin(rng.uniform(1, 4, 3) * t),
                                   vals], axis=1)
        cols.append(vals)
    return BVH(sk, np.concatenate(cols, axis=1), b.frame_time, path="all6.bvh")


@pytest.mark.parametrize("layout", ["zyx", "all6"])
def test_round_trip_zyx_and_all_six_channel_toys(layout):
    """features -> inverse -> FK equals the take on a ZYX skeleton (ZEGGS / BEAT order, not cyclic
    like the ZXY / XYZ toys above) and on one where every joint has 6 channels, with resampling."""
    b = toy_bvh(order="ZYX") if layout == "zyx" else _all_six_channel(toy_bvh(order="YXZ"))
    assert all(b.skeleton.rotation_order(j) == ("ZYX" if layout == "zyx" else "YXZ") for j in range(9))
    pipe = MotionPipeline(fps=30)
    P, P2 = roundtrip_positions(b, pipe)
    np.testing.assert_allclose(P2, P, atol=1e-4)
    n_pos = 3 if layout == "zyx" else 3 + 8 * 3
    assert len(pipe.raw_feature_names) == 9 + 8 * 3 + (n_pos - 3)
    inv = pipe.inverse(pipe.transform(b), pipe.root_start(b))
    assert inv.skeleton.channels == b.skeleton.channels
    # at 20 fps, the frames common with 30 fps are unchanged
    p20 = MotionPipeline(fps=20).fit([b])
    inv20 = p20.inverse(p20.transform(b), p20.root_start(b))
    np.testing.assert_allclose(bvh_positions(inv20)[::2], P[::3][:len(bvh_positions(inv20)[::2])], atol=1e-4)


def test_root_features_ignore_where_and_which_way_the_speaker_stands():
    b = toy_bvh()
    pipe = MotionPipeline(fps=30).fit([b])
    x = pipe.transform(b)
    # rotate the whole take by 70 degrees about +Y and move it: same features
    rots, trans = local_transforms(b.skeleton, b.frames)
    from gesture_jax.motion.root import yaw_matrix
    from gesture_jax.motion.channels import frames_from_local
    Y = yaw_matrix(np.array(np.deg2rad(70.0)))
    rots[:, 0] = Y @ rots[:, 0]
    trans[:, 0] = trans[:, 0] @ Y.T + [100.0, 0.0, -50.0]
    moved = BVH(b.skeleton, frames_from_local(b.skeleton, rots, trans), b.frame_time)
    np.testing.assert_allclose(pipe.transform(moved), x, atol=1e-3)
    # inverse without a start pose: same motion, placed at the origin facing +Z
    P0 = bvh_positions(pipe.inverse(x))
    start = pipe.root_start(b)
    P = bvh_positions(b)
    Yb = yaw_matrix(np.array(start.heading))
    np.testing.assert_allclose(P0 @ Yb.T + [start.x, 0, start.z], P, atol=1e-3)


def test_features_are_continuous_in_time():
    b = toy_bvh(n=150)
    pipe = MotionPipeline(fps=30).fit([b])
    raw_jumps = np.abs(np.diff(pipe.transform(b) * pipe._fit.std, axis=0))
    assert raw_jumps.max() < 0.5  # radians / cm per frame: no 2*pi flips of the exp maps


# ----------------------------------------------------------------------------- mirror

def test_mirror_names():
    assert mirror_name("LeftHandIndex1") == "RightHandIndex1"
    assert mirror_name("b_r_forearm") == "b_l_forearm"
    assert mirror_name("Spine") == "Spine"
    names = ["Hips", "LeftArm", "RightArm", "p_l_delt"]
    assert mirror_pairs(names) == [0, 2, 1, 3]


@pytest.mark.parametrize("source", ["toy", "zeggs/067_Speech_2_x_1_0.bvh", "beat/10_kieks_0_96_96_1.bvh",
                                    "genea2023/sample1.bvh"])
def test_mirror_twice_is_identity_and_reflects_hands(source):
    b = toy_bvh() if source == "toy" else read_bvh(shared_file(source))
    P = bvh_positions(b)
    m = mirror_bvh(b)
    mm = mirror_bvh(m)
    np.testing.assert_allclose(bvh_positions(mm), P, atol=1e-6)
    r0, t0 = local_transforms(b.skeleton, b.frames)
    r2, t2 = local_transforms(mm.skeleton, mm.frames)
    np.testing.assert_allclose(r2, r0, atol=1e-9)
    np.testing.assert_allclose(mm.skeleton.offsets, b.skeleton.offsets)
    Pm = bvh_positions(m)
    names = b.skeleton.names
    hands = [("LeftHand", "RightHand")] if "LeftHand" in names else [("b_l_wrist", "b_r_wrist")]
    for left, right in hands:
        li, ri = names.index(left), names.index(right)
        np.testing.assert_allclose(Pm[:, li], P[:, ri] * [-1, 1, 1], atol=1e-6)
        np.testing.assert_allclose(Pm[:, ri], P[:, li] * [-1, 1, 1], atol=1e-6)


def test_pipeline_mirror_features_invert_to_reflected_motion():
    b = toy_bvh()  # symmetric skeleton: the mirrored features give the reflected take
    pipe = MotionPipeline(fps=30).fit([b], mirror=True)
    xm = pipe.transform(b, mirror=True)
    assert not np.allclose(xm, pipe.transform(b))
    Pm = bvh_positions(pipe.inverse(xm, pipe.root_start(b, mirror=True)))
    P = bvh_positions(b)
    pairs = mirror_pairs(b.skeleton.names)
    np.testing.assert_allclose(Pm, P[:, pairs] * [-1, 1, 1], atol=1e-3)


# ----------------------------------------------------------------------------- resampling

def test_resample_30_to_20_keeps_the_motion_zeggs():
    b = read_bvh(shared_file("zeggs/067_Speech_2_x_1_0.bvh"))
    r = resample_bvh(b, 20)
    assert r.fps == pytest.approx(20) and r.num_frames == int((b.num_frames - 1) * 20 / 30) + 1
    P, Pr = bvh_positions(b), bvh_positions(r)
    # common timestamps: 30 fps frame 3k == 20 fps frame 2k
    np.testing.assert_allclose(Pr[::2], P[::3][:len(Pr[::2])], atol=1e-6)
    # in between (t = (2k+1)/20 = frames 3k+1.5): close to the mean of the two neighbours
    # (rotations are interpolated, so fast arcs, e.g. finger flicks, bend away from the chord)
    a, c = P[1::3][:len(Pr[1::2])], P[2::3][:len(Pr[1::2])]
    err = np.linalg.norm(Pr[1::2] - 0.5 * (a + c), axis=-1)
    assert np.median(err) < 0.01 and np.percentile(err, 99) < 1.0
    # the local rotations in between are the slerp of their neighbours (scipy as the reference)
    from scipy.spatial.transform import Rotation, Slerp
    r0, _ = local_transforms(b.skeleton, b.frames)
    r1, _ = local_transforms(r.skeleton, r.frames)
    k = 101  # 20 fps frame 101 = 30 fps frame 151.5
    for j in range(0, b.skeleton.num_joints, 7):
        ref = Slerp([0.0, 1.0], Rotation.from_matrix(r0[151:153, j]))([0.5]).as_matrix()[0]
        np.testing.assert_allclose(r1[k, j], ref, atol=1e-6)


def test_resample_through_the_pipeline_30_to_20():
    b = toy_bvh(n=91)
    pipe = MotionPipeline(fps=20).fit([b])
    x = pipe.transform(b)
    assert x.shape[0] == 61
    inv = pipe.inverse(x, pipe.root_start(b))
    assert inv.fps == pytest.approx(20)
    np.testing.assert_allclose(bvh_positions(inv)[::2], bvh_positions(b)[::3], atol=1e-3)


def test_resample_uses_rotation_interpolation_not_euler_lerp():
    # yaw going 170 -> -170 degrees (a 20 degree turn): Euler lerp would swing through 0
    sk = Skeleton(["Hips"], [-1], np.zeros((1, 3)), [["Zrotation", "Yrotation", "Xrotation"]])
    b = BVH(sk, np.array([[0, 170.0, 0], [0, -170.0, 0]]), 1.0 / 10)
    r = resample_bvh(b, 20)
    assert r.num_frames == 3
    R = local_transforms(sk, r.frames)[0][1, 0]
    np.testing.assert_allclose(R, np.diag([-1.0, 1.0, -1.0]), atol=1e-9)  # Ry(180)


def test_resample_between_frames_is_slerp_of_the_neighbours():
    """10 -> 30 fps puts output frames at 1/3 and 2/3 of every source interval, where slerp,
    normalised lerp of quaternions and Euler lerp all differ (at 1/2 the first two agree).

    Source rotations turn 60-150 degrees per frame about random axes, on a ZYX root with
    positions and a 6-channel XZY child; the reference is scipy's Slerp on matrices built
    here from the channel values with scipy's intrinsic Euler convention (no gesture_jax)."""
    from scipy.spatial.transform import Rotation, Slerp
    rng = np.random.default_rng(11)
    n = 4
    sk = Skeleton(["Hips", "Arm"], [-1, 0], np.array([[0, 90.0, 0], [15, 10, 0]]),
                  [["Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation"],
                   ["Xposition", "Yposition", "Zposition", "Xrotation", "Zrotation", "Yrotation"]])
    rot_cols = {0: (3, "ZYX"), 1: (9, "XZY")}
    frames = np.zeros((n, sk.num_channels))
    frames[:, 0:3] = rng.uniform(-50, 50, (n, 3))
    frames[:, 6:9] = rng.uniform(-5, 5, (n, 3)) + sk.offsets[1]
    keys = {}
    for j, (c, order) in rot_cols.items():
        r = [Rotation.from_rotvec(rng.uniform(-np.pi, np.pi, 3))]
        for _ in range(n - 1):
            axis = rng.normal(size=3)
            step = np.deg2rad(rng.uniform(60, 150)) * axis / np.linalg.norm(axis)
            r.append(r[-1] * Rotation.from_rotvec(step))
        keys[j] = Rotation.concatenate(r)
        frames[:, c:c + 3] = keys[j].as_euler(order, degrees=True)  # uppercase = intrinsic = BVH
    b = BVH(sk, frames, 1.0 / 10)
    r = resample_bvh(b, 30)
    assert r.num_frames == 3 * (n - 1) + 1
    t_out, t_key = np.arange(r.num_frames) / 30.0, np.arange(n) / 10.0
    between = np.arange(r.num_frames) % 3 != 0
    for j, (c, order) in rot_cols.items():
        got = Rotation.from_euler(order, r.frames[:, c:c + 3], degrees=True)
        want = Slerp(t_key, keys[j])(t_out)
        err = np.rad2deg((got * want.inv()).magnitude())
        assert err.max() < 1e-6, f"joint {j}: {err}"
        # the check can tell: normalised lerp is 0.1-4 degrees away at 1/3 for such steps (tolerance 1e-6)
        q0, q1 = keys[j][:-1].as_quat(), keys[j][1:].as_quat()
        q1 = np.where((q0 * q1).sum(-1, keepdims=True) < 0, -q1, q1)
        nl = Rotation.from_quat(q0 * (2 / 3) + q1 * (1 / 3))
        assert np.rad2deg((nl * want[1::3].inv()).magnitude()).min() > 0.1
    # positions: linear in time between the neighbours, exact at the source frames
    for cols in (slice(0, 3), slice(6, 9)):
        want_p = np.stack([np.interp(t_out, t_key, frames[:, k]) for k in range(cols.start, cols.stop)], -1)
        np.testing.assert_allclose(r.frames[:, cols], want_p, atol=1e-9)
    np.testing.assert_allclose(r.frames[~between], frames, atol=1e-9)
    assert between.sum() == 2 * (n - 1)


def test_effective_fps_snaps_rounded_frame_times():
    assert effective_fps(0.016667) == 60.0 and effective_fps(0.03333) == 30.0
    assert effective_fps(1 / 24.5) == pytest.approx(24.5)


# ----------------------------------------------------------------------------- fitting, persistence

def test_streaming_stats_merge_equals_one_pass():
    a, b = toy_bvh(seed=1), toy_bvh(n=70, seed=2)
    one = MotionPipeline(fps=30).fit([a, b], mirror=True)
    p = MotionPipeline(fps=30)
    stats = [p.file_stats(x, mirror=m) for x in (b, a) for m in (True, False)]
    two = MotionPipeline(fps=30).fit_from_stats(stats)
    assert one.feature_names == two.feature_names
    np.testing.assert_allclose(one._fit.mean, two._fit.mean, atol=1e-9)
    np.testing.assert_allclose(one._fit.std, two._fit.std, atol=1e-9)
    merged = merge_stats(stats[0], stats[1])
    assert merged.count == stats[0].count + stats[1].count


def _assert_same_value(a, b, where: str) -> None:
    """Deep equality of nested dicts / lists / tuples / arrays / numbers: same types, same keys,
    same dtypes and shapes, bit-equal values. A field the cache drops (the dataclass default
    fills it back) or an int-keyed dict coming back with str keys fails here."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(a, key=repr)} != {sorted(b, key=repr)}"  # order is free
        for k in a:
            _assert_same_value(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_value(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_stats_survive_the_data_workers_cache_format():
    """Every MotionStats field comes back from data_prep.stats_io's bytes exactly (type, dtype, value).

    The stats are a merge of two files plus a mirrored copy, so `sources` (3) and `count`
    differ from their single-file values and a field the cache forgets cannot pass as its
    default."""
    p = MotionPipeline(fps=30)
    a, b = toy_bvh(seed=1), toy_bvh(n=70, seed=2, order="ZYX")
    s = merge_stats(merge_stats(p.file_stats(a), p.file_stats(a, mirror=True)), p.file_stats(b))
    assert s.sources == 3 and s.count == 90 + 90 + 70
    assert s.skeleton["end_sites"] and all(isinstance(k, int) for k in s.skeleton["end_sites"])
    back = stats_io.stats_from_bytes(stats_io.stats_to_bytes([s, p.file_stats(b)]))
    assert isinstance(back, list) and len(back) == 2 and all(isinstance(x, type(s)) for x in back)
    names = [f.name for f in dataclasses.fields(s)]
    assert set(names) == set(vars(back[0])), "the cached object has different attributes"
    for f in names:
        _assert_same_value(getattr(s, f), getattr(back[0], f), f)
    # and the fit from the cache is the fit from memory
    fa, fb = MotionPipeline(fps=30).fit_from_stats([s])._fit, MotionPipeline(fps=30).fit_from_stats(back[:1])._fit
    for f in dataclasses.fields(fa):
        if f.name != "skeleton":
            _assert_same_value(getattr(fa, f.name), getattr(fb, f.name), f"_Fitted.{f.name}")


def test_save_load_json_npz(tmp_path):
    b = toy_bvh()
    pipe = MotionPipeline(fps=30, joints=["Spine", "LeftArm", "RightArm"]).fit([b])
    pipe.save(tmp_path / "mp")
    files = sorted(p.name for p in (tmp_path / "mp").iterdir())
    assert files == ["pipeline.json", "pipeline.npz"]
    meta = json.loads((tmp_path / "mp" / "pipeline.json").read_text())
    assert meta["feature_dim"] == pipe.feature_dim
    with np.load(tmp_path / "mp" / "pipeline.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    back = MotionPipeline.load(tmp_path / "mp")
    x = pipe.transform(b)
    np.testing.assert_array_equal(back.transform(b), x)
    np.testing.assert_allclose(back.inverse(x).frames, pipe.inverse(x).frames)
    assert back.feature_names == pipe.feature_names and back.fps == 30


def test_unselected_joints_get_their_mean_rotation():
    b = toy_bvh()
    b.frames[:, 3 + 3 * 2:3 + 3 * 3] = [5.0, -10.0, 20.0]  # Head: a fixed pose
    pipe = MotionPipeline(fps=30, joints=["Spine", "LeftArm", "LeftHand", "RightArm", "RightHand",
                                          "LeftUpLeg", "RightUpLeg"]).fit([b])
    assert "Head_expmap_x" not in pipe.raw_feature_names
    P, P2 = bvh_positions(b), bvh_positions(pipe.inverse(pipe.transform(b), pipe.root_start(b)))
    np.testing.assert_allclose(P2, P, atol=1e-3)


# ----------------------------------------------------------------------------- errors

def test_unknown_joint_names_joint_and_file():
    b = toy_bvh()
    pipe = MotionPipeline(fps=30, joints=["Spine", "LeftPinky9"])
    with pytest.raises(MotionPipelineError, match=r"toy\.bvh: joint 'LeftPinky9' of the joint list is not in"):
        pipe.file_stats(b)


def test_other_errors_are_clear(tmp_path):
    with pytest.raises(MotionPipelineError, match="more than once"):
        MotionPipeline(joints=["Spine", "Spine"])
    with pytest.raises(MotionPipelineError, match="not fitted"):
        MotionPipeline().transform(toy_bvh())
    pipe = MotionPipeline(fps=30).fit([toy_bvh()])
    with pytest.raises(MotionPipelineError, match=r"features must be \[N, "):
        pipe.inverse(np.zeros((4, 3)))
    with pytest.raises(MotionPipelineError, match="not a saved motion pipeline"):
        MotionPipeline.load(tmp_path)


def test_from_config():
    from configs import zeggs
    cfg = zeggs.get_config()
    pipe = MotionPipeline.from_config(cfg.data)
    assert pipe.fps == 20 and pipe.joints == list(cfg.data.joints)


@pytest.mark.parametrize("n, fps", [(1, 30), (2, 30), (2, 60), (3, 20)])
def test_tiny_takes(n, fps):
    b = toy_bvh(n=n)
    pipe = MotionPipeline(fps=fps).fit([b])
    x = pipe.transform(b)
    inv = pipe.inverse(x, pipe.root_start(b))
    assert inv.num_frames == x.shape[0] >= 1
    if fps == 30:
        np.testing.assert_allclose(bvh_positions(inv), bvh_positions(b), atol=1e-4)
