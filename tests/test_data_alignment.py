"""Alignment across units on the synthetic corpus: source files -> prepared windows -> Grain crops.

The real-data versions (tests/test_prepare_zeggs.py) need ../shared; these run everywhere on a
tiny corpus written by data_prep.synthetic (2 training takes + 1 held-out take of 8 s, mel
features, mirrored copies on), prepared once per module. Each test checks a window against the
*source files*, read independently of the preparation code:

  * motion: the stored window, inverted through the saved motion pipeline, has the source
    BVH's joint positions at the timestamps (start_frame + k) / fps;
  * audio: feature frame k of a window is the sound around time (start_frame + k) / fps
    (energy of the raw WAV samples there, read with the stdlib `wave`);
  * random crops from the Grain pipeline cut motion and audio at the same offset.
"""
from __future__ import annotations

import copy
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from configs import demo
from data_prep import prepare, synthetic
from gesture_jax.data import pipeline, records, shards
from gesture_jax.motion.bvh import BVH, read_bvh
from gesture_jax.motion.kinematics import bvh_positions
from gesture_jax.motion.mirror import mirror_bvh
from gesture_jax.motion.pipeline import MotionPipeline

DURATION_S = 8.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(cfg, manifest, source root, windows of every split) for the tiny synthetic corpus (~4 s)."""
    root = tmp_path_factory.mktemp("align_src")
    synthetic.generate_corpus(root, num_train=2, num_test=1, duration_s=DURATION_S, seed=5)
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out = str(root), str(tmp_path_factory.mktemp("align_out"))
        cfg.data.num_workers = 1
        cfg.data.mirror = True  # the reference's mirrored windows: their alignment is checked too
    m = prepare.run_prepare(cfg, progress=False)
    out = Path(cfg.data.out)
    windows = [dict(records.decode_window(r), split=split)
               for split in ("train", "test") for s in m["splits"][split]["shards"]
               for r in shards.read_records(out / s["path"])]
    return cfg, m, root, windows


def _wav(path: Path) -> np.ndarray:
    """The WAV's samples [S] float64 in [-1, 1), read without the project's audio loader."""
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0


def test_every_window_of_every_split_is_prepared(prepared):
    cfg, m, _, windows = prepared
    T = m["window_frames"]
    # 8 s = 160 frames at 20 fps, 4 s windows: train every 2 s (plain + mirrored), test every 4 s
    assert T == 80 and m["counts"] == {"train": 2 * 3 * 2, "test": 2}
    got = sorted((w["split"], w["file_id"], w["start_frame"], w["mirrored"]) for w in windows)
    want = sorted([("train", f"demo_train_00{i}", s, mir) for i in range(2) for s in (0, 40, 80)
                   for mir in (False, True)] + [("test", "demo_test_000", s, False) for s in (0, 80)])
    assert got == want


def test_windows_invert_to_the_source_joints_at_their_timestamps(prepared):
    """Window frame k (20 fps) is source time (start_frame + k) / 20 s: the inverse of the stored
    features has the source BVH's joint positions there (mirrored windows: the mirrored source's).

    Frames k even are where the 20 fps and 30 fps grids coincide (source frame 3k/2). The root's
    absolute ground position and heading are not in the features (pos_rot_deltas): they come
    from the source at the window's start. A one-frame (50 ms) misalignment moves the hands of
    this corpus by centimetres (checked below on the same data), against < 0.01 cm here.
    """
    cfg, m, root, windows = prepared
    pipe = MotionPipeline.load(Path(cfg.data.out) / m["motion"]["pipeline"])
    T = m["window_frames"]
    k = np.arange(0, T, 2)                                   # 20 fps frames on the 30 fps grid
    sources = {fid: read_bvh(root / f"{fid}.bvh") for fid in {w["file_id"] for w in windows}}
    for w in windows:
        src = sources[w["file_id"]]
        assert src.fps == synthetic.SOURCE_FPS == 30
        s_src = w["start_frame"] * 3 // 2                    # start_frame is even: stride 40 frames
        tail = BVH(src.skeleton, src.frames[s_src:], src.frame_time)   # the source from the window's start
        if w["mirrored"]:
            tail = mirror_bvh(tail)                          # symmetric skeleton: same offsets
        rec = pipe.inverse(w["motion"], start=pipe.root_start(tail))   # [T frames at 20 fps]
        assert rec.num_frames == T and rec.skeleton.names == src.skeleton.names
        p_src = bvh_positions(tail)                          # [N, J, 3] cm at 30 fps
        p_rec = bvh_positions(rec)[k]                        # [T/2, J, 3]
        err = np.linalg.norm(p_rec - p_src[k * 3 // 2], axis=-1)       # [T/2, J] cm
        assert err.max() < 0.01, (w["file_id"], w["start_frame"], w["mirrored"], err.max())
        if len(p_src) > (T - 1) * 3 // 2 + 3:   # one 20 fps frame later = 1.5 source frames: 2 frames = 3
            late = np.linalg.norm(p_rec - p_src[k * 3 // 2 + 3], axis=-1)
            assert late.max() > 1.0, "the corpus moves too little for this check to see a misalignment"


def _energy_at_frames(x: np.ndarray, frames: np.ndarray, fps: int = 20, sr: int = 16000) -> np.ndarray:
    """Energy [len(frames)] of ``x`` in a Hann window of two model frames centred at frame/fps s.

    The "sound at time t" the mel features are documented to describe (gesture_jax.audio.mel:
    frame k centred at k/fps, 100 ms periodic Hann analysis window at 20 fps), computed from
    the samples directly; NaN where the window leaves the file.
    """
    hop = sr // fps
    win = np.hanning(2 * hop + 1)[:-1]
    out = np.full(len(frames), np.nan)
    for i, f in enumerate(frames):
        a = f * hop - hop
        if a >= 0 and a + 2 * hop <= len(x):
            out[i] = np.sum((x[a:a + 2 * hop] * win) ** 2)
    return out


def test_audio_frame_k_is_the_sound_at_start_plus_k_over_fps(prepared):
    """Audio frame k of a window starting at s describes the WAV around (s + k)/fps.

    The total mel power of a frame tracks the energy of the raw samples in that frame's
    analysis window: on every window that holds speech (a beat from the corpus sidecar) the
    log-energy curves correlate > 0.99 at lag 0, and clearly less one frame either way
    (silences and sharp syllable onsets make 50 ms matter). Frames near digital-silence level
    (more than e^8 below the window's loudest) are left out: there the curves are noise.
    """
    _, m, root, windows = prepared
    T = m["window_frames"]
    checked = 0
    for w in windows:
        if w["mirrored"]:
            continue                     # same audio as the plain window (asserted below)
        s = w["start_frame"]
        beats = json.loads((root / f"{w['file_id']}.onsets.json").read_text())["beats_s"]
        if not any(s / 20 + 0.5 < b < (s + T) / 20 - 0.5 for b in beats):
            continue                     # a silent window: no timing to observe
        x = _wav(root / f"{w['file_id']}.wav")
        log_e = np.log(_energy_at_frames(x, s + np.arange(-1, T + 1)) + 1e-6)  # [T+2], frames s-1 .. s+T
        mel_e = np.log(np.exp(w["audio"].astype(np.float64)).sum(1))           # [T]
        corr = {}
        for lag in (-1, 0, 1):
            ref = log_e[1 + lag:1 + lag + T]
            ok = np.isfinite(ref) & (ref > np.nanmax(log_e) - 8.0)
            corr[lag] = np.corrcoef(mel_e[ok], ref[ok])[0, 1]
        assert corr[0] > 0.99, (w["file_id"], s, corr)
        assert corr[0] > max(corr[-1], corr[1]) + 0.03, (w["file_id"], s, corr)
        checked += 1
    assert checked >= 5
    # mirrored windows carry their plain twin's audio
    plain = {(w["file_id"], w["start_frame"]): w["audio"] for w in windows if not w["mirrored"]}
    for w in windows:
        if w["mirrored"]:
            np.testing.assert_array_equal(w["audio"], plain[(w["file_id"], w["start_frame"])])


def test_random_crops_cut_motion_and_audio_at_the_same_offset(prepared):
    """A Grain random crop of a prepared window is frames [o, o + L) of its motion *and* audio.

    The crop does not say which window or offset it came from; its motion does (the motion
    features of a file are computed once and windows copy them): find every (window, offset)
    whose motion equals the crop's, then the crop's audio must be that window's audio at the
    same offset.
    """
    cfg, m, _, windows = prepared
    cfg = copy.deepcopy(cfg)            # the module's config stays uncropped
    with cfg.unlocked():
        cfg.data.random_crop_s = 1.5
    L = 30
    train = [w for w in windows if w["split"] == "train"]
    it = pipeline.make_iterator(cfg, "train", batch_size=len(train), seed=3, process_index=0,
                                process_count=1)
    batch = next(it)
    assert batch["motion"].shape[1] == batch["audio"].shape[1] == L
    offsets = set()
    for mo, au in zip(batch["motion"], batch["audio"]):          # [L, F], [L, A]
        hits = [(w, o) for w in train for o in range(m["window_frames"] - L + 1)
                if np.array_equal(w["motion"][o:o + L], mo)]
        assert hits, "a crop whose motion is in no window"
        for w, o in hits:
            np.testing.assert_array_equal(au, w["audio"][o:o + L].astype(np.float32))
            offsets.add(o)
    assert len(offsets) > 3  # crops start at various offsets, not only at 0
