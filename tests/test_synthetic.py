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


def _speed(bvh, joint: str):
    pos = bvh_positions(bvh)[:, bvh.skeleton.index(joint)]              # [N, 3]
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) * bvh.fps      # sample k at (k + 0.5) / fps
    return speed, (np.arange(len(speed)) + 0.5) / bvh.fps


def test_speed_minima_at_beats_and_peaks_between_them(tmp_path):
    root = _corpus(tmp_path, duration_s=16.0)
    bvh = read_bvh(root / "demo_train_000.bvh")
    side = json.loads((root / "demo_train_000.onsets.json").read_text())
    beats = np.array(side["beats_s"])
    assert len(beats) >= 8 and np.diff(beats).min() >= synthetic.MIN_BEAT_GAP_S - 1e-6
    for joint in ("RightHand", "LeftHand", "Head"):
        speed, ts = _speed(bvh, joint)
        minima = ts[argrelextrema(speed, np.less, order=3)[0]]
        d = np.array([np.abs(minima - b).min() for b in beats])
        assert np.mean(d <= 1.0 / bvh.fps) >= 0.8, (joint, d)    # a minimum within a frame of the beat
        # between two beats of a phrase the hand is fastest in the middle half
        mids = []
        for b0, b1 in zip(beats[:-1], beats[1:]):
            if b1 - b0 < 1.3:
                sel = (ts > b0) & (ts < b1)
                mids.append((ts[sel][np.argmax(speed[sel])] - b0) / (b1 - b0))
        assert len(mids) >= 4 and np.mean((np.array(mids) > 0.25) & (np.array(mids) < 0.75)) >= 0.8, (joint, mids)


def test_audio_onsets_at_beats(tmp_path):
    root = _corpus(tmp_path)
    with wave.open(str(root / "demo_train_000.wav")) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    side = json.loads((root / "demo_train_000.onsets.json").read_text())
    ratios = []
    for o in side["beats_s"]:
        i = int(o * 16000)
        before, after = x[i - 480:i - 80], x[i + 80:i + 480]   # 5-30 ms either side
        ratios.append(np.sqrt(np.mean(after ** 2)) / (np.sqrt(np.mean(before ** 2)) + 1.0))
    assert np.median(ratios) > 10.0  # silence, then the stressed syllable
    # unstressed syllables continue the voicing: no silence before them
    inner = [o for o, s in zip(side["onsets_s"], side["stress"]) if s < 1.0]
    assert inner and all(np.sqrt(np.mean(x[int(o * 16000) - 480:int(o * 16000) - 80] ** 2)) > 100 for o in inner)


def test_gesture_space_follows_the_voice(tmp_path):
    """Deep voices gesture high and wide: the hand's rise falls as the pitch rises."""
    import librosa
    root = _corpus(tmp_path, num_train=5, num_test=0, duration_s=10.0)
    pitch, travel = [], []
    for i in range(5):
        side = json.loads((root / f"demo_train_{i:03d}.onsets.json").read_text())
        assert abs(side["gesture_space"] - synthetic.gesture_space(side["base_f0_hz"])) < 1e-3
        with wave.open(str(root / f"demo_train_{i:03d}.wav")) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        f0, voiced, _ = librosa.pyin(x, fmin=70, fmax=300, sr=16000, frame_length=1024)
        pitch.append(np.nanmedian(f0[voiced]))                # measured from the audio, not the sidecar
        b = read_bvh(root / f"demo_train_{i:03d}.bvh")
        pos = bvh_positions(b)
        lift = pos[:, b.skeleton.index("RightHand"), 1] - pos[:, 0, 1]     # hand height above the hips
        travel.append(np.percentile(lift, 95) - np.percentile(lift, 5))
    assert np.corrcoef(pitch, travel)[0, 1] < -0.8, (pitch, travel)
    assert synthetic.gesture_space(synthetic.F0_RANGE[0]) == synthetic.SPACE_RANGE[1]
    assert synthetic.gesture_space(synthetic.F0_RANGE[1]) == synthetic.SPACE_RANGE[0]


def test_beat_consistency_prefers_the_matching_audio(tmp_path):
    """The metric the demo is judged by sees the alignment: BC(matched) > BC(shuffled audio)."""
    from gesture_jax.eval import beat, joints
    root = _corpus(tmp_path, num_train=4, num_test=0, duration_s=24.0)
    pos, waves = [], []
    for i in range(4):
        b = read_bvh(root / f"demo_train_{i:03d}.bvh")
        p30 = bvh_positions(b)
        t = np.arange(int(len(p30) * 20 / 30)) * 1.5                     # 20 fps timestamps in 30 fps frames
        i0 = np.floor(t).astype(int)
        fr = (t - i0)[:, None, None]
        pos.append(p30[i0] * (1 - fr) + p30[np.minimum(i0 + 1, len(p30) - 1)] * fr)
        with wave.open(str(root / f"demo_train_{i:03d}.wav")) as w:
            waves.append(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768)
    sk = b.skeleton
    upper = joints.upper_body_joints(sk.names, sk.parents)
    mean_speed = beat.mean_joint_speed(pos, 20.0)
    bc = lambda shift: beat.beat_consistency_set(  # noqa: E731
        [beat.beat_consistency(pos[i], waves[(i + shift) % 4], 20.0, mean_speed, upper) for i in range(4)])
    matched, shuffled = bc(0), np.mean([bc(1), bc(2)])
    assert matched > shuffled + 0.08, (matched, shuffled)


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
