"""CLI tests (subprocess): inspect and roundtrip, including the dataset feature dims."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.synthetic import make_skeleton
from gesture_jax.motion.bvh import BVH, read_bvh, write_bvh
from gesture_jax.motion.kinematics import bvh_positions
from tests.conftest import REPO, shared_file


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def _synthetic_bvh(path: Path, frames: int = 31) -> BVH:
    """A 1 s take at 30 fps on data_prep.synthetic's skeleton (23 joints, 6-channel root, ZXY),
    every channel moving: the root walks and turns, every joint swings by a random amount."""
    sk = make_skeleton()
    rng = np.random.default_rng(7)
    t = np.arange(frames)[:, None] / 30.0
    values = rng.uniform(5.0, 30.0, (1, sk.num_channels)) * np.sin(rng.uniform(1.0, 4.0, (1, sk.num_channels)) * t
                                                                     + rng.uniform(0, 6, (1, sk.num_channels)))
    values[:, :3] += [10.0, 95.0, -20.0]  # root position (cm), well away from the origin
    values[:, 5] += 120.0                  # root Yrotation (channel order Z X Y): heading far from +Z
    b = BVH(sk, values, 1.0 / 30.0)
    write_bvh(path, b)
    return read_bvh(path)


def test_inspect_synthetic_bvh_offline(tmp_path):
    """The inspect CLI on a file written here: every count it prints is known from the skeleton."""
    src = tmp_path / "synthetic.bvh"
    b = _synthetic_bvh(src)
    p = run("gesture_jax.motion.inspect", str(src), "--config=configs/demo.py")
    d = json.loads(p.stdout)
    sk = b.skeleton
    assert d["joints"] == 23 and d["joint_names"] == sk.names and d["root"] == "Hips"
    assert d["channels"] == 6 + 22 * 3 and d["channels_per_joint"] == {"3": 22, "6": 1}
    assert d["end_sites"] == 5 and d["frames"] == 31
    assert d["fps"] == 30.0 and d["duration_s"] == pytest.approx(31 / 30.0, abs=1e-6)
    assert d["rotation_orders"] == {"ZXY": 23}
    # demo config: every joint at 20 fps; raw = 9 root features + 3 exp-map values per other joint;
    # the root's ground X/Z residual (pos_rot_deltas without smoothing) is exactly 0: dropped
    assert d["target_fps"] == 20.0 and d["selected_joints"] == 23
    assert d["raw_feature_dim"] == 9 + 22 * 3
    assert sorted(d["constant_channels"]) == ["Hips_Xposition", "Hips_Zposition"]
    assert d["feature_dim"] == 9 + 22 * 3 - 2


def test_roundtrip_synthetic_bvh_offline(tmp_path):
    """The roundtrip CLI at another frame rate (30 -> 20 fps) reproduces the take in world space."""
    src, out = tmp_path / "synthetic.bvh", tmp_path / "out.bvh"
    a = _synthetic_bvh(src)
    p = run("gesture_jax.motion.roundtrip", str(src), f"--out={out}", "--fps=20")
    d = json.loads(p.stdout)
    assert d["fps_in"] == 30.0 and d["fps_out"] == 20.0 and d["frames_in"] == 31 and d["frames_out"] == 21
    assert d["feature_dim"] == 9 + 22 * 3 - 2 and d["max_position_error_cm"] < 1e-3
    b = read_bvh(out)
    assert b.fps == pytest.approx(20.0) and b.num_frames == 21
    assert b.skeleton.names == a.skeleton.names and b.skeleton.channels == a.skeleton.channels
    # checked here too, not only by the CLI's own number: at the common timestamps (every 3rd
    # input frame = every 2nd output frame) every joint is where the input put it
    Pa, Pb = bvh_positions(a), bvh_positions(b)
    np.testing.assert_allclose(Pb[::2], Pa[::3], atol=1e-3)


def test_inspect_plain():
    p = run("gesture_jax.motion.inspect", str(shared_file("genea2023/sample1.bvh")))
    d = json.loads(p.stdout)
    assert d["joints"] == 83 and d["channels"] == 498 and d["frames"] == 759
    assert d["fps"] == 30.0 and d["root"] == "body_world" and d["rotation_orders"] == {"ZXY": 83}
    assert d["duration_s"] == pytest.approx(25.3, abs=0.01)
    assert "feature_dim" not in d


@pytest.mark.parametrize("rel, cfg, dim, raw", [
    ("zeggs/067_Speech_2_x_1_0.bvh", "configs/zeggs.py", 126, 168),
    ("beat/10_kieks_0_96_96_1.bvh", "configs/beat.py", 156, 231),
])
def test_inspect_feature_dim_with_dataset_config(rel, cfg, dim, raw):
    p = run("gesture_jax.motion.inspect", str(shared_file(rel)), f"--config={cfg}")
    d = json.loads(p.stdout)
    assert d["feature_dim"] == dim and d["raw_feature_dim"] == raw and d["target_fps"] == 20.0
    assert d["config"] == cfg


def test_roundtrip_cli_writes_a_faithful_bvh(tmp_path):
    src = shared_file("beat/10_kieks_0_96_96_1.bvh")
    out = tmp_path / "out.bvh"
    p = run("gesture_jax.motion.roundtrip", str(src), f"--out={out}", "--config=configs/beat.py")
    d = json.loads(p.stdout)
    assert d["fps_out"] == 120.0 and d["frames_out"] == 39 and d["feature_dim"] == 156
    assert d["max_position_error_cm"] < 0.5
    a, b = read_bvh(src), read_bvh(out)
    assert b.skeleton.names == a.skeleton.names and b.skeleton.channels == a.skeleton.channels
    start = bvh_positions(a)[0, 0] - bvh_positions(b)[0, 0]
    assert np.linalg.norm(bvh_positions(b) - bvh_positions(a), axis=-1).max() < 0.5, start


def test_roundtrip_cli_resamples(tmp_path):
    out = tmp_path / "z20.bvh"
    p = run("gesture_jax.motion.roundtrip", str(shared_file("zeggs/raw_zeggs_start_pose_0.bvh")),
            f"--out={out}", "--fps=30")
    d = json.loads(p.stdout)
    assert d["fps_out"] == 30.0 and d["frames_out"] == 3 and d["max_position_error_cm"] < 0.5
    assert read_bvh(out).fps == pytest.approx(30.0)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n CHANNELS 3 Zrotation Yrotation Xrotation\n}\n"
                   "MOTION\nFrames: 2\nFrame Time: 0.05\n1 2 3\n4 5\n")
    p = run("gesture_jax.motion.inspect", str(bad), ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"{bad}, line 11" in p.stderr and "truncated" in p.stderr
    p = run("gesture_jax.motion.roundtrip", str(bad), ok=False)  # no --out
    assert p.returncode != 0 and "--out" in p.stderr and "Traceback" not in p.stderr
    good = tmp_path / "good.bvh"
    good.write_text(bad.read_text().replace("4 5\n", "4 5 6\n"))
    p = run("gesture_jax.motion.roundtrip", str(good), f"--out={tmp_path / 'o.bvh'}", "--config=configs/zeggs.py",
            ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "joint 'Spine' of the joint list is not in the skeleton" in p.stderr and str(good) in p.stderr


def test_help_explains():
    for mod in ("gesture_jax.motion.inspect", "gesture_jax.motion.roundtrip"):
        p = run(mod, "--help", ok=False)  # absl exits 1 after printing help
        assert "--config" in p.stdout and "python -m " + mod in p.stdout
