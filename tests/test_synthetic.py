"""Synthetic demo corpus: deterministic, Trinity-like, motion beats locked to audio onsets."""
import json
import subprocess
import sys
import wave

import numpy as np
from scipy.signal import argrelextrema

from configs import trinity
from data_prep import datasets, synthetic
from gesture_jax.motion.bvh import read_bvh
from gesture_jax.motion.kinematics import bvh_positions


def _corpus(tmp_path, name="c", **kw):
    kw = {"num_train": 1, "num_test": 1, "duration_s": 8.0, "seed": 3} | kw
    synthetic.generate_corpus(tmp_path / name, **kw)
    return tmp_path / name


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = _corpus(tmp_path, "a"), _corpus(tmp_path, "b"), _corpus(tmp_path, "c", seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*.*"))
    assert [str(f) for f in files] == [
        "demo_test_000.bvh", "demo_test_000.onsets.json", "demo_test_000.wav",
        "demo_train_000.bvh", "demo_train_000.onsets.json", "demo_train_000.wav"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_skeleton_audio_format_and_pairing(tmp_path):
    root = _corpus(tmp_path)
    bvh = read_bvh(root / "demo_train_000.bvh")
    sk = bvh.skeleton
    assert sk.names == trinity.TRINITY_JOINTS and sk.parents[0] == -1
    assert sk.channels[0][:3] == ["Xposition", "Yposition", "Zposition"]
    assert all(sk.rotation_order(j) == "ZXY" for j in range(sk.num_joints))
    assert bvh.fps == synthetic.SOURCE_FPS and bvh.num_frames == 8 * synthetic.SOURCE_FPS
    with wave.open(str(root / "demo_train_000.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 128000)
    disc = datasets.discover("demo", root)
    splits = datasets.assign_splits("demo", disc.pairs, ["demo_test_*"])
    assert [p.file_id for p in splits["train"]] == ["demo_train_000"]
    assert [p.file_id for p in splits["test"]] == ["demo_test_000"] and not disc.skipped


def test_wrist_speed_minima_at_onsets_and_peaks_one_sigma_away(tmp_path):
    root = _corpus(tmp_path, duration_s=12.0)
    bvh = read_bvh(root / "demo_train_000.bvh")
    side = json.loads((root / "demo_train_000.onsets.json").read_text())
    fps = bvh.fps
    pos = bvh_positions(bvh)[:, bvh.skeleton.index("RightHand")]       # [N, 3]
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) * fps          # sample k at (k + 0.5) / fps
    t_speed = (np.arange(len(speed)) + 0.5) / fps
    minima = t_speed[argrelextrema(speed, np.less, order=2)[0]]
    maxima = t_speed[argrelextrema(speed, np.greater, order=1)[0]]
    onsets = np.array(side["onsets_s"])
    assert len(onsets) >= 20
    d_min = np.array([np.abs(minima - o).min() for o in onsets])
    assert np.mean(d_min <= 1.0 / fps) > 0.85, d_min  # speed minimum within a frame of the onset
    sig = synthetic.STROKE_SIGMA_S
    d_after = np.array([np.abs(maxima - (o + sig)).min() for o in onsets])
    assert np.median(d_after) <= 1.0 / fps


def test_audio_energy_rises_at_onsets(tmp_path):
    root = _corpus(tmp_path)
    with wave.open(str(root / "demo_train_000.wav")) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    onsets = json.loads((root / "demo_train_000.onsets.json").read_text())["onsets_s"]
    ratios = []
    for o in onsets:
        i = int(o * 16000)
        before, after = x[i - 480:i - 80], x[i + 80:i + 480]   # 5-30 ms either side
        ratios.append(np.sqrt(np.mean(after ** 2)) / (np.sqrt(np.mean(before ** 2)) + 1.0))
    assert np.median(ratios) > 3.0


def test_cli_writes_into_config_root(tmp_path):
    out = tmp_path / "demo_src"
    r = subprocess.run([sys.executable, "-m", "data_prep.synthetic", "--config=configs/demo.py",
                        f"--config.data.root={out}", "--config.data.synthetic.num_train=2",
                        "--config.data.synthetic.num_test=1", "--config.data.synthetic.duration_s=5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["files"] == 3
    assert sorted(p.name for p in out.rglob("*.wav")) == ["demo_test_000.wav", "demo_train_000.wav",
                                                          "demo_train_001.wav"]
