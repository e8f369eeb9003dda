"""Kucherenko 2019 (KA) metrics on hand-made clips, inside evaluate_set, and on a real BVH."""
import numpy as np
import pytest

from conftest import shared_file
from gesture_jax.eval import kinematic
from gesture_jax.eval import kucherenko as ka


def _line(n: int, speed: float, direction=(1.0, 2.0, 2.0), start=(5.0, 60.0, -3.0)) -> np.ndarray:
    """[n, 3] positions moving at `speed` units/frame along `direction`."""
    u = np.asarray(direction) / np.linalg.norm(direction)
    return np.asarray(start) + np.arange(n)[:, None] * speed * u


def test_constant_velocity_has_no_jerk_or_acceleration_and_one_speed_bin():
    n = 40
    clip = np.stack([_line(n, 0.33), _line(n, 0.0), _line(n, 1.7, (0, 0, 1))], axis=1)  # [40, 3, 3]
    assert ka.average_jerk([clip]) == pytest.approx(0.0, abs=1e-12)
    assert ka.average_acceleration([clip]) == pytest.approx(0.0, abs=1e-12)
    h = ka.speed_histograms([clip])
    assert h.edges.shape == (21,) and h.edges[-1] == 1.0 and h.edges[1] == pytest.approx(0.05)
    want = np.zeros((3, 20), np.int64)
    want[0, int(np.floor(0.33 / 0.05))] = n - 1   # bin 6: [0.30, 0.35)
    want[1, 0] = n - 1                            # still: bin 0
    # joint 2 at 1.7 units/frame is above max_speed 1: dropped, not put in the top bin
    np.testing.assert_array_equal(h.per_joint, want)
    np.testing.assert_array_equal(h.total, want.sum(0))
    wide = ka.speed_histograms([clip], bin_width=0.5, max_speed=2.0)  # every constant is a parameter
    np.testing.assert_array_equal(wide.per_joint[:, :4], [[n - 1, 0, 0, 0], [n - 1, 0, 0, 0], [0, 0, 0, n - 1]])


def test_speed_histogram_pools_clips_of_different_lengths():
    a = _line(11, 0.12)[:, None]   # 10 speeds in bin 2
    b = _line(6, 0.62)[:, None]    # 5 speeds in bin 12
    h = ka.speed_histograms([a, b])
    assert h.total[2] == 10 and h.total[12] == 5 and h.total.sum() == 15


def test_cubic_trajectory_has_known_jerk_and_acceleration_per_frame():
    """x(k) = a k³ (k = frame index): Δ³x = 6a everywhere, Δ²x(k) = a(6k + 6), so the average
    acceleration over k = 0..n-3 is a(3n - 3); a still second joint halves both (mean over joints)."""
    a, n = 0.01, 50
    clip = np.zeros((n, 2, 3))
    clip[:, 0, 1] = a * np.arange(n) ** 3
    assert ka.average_jerk([clip]) == pytest.approx(6 * a / 2, rel=1e-9)
    assert ka.average_acceleration([clip]) == pytest.approx(a * (3 * n - 3) / 2, rel=1e-9)
    # a set is the mean of per-file values (KA), not the pooled frames (kinematic.py)
    still = np.zeros((200, 2, 3))
    assert ka.average_jerk([clip, still]) == pytest.approx(6 * a / 4, rel=1e-9)
    assert kinematic.jerk([clip, still], fps=1.0) < 6 * a / 4 / 2
    # not scaled by fps: the per-second protocol is the per-frame one times fps³
    assert kinematic.jerk(clip, fps=20.0) == pytest.approx(20.0 ** 3 * ka.average_jerk([clip]), rel=1e-9)


def test_hellinger_of_identical_disjoint_and_half_overlapping_histograms():
    slow = _line(30, 0.12)[:, None]
    fast = _line(30, 0.52)[:, None]
    hs, hf = ka.speed_histograms([slow]), ka.speed_histograms([fast])
    assert ka.hellinger_distance(hs, hs) == pytest.approx(0.0, abs=1e-12)
    assert ka.hellinger_distance(hs, hf) == pytest.approx(1.0)
    mixed = ka.speed_histograms([np.concatenate([slow, fast], axis=1)])  # half slow, half fast
    # Σ sqrt(p q) = sqrt(0.5 · 1) = 0.7071 -> H = sqrt(1 - 0.7071)
    assert ka.hellinger_distance(mixed, hs) == pytest.approx(np.sqrt(1 - np.sqrt(0.5)), rel=1e-9)
    assert ka.hellinger_distance(hs.total * 7, hs.total) == pytest.approx(0.0, abs=1e-12)  # normalized


def test_ape_and_mae_of_constant_offsets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(25, 2, 3)) * 10
    offset = np.zeros((1, 2, 3))
    offset[0, 0] = 2.0 * np.array([0.6, 0.8, 0.0])   # joint 0: distance 2 along (0.6, 0.8, 0)
    offset[0, 1] = [0.0, 0.0, -4.0]                  # joint 1: distance 4 along -z
    gen = real + offset
    assert ka.ape([gen], [real]) == pytest.approx(3.0, rel=1e-12)            # mean of 2 and 4
    mae_j0 = (1.2 + 1.6 + 0.0) / 3
    mae_j1 = 4.0 / 3
    assert ka.mae([gen], [real]) == pytest.approx((mae_j0 + mae_j1) / 2, rel=1e-12)
    assert ka.ape([real], [real]) == 0.0 and ka.mae([real], [real]) == 0.0


def test_pairs_are_cut_to_the_shorter_clip_and_files_are_averaged():
    real = np.zeros((20, 1, 3))
    gen = np.zeros((30, 1, 3))
    gen[:20, 0, 0] = 1.0
    gen[20:, 0, 0] = 1000.0                   # beyond the real clip: ignored
    assert ka.ape([gen], [real]) == pytest.approx(1.0)
    assert ka.ape([real], [gen]) == pytest.approx(1.0)
    (g, r), = ka.paired([gen], [real])
    assert g.shape == r.shape == (20, 1, 3)
    # two files, APE 1 (20 frames) and 3 (200 frames): mean over files = 2, not frame-weighted
    real2 = np.zeros((200, 1, 3))
    gen2 = real2 + np.array([0.0, 3.0, 0.0])
    assert ka.ape([gen, gen2], [real, real2]) == pytest.approx(2.0)
    res = ka.ka_metrics([gen, gen2], [real, real2], file_ids=["a", "b"])
    assert res["ka_per_file"]["a"]["ka_ape"] == pytest.approx(1.0) and res["ka_ape"] == pytest.approx(2.0)
    assert res["ka_hellinger"] == pytest.approx(0.0, abs=1e-12)  # all still after the cut


def test_bad_inputs_give_clear_errors():
    x = np.zeros((10, 2, 3))
    with pytest.raises(ValueError, match="2 generated clips but 1 real"):
        ka.ape([x, x], [x])
    with pytest.raises(ValueError, match="joints"):
        ka.ape([x], [np.zeros((10, 3, 3))])
    with pytest.raises(ValueError, match="whole number of bins"):
        ka.speed_bin_edges(0.3, 1.0)
    with pytest.raises(ValueError, match=r"\[N, J, 3\]"):
        ka.ape([np.zeros((10, 6))], [np.zeros((10, 6))])


def test_evaluate_set_reports_ka_metrics_with_their_constants():
    from gesture_jax.eval.metrics import KA_KEYS, MetricConstants, evaluate_set, make_reference

    rng = np.random.default_rng(1)
    t = np.arange(120)[:, None, None]
    real = [np.sin(2 * np.pi * rng.uniform(0.01, 0.05, size=(1, 4, 3)) * t) * 5 + [0, 50, 0] for _ in range(2)]
    waves = [np.zeros(120 * 800, np.float32) for _ in real]
    k = MetricConstants(fgd_window=20, fgd_stride=10, bc_mask_frames=10)
    assert (k.ka_hist_bin_width, k.ka_hist_max_speed) == (0.05, 1.0)
    assert k.to_dict()["ka_hist_bin_width"] == 0.05
    ref = make_reference(real, k, None, bc_joints=[1, 2])
    gt = evaluate_set(real, waves, ref, k, mean_speed=1.0, bc_joints=[1, 2], ae=None, file_ids=["a", "b"])
    assert set(KA_KEYS) <= set(gt)
    assert gt["ka_ape"] == 0.0 and gt["ka_mae"] == 0.0 and gt["ka_hellinger"] == pytest.approx(0.0, abs=1e-7)
    assert gt["ka_jerk"] == gt["ka_jerk_gt"] > 0 and gt["ka_accel"] == gt["ka_accel_gt"] > 0
    # per frame, not per second: the project's jerk is fps³ times larger on one file
    assert gt["per_file"]["a"]["jerk"] == pytest.approx(20.0 ** 3 * gt["per_file"]["a"]["ka_jerk"], rel=1e-9)
    # a vertical offset survives root_relative (x,z only): APE = the offset
    up = [c + [0.0, 2.5, 0.0] for c in real]
    r = evaluate_set(up, waves, ref, k, mean_speed=1.0, bc_joints=[1, 2], ae=None, file_ids=["a", "b"])
    assert r["ka_ape"] == pytest.approx(2.5) and r["per_file"]["b"]["ka_ape"] == pytest.approx(2.5)
    assert r["ka_jerk_gt"] == gt["ka_jerk"]
    # the histogram constants are read from cfg.eval
    import ml_collections
    k2 = MetricConstants.from_config(ml_collections.ConfigDict({"ka_hist_bin_width": 0.1, "ka_hist_max_speed": 2.0}),
                                     fps=20)
    r2 = evaluate_set(up, waves, make_reference(real, k2, None, [1, 2]), k2, mean_speed=1.0, bc_joints=[1, 2], ae=None)
    assert len(r2["ka_speed_hist"]) == 20 and r2["ka_speed_edges"][-1] == 2.0 and len(r["ka_speed_hist"]) == 20
    from configs import base
    assert MetricConstants.from_config(base.get_base_config().eval, fps=20).ka_hist_max_speed == 1.0


def test_ka_metrics_on_real_motion():
    """GENEA 2023 sample (30 fps, cm) at 20 fps: against itself everything vanishes; shifted by one
    frame the positions differ but the speed distribution hardly moves; the histogram counts
    exactly the speeds up to 1 cm/frame."""
    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.kinematics import bvh_positions
    from gesture_jax.motion.resample import resample_bvh

    pos = bvh_positions(resample_bvh(read_bvh(shared_file("genea2023/sample1.bvh")), 20.0), heading_free=True)
    assert pos.shape[0] > 400
    same = ka.ka_metrics([pos], [pos])
    assert same["ka_ape"] == 0.0 and same["ka_hellinger"] == pytest.approx(0.0, abs=1e-7)
    assert same["ka_jerk"] > 0 and same["ka_accel"] > 0 and same["ka_jerk_gt"] == same["ka_jerk"]
    shifted = ka.ka_metrics([pos[1:]], [pos[:-1]])
    assert shifted["ka_ape"] > 0.05 and shifted["ka_hellinger"] < 0.02
    sp = np.linalg.norm(np.diff(pos, axis=0), axis=-1)  # [N-1, J] cm/frame
    h = ka.speed_histograms([pos])
    assert h.total.sum() == np.sum(sp <= 1.0) and 0.1 < h.total.sum() / sp.size < 0.9  # 35 %: fast frames dropped
    np.testing.assert_array_equal(h.per_joint.sum(1), np.sum(sp <= 1.0, axis=0))
