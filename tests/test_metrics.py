"""Hand-made cases for the metrics: FGD, L1 diversity, jerk/acceleration, Hellinger, joint sets."""
import numpy as np
import pytest

from gesture_jax.eval import fgd, kinematic
from gesture_jax.eval.joints import root_relative, upper_body_joints
from gesture_jax.eval.metrics import MetricConstants


def _correlated(rng, n, d):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + rng.normal(size=d)


def test_fgd_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    x = _correlated(rng, 400, 32)
    assert abs(fgd.fgd_from_features(x, x)) <= 1e-6
    assert abs(fgd.fgd_from_features(x, x, method="svd")) <= 1e-6


def test_fgd_grows_monotonically_with_noise():
    rng = np.random.default_rng(1)
    x = _correlated(rng, 400, 32)
    noise = rng.normal(size=x.shape)
    levels = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    d = [fgd.fgd_from_features(x, x + s * noise) for s in levels]
    assert d[0] <= 1e-6
    assert all(b > a for a, b in zip(d, d[1:])), d


def test_fgd_ranks_a_noisy_copy_farther_than_a_fresh_draw():
    """FGD compares distributions, not paired samples: a fresh draw from the same distribution
    must score lower than a copy of the set itself with noise added (which widens the
    covariance), although every sample of the noisy copy is much closer to its original
    than any fresh sample is. Noise with zero mean leaves the means equal to sampling error,
    so the ordering holds only if the covariance term is computed: a mean-only distance, or
    a sample-to-sample one, ranks the two the other way."""
    rng = np.random.default_rng(5)
    mix = rng.normal(size=(16, 16)) / 4.0
    mu = rng.normal(size=16)
    draw = lambda n: rng.normal(size=(n, 16)) @ mix + mu  # noqa: E731
    x, fresh = draw(400), draw(400)  # small: the svd route factors an [N, N] matrix
    noisy = x + 0.7 * rng.normal(size=x.shape)
    # paired distances say the opposite of FGD here (the sanity of the setup, not of fgd.py)
    assert np.mean(np.sum((noisy - x) ** 2, -1)) < 0.5 * np.mean(np.sum((fresh - x) ** 2, -1))
    for method in ("sqrtm", "svd"):
        d_fresh = fgd.fgd_from_features(x, fresh, method=method)
        d_noisy = fgd.fgd_from_features(x, noisy, method=method)
        assert 0.0 <= d_fresh < 0.5 * d_noisy, (method, d_fresh, d_noisy)


def test_fgd_svd_route_equals_reference_sqrtm():
    rng = np.random.default_rng(2)
    a, b = _correlated(rng, 300, 20), 1.3 * _correlated(rng, 250, 20) + 0.4
    ref = fgd.fgd_from_features(a, b, method="sqrtm")
    assert fgd.fgd_from_features(a, b, method="svd") == pytest.approx(ref, rel=1e-8)
    # and against the closed form for diagonal Gaussians
    mu1, mu2 = np.zeros(3), np.ones(3)
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 3.0 + sum((np.sqrt(p) - np.sqrt(q)) ** 2 for p, q in [(1, 4), (4, 4), (9, 1)])
    assert fgd.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected)


def test_raw_fgd_on_position_windows():
    rng = np.random.default_rng(3)
    clips = [np.cumsum(rng.normal(size=(120, 5, 3)), axis=0) for _ in range(3)]
    w = fgd.make_windows(clips, 34, 17)
    assert w.shape == (3 * 6, 34, 5, 3)  # starts 0,17,34,51,68,85 (102 would overrun 120)
    assert abs(fgd.fgd_raw(clips, clips, 34)) <= 1e-6
    noise = [rng.normal(size=c.shape) for c in clips]
    d = [fgd.fgd_raw(clips, [c + s * n for c, n in zip(clips, noise)], 34) for s in (0.1, 0.3, 1.0)]
    assert d[0] < d[1] < d[2]
    with pytest.raises(fgd.FGDError):
        fgd.fgd_raw([clips[0][:40]], clips, 34)  # one window only: no covariance


def test_l1div_of_constant_pose_is_zero_and_known_value():
    pose = np.random.default_rng(4).normal(size=(1, 7, 3))
    assert kinematic.l1_diversity(np.repeat(pose, 50, axis=0)) == 0.0
    # one coordinate alternating ±1 around its mean: |dev| = 1 per frame
    x = np.zeros((10, 2, 3))
    x[::2, 0, 0], x[1::2, 0, 0] = 1.0, -1.0
    assert kinematic.l1_diversity(x) == pytest.approx(1.0)


def test_jerk_and_acceleration_of_constant_velocity_are_zero():
    t = np.arange(100)[:, None, None] / 20.0
    x = 3.0 + t * np.array([1.0, -2.0, 0.5])[None, None, :] * np.ones((1, 4, 1))
    assert kinematic.jerk(x, 20) == pytest.approx(0.0, abs=1e-6)
    assert kinematic.acceleration(x, 20) == pytest.approx(0.0, abs=1e-6)


def test_jerk_and_acceleration_units():
    fps = 30.0
    t = np.arange(200) / fps
    x = np.zeros((200, 1, 3))
    x[:, 0, 1] = t ** 3                               # jerk 6 units/s³ everywhere
    assert kinematic.jerk(x, fps) == pytest.approx(6.0, rel=1e-6)
    x[:, 0, 1] = 0.5 * 4.0 * t ** 2                   # acceleration 4 units/s²
    assert kinematic.acceleration(x, fps) == pytest.approx(4.0, rel=1e-6)
    # a set is the pooled frames, not the mean of clip means
    short, long_ = x[:10], x.copy()
    long_[:, 0, 1] *= 2.0
    pooled = (8 * 4.0 + 198 * 8.0) / (8 + 198)
    assert kinematic.acceleration([short, long_], fps) == pytest.approx(pooled, rel=1e-6)


def test_hellinger_of_speed_histograms():
    rng = np.random.default_rng(5)
    clip = np.cumsum(rng.normal(size=(300, 4, 3)), axis=0)
    sp = kinematic.speeds(clip, 20)
    edges = kinematic.speed_bin_edges(sp, bins=30)
    h = kinematic.speed_histogram(sp, edges)
    assert h.sum() == pytest.approx(1.0)
    assert kinematic.hellinger(h, h) == pytest.approx(0.0, abs=1e-7)
    assert kinematic.hellinger(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    faster = kinematic.speed_histogram(kinematic.speeds(clip * 3.0, 20), edges)
    slower = kinematic.speed_histogram(kinematic.speeds(clip * 1.2, 20), edges)
    assert 0 < kinematic.hellinger(slower, h) < kinematic.hellinger(faster, h) <= 1.0


def test_upper_body_joints_from_hierarchy():
    names = ["Hips", "Spine", "Spine1", "Neck", "Head", "RightArm", "RightHand", "RightHandThumb1",
             "LeftArm", "LeftHand", "RightUpLeg", "RightLeg"]
    parents = [-1, 0, 1, 2, 3, 2, 5, 6, 2, 8, 0, 10]
    idx = upper_body_joints(names, parents)
    assert [names[i] for i in idx] == ["Spine", "Spine1", "Neck", "Head", "RightArm", "RightHand",
                                        "LeftArm", "LeftHand"]
    assert list(upper_body_joints(names, parents, explicit=["Head", "LeftHand"])) == [4, 9]
    with pytest.raises(ValueError, match="Tail"):
        upper_body_joints(names, parents, explicit=["Tail"])


def test_root_relative_removes_horizontal_drift_only():
    x = np.zeros((5, 2, 3))
    x[:, :, 0] = np.arange(5)[:, None] * 10.0     # walking along x
    x[:, 1, 1] = 7.0
    r = root_relative(x)
    assert np.allclose(r[:, :, 0], 0.0) and np.allclose(r[:, 1, 1], 7.0)


def test_metric_constants_from_config_defaults_and_stride():
    import ml_collections
    c = ml_collections.ConfigDict({"fgd_window": 40, "fgd_stride": 0, "bc_sigma": 0.25})
    k = MetricConstants.from_config(c, fps=25)
    assert (k.fgd_window, k.fgd_stride, k.bc_sigma, k.fps, k.bc_order) == (40, 20, 0.25, 25.0, 7)
    from configs import base
    k = MetricConstants.from_config(base.get_base_config().eval, fps=20)
    assert (k.fgd_window, k.fgd_stride, k.bc_mask_frames, k.bc_threshold) == (34, 17, 60, 0.3)


def test_heading_free_positions_ignore_turning_and_walking_but_not_posture():
    """Evaluation positions (cfg.eval.heading_free): a body that turns and walks while holding a
    pose equals the same pose standing still facing +Z; bending the spine still shows."""
    from data_prep.synthetic import make_skeleton
    from gesture_jax.motion.bvh import BVH
    from gesture_jax.motion.kinematics import bvh_positions

    sk = make_skeleton()
    n = 50
    rng = np.random.default_rng(0)
    pose = rng.uniform(-30, 30, size=sk.num_channels)  # one posture, every channel (root tilt included)
    still = np.repeat(pose[None], n, axis=0)
    still[:, :3] = [0.0, 95.0, 0.0]
    still[:, 3:6] = [0.0, 0.0, 0.0]  # root ZXY rotation: none
    moving = still.copy()
    moving[:, 0] = np.linspace(0, 200, n)  # walks 2 m along x and z ...
    moving[:, 2] = np.linspace(0, -150, n)
    moving[:, 5] = np.linspace(0, 170, n)  # ... while turning 170 degrees about Y (root Yrotation)
    p_still = bvh_positions(BVH(sk, still, 0.05), heading_free=True)
    p_moving = bvh_positions(BVH(sk, moving, 0.05), heading_free=True)
    np.testing.assert_allclose(p_moving, p_still, atol=1e-6)
    assert np.abs(bvh_positions(BVH(sk, moving, 0.05)) - p_still).max() > 100  # without: far apart
    bent = moving.copy()
    bent[:, 3] = 20.0  # root roll (Z) is posture, not heading: kept
    assert np.abs(bvh_positions(BVH(sk, bent, 0.05), heading_free=True) - p_still).max() > 5
