"""CLI tests (subprocess): inspect and roundtrip, including the dataset feature dims."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gesture_jax.motion.bvh import read_bvh
from gesture_jax.motion.kinematics import bvh_positions
from tests.conftest import REPO, shared_file


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


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
