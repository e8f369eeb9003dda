"""Generation from a trained demo model: no seams on 70 s audio, fast samplers vs DDPM, the CLI.

The trained model is the session fixture `demo_run` of tests/conftest.py: the real pipeline on a
small synthetic corpus (data_prep.synthetic -> data_prep.prepare -> gesture_jax.train: the demo
config with fewer, shorter files and fewer training steps), trained once per session and shared
with tests/test_streaming.py and tests/test_distill.py. The demo config has T=1000 diffusion
steps, so "DDPM" below is ancestral sampling over all 1000, as the reference samples. Set GESTURE_JAX_DEMO_RUN=runs/demo/run (a
workdir from `make demo`) to run the same tests on the full demo model instead:

    GESTURE_JAX_DEMO_RUN=runs/demo/run python -m pytest -q -m "slow or not slow" tests/test_generate_trained.py
"""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from gesture_jax.eval.kinematic import border_vs_elsewhere

LONG_CLIP = "zeggs/067_Speech_2_x_1_0.wav"  # 68.8 s of real speech, when ../shared/data is present


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """A WAV of about 70 s: the real ZEGGS clip when ../shared/data is present, otherwise a 70 s
    file of the synthetic corpus's voice (data_prep/synthetic.py, a seed no training file uses),
    so the seam test runs offline too."""
    real = SHARED_DATA / LONG_CLIP
    if real.is_file():
        return real
    from data_prep import synthetic

    out = tmp_path_factory.mktemp("long")
    synthetic.generate_file(out, "synthetic_070s", seed=70_000, duration_s=70.0)
    return out / "synthetic_070s.wav"


@pytest.fixture(scope="module")
def bundle(demo_run):
    from gesture_jax.generate import load_bundle
    return load_bundle(demo_run["workdir"])


def _positions(bvh):
    from gesture_jax.motion.kinematics import bvh_positions
    return bvh_positions(bvh)


SEAM_SAMPLES = 4


def test_70s_audio_has_no_seams_at_window_borders(bundle, long_clip):
    """The issue's criterion on 70 s of speech (real when ../shared/data is present, else
    synthetic: the `long_clip` fixture), pooled over 4 samples: the p99 joint speed at
    window borders is no higher than elsewhere. Three layouts of the same model and audio:
    fused windows with borders moved to slow frames (the default), fused windows on the
    regular grid (no jump: within the noise of the rest), disjoint windows (the reference's
    concatenation: 6-8x, so the check can see seams). Without the smoothing post-filter
    (sample.smooth_sigma, on in the demo config), so fusion and snapping are what is checked."""
    from gesture_jax import generate as G
    from gesture_jax.audio.io import load_audio

    wave = load_audio(long_clip)
    fps = float(bundle.config.data.fps)
    n = int(np.floor(wave.shape[0] * fps / 16000))
    overlap_s = float(bundle.config.sample.overlap_s)
    res = {}
    for name, ov, snap in (("snapped", overlap_s, 0.5), ("regular", overlap_s, 0.0), ("disjoint", 0.0, 0.0)):
        bvhs, borders = G.generate_motion(bundle, wave, sampler="dpm-solver++", steps=20, seed=0, overlap_s=ov,
                                          snap_s=snap, smooth_sigma=0.0, num_samples=SEAM_SAMPLES,
                                          return_borders=True)
        assert len(bvhs[0]) == SEAM_SAMPLES and all(b.num_frames == n for b in bvhs[0])
        res[name] = border_vs_elsewhere([_positions(b) for b in bvhs[0]], borders[0])
        print(f"{name}: p99 step at borders / elsewhere {res[name][0]:.3f} / {res[name][1]:.3f} = "
              f"{res[name][0] / res[name][1]:.3f} (rank {res[name][2]:.2f})")
    (b_snap, e_snap, _), (b_reg, e_reg, r_reg), (b_cut, e_cut, r_cut) = res["snapped"], res["regular"], res["disjoint"]
    assert b_cut > 1.5 * e_cut and r_cut == 1.0  # sanity: the measure detects the reference's seams
    assert b_reg < 0.6 * b_cut and b_reg <= 1.15 * e_reg  # fusion alone removes the jump ...
    assert b_snap <= e_snap  # ... and with snapped borders the strict criterion holds


def test_cli_folder_with_bad_files_generates_the_good_ones(demo_run, tmp_path):
    import soundfile as sf

    from gesture_jax import generate as G

    d = tmp_path / "in"
    d.mkdir()
    good = sorted(demo_run["src"].glob("demo_test_*.wav"))[0]
    wave, sr = sf.read(str(good), dtype="float32")
    stereo44 = np.stack([wave[: 3 * sr], wave[: 3 * sr]], axis=1)  # 3 s stereo at another rate
    import librosa
    sf.write(str(d / "stereo44k.wav"), librosa.resample(stereo44.T, orig_sr=sr, target_sr=44100).T, 44100)
    sf.write(str(d / "short.wav"), wave[: int(0.3 * sr)], sr)
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    out = tmp_path / "out"
    rc = G.main(["--workdir", str(demo_run["workdir"]), "--audio", str(d), "--out", str(out),
                 "--sampler", "dpm-solver++", "--steps", "5", "--video"])
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["stereo44k.bvh", "stereo44k.mp4"]
    from gesture_jax.motion.bvh import read_bvh
    assert read_bvh(out / "stereo44k.bvh").num_frames == 60


def test_cli_rejects_short_audio_with_a_clear_message(demo_run, tmp_path, capsys):
    import soundfile as sf

    from gesture_jax import generate as G

    sf.write(str(tmp_path / "tiny.wav"), np.zeros(4800, np.float32), 16000)
    rc = G.main(["--workdir", str(demo_run["workdir"]), "--audio", str(tmp_path / "tiny.wav"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "tiny.wav" in err and "too short" in err


@pytest.mark.slow
def test_fast_samplers_match_ddpm_statistics(bundle, demo_run):
    """DDIM-50 and DPM-Solver++-20 vs DDPM with every training step (1000 on the demo config):
    mean joint speed and beat consistency within 10%, averaged over 4 samples of 2 held-out clips.

    Slow (4000 DDPM model calls on the demo model). The same code runs fast elsewhere: the three
    samplers' update rules reach the data distribution of an exact denoiser
    (tests/test_samplers.py), and generate's jitted loop runs DDPM, DDIM and DPM-Solver++ on a
    random-weight model (tests/test_generate.py: guidance, seed, snapping, frame-count tests)."""
    from gesture_jax import generate as G
    from gesture_jax.audio.io import load_audio
    from gesture_jax.eval.beat import beat_consistency, beat_consistency_set, mean_joint_speed
    from gesture_jax.eval.joints import upper_body_joints
    from gesture_jax.motion.bvh import read_bvh

    wavs = sorted(demo_run["src"].glob("demo_test_*.wav"))[:2]
    waves = [load_audio(w) for w in wavs]
    fps = float(bundle.config.data.fps)
    real = [_positions(read_bvh(w.with_suffix(".bvh"))) for w in wavs]
    sk = read_bvh(wavs[0].with_suffix(".bvh")).skeleton
    upper = upper_body_joints(sk.names, sk.parents)
    T = int(bundle.config.diffusion.num_steps)
    stats = {}
    for name, steps in (("ddpm", T), ("ddim", 50), ("dpm-solver++", 20)):
        # eta = 1 (the configs' default): the deterministic eta = 0 variants move ~55% faster
        # than DDPM on the 1500-step demo model (see the report in sampling/samplers.py).
        bvhs = G.generate_motion(bundle, waves, sampler=name, steps=steps, eta=1.0, seed=1, num_samples=4)
        pos = [[_positions(b) for b in per] for per in bvhs]
        ms = mean_joint_speed(real, fps)
        speed = float(np.mean([mean_joint_speed([p], fps).mean() for per in pos for p in per]))
        bc = beat_consistency_set([beat_consistency(p, w, fps, ms, upper) for per, w in zip(pos, waves)
                                   for p in per])
        stats[name] = {"steps": steps, "mean_joint_speed": speed, "bc": bc}
    print(json.dumps(stats, indent=1))
    for name in ("ddim", "dpm-solver++"):
        for k in ("mean_joint_speed", "bc"):
            ref = stats["ddpm"][k]
            assert abs(stats[name][k] - ref) <= 0.10 * abs(ref), (name, k, stats)
