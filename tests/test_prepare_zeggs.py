"""Prepare the real ZEGGS pair (../shared/data), read a window back, and check it against the source.

Motion: the window inverted to BVH has the source's joint positions at the same
timestamps (within 0.5 cm). Audio: feature frame k of a window starting at frame s is the
audio around time (s + k)/20 s.
"""
from pathlib import Path

import numpy as np
import pytest

from configs import zeggs
from data_prep import prepare
from gesture_jax.audio.features import make_extractor
from gesture_jax.audio.io import load_audio
from gesture_jax.data import records, shards
from gesture_jax.motion.bvh import BVH, read_bvh
from gesture_jax.motion.kinematics import bvh_positions
from gesture_jax.motion.pipeline import MotionPipeline
from tests.conftest import shared_file

STEM = "067_Speech_2_x_1_0"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    bvh, wav = shared_file(f"zeggs/{STEM}.bvh"), shared_file(f"zeggs/{STEM}.wav")
    root = tmp_path_factory.mktemp("zeggs_src")
    (root / bvh.name).symlink_to(bvh)
    (root / wav.name).symlink_to(wav)
    cfg = zeggs.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out = str(root), str(tmp_path_factory.mktemp("zeggs_out"))
        cfg.audio.feature = "mel"
        cfg.data.holdout = []      # the one pair is the training split
        cfg.data.num_workers = 1
    m = prepare.run_prepare(cfg, progress=False)
    out = Path(cfg.data.out)
    windows = [records.decode_window(r) for s in m["splits"]["train"]["shards"]
               for r in shards.read_records(out / s["path"])]
    return cfg, m, out, windows, bvh, wav


def test_counts(prepared):
    cfg, m, out, windows, _, _ = prepared
    # 68.83 s at 20 fps = 1376 frames; 400-frame windows every 200 -> starts 0..800 (5), plus mirrored
    assert m["counts"] == {"train": 10, "test": 0}
    assert [(w["start_frame"], w["mirrored"]) for w in windows] == (
        [(s, False) for s in range(0, 801, 200)] + [(s, True) for s in range(0, 801, 200)])
    assert m["splits"]["train"]["files"][0]["sha256"]["wav"].startswith("7035a0949306")


def test_window_inverts_to_source_joint_positions(prepared):
    cfg, m, out, windows, bvh_path, _ = prepared
    pipe = MotionPipeline.load(out / m["motion"]["pipeline"])
    src = read_bvh(bvh_path)                      # 30 fps
    s = 200                                       # window start frame at 20 fps = 10 s
    w = next(w for w in windows if w["start_frame"] == s and not w["mirrored"])
    s_src = int(round(s / cfg.data.fps * src.fps))  # 300
    # pos_rot_deltas keeps no absolute ground position/heading: take them from the source at 10 s
    start = pipe.root_start(BVH(src.skeleton, src.frames[s_src:], src.frame_time))
    rec = pipe.inverse(w["motion"], start=start)   # 20 fps, source skeleton
    assert rec.skeleton.names == src.skeleton.names and rec.num_frames == 400
    k = np.arange(0, 400, 2)                      # frames where 20 fps and 30 fps timestamps coincide
    p_rec = bvh_positions(rec)[k]
    p_src = bvh_positions(src)[s_src + k * 3 // 2]
    err = np.linalg.norm(p_rec - p_src, axis=-1)  # [frames, joints] cm
    assert err.max() < 0.5, err.max()


def test_audio_features_line_up_with_the_audio(prepared):
    cfg, m, out, windows, _, wav_path = prepared
    wave = load_audio(wav_path)
    hop = cfg.audio.sample_rate // cfg.data.fps    # 800 samples per frame
    s, T = 400, m["window_frames"]
    w = next(w for w in windows if w["start_frame"] == s and not w["mirrored"])
    feats = w["audio"].astype(np.float32)          # [400, 80]
    # the extractor on the raw wave slice [s/20 s, (s+T)/20 s) gives the same frames (edges aside)
    ext = make_extractor(cfg.audio, cfg.data.fps)
    ref = ext(wave[s * hop:(s + T) * hop])
    assert ref.shape == feats.shape
    np.testing.assert_allclose(feats[2:-2], ref[2:-2], atol=0.02, rtol=0.005)
    # and frame k is the sound at time (s + k)/20 s: mel energy tracks the wave's energy there,
    # best at zero lag
    t = np.arange(T)
    energy = np.array([np.mean(wave[max(0, (s + i) * hop - hop):(s + i) * hop + hop] ** 2) for i in t])
    log_e, mel_e = np.log(energy + 1e-8), np.log(np.exp(feats).sum(1))
    corr = {lag: np.corrcoef(mel_e[10:-10], np.roll(log_e, lag)[10:-10])[0, 1] for lag in (-2, -1, 0, 1, 2)}
    assert corr[0] > 0.9 and corr[0] == max(corr.values()), corr


def test_mirrored_window_has_the_same_audio(prepared):
    _, _, _, windows, _, _ = prepared
    a = next(w for w in windows if w["start_frame"] == 0 and not w["mirrored"])
    b = next(w for w in windows if w["start_frame"] == 0 and w["mirrored"])
    assert np.array_equal(a["audio"], b["audio"]) and not np.array_equal(a["motion"], b["motion"])
