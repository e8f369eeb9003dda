"""Generation without a trained model: geometry, padding, frame counts, bad input (random weights).

The model is the demo-shaped denoiser with random weights and the motion pipeline is fitted on
two synthetic files, so these tests need no training run (tests/test_generate_trained.py covers
the trained-model properties: seams, sampler statistics, the CLI on a real workdir).
"""
import types
from pathlib import Path

import numpy as np
import pytest

from gesture_jax import generate as G

FPS = 20


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from flax import nnx

    from configs import demo
    from data_prep import synthetic
    from gesture_jax.audio.features import make_extractor
    from gesture_jax.models.denoiser import build_denoiser
    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.pipeline import MotionPipeline

    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.model.depth, cfg.model.dim, cfg.model.heads = 1, 32, 2
        cfg.diffusion.num_steps = 20
        cfg.sample.batch_windows = 4
    src = tmp_path_factory.mktemp("syn")
    synthetic.generate_file(src, "a", 1, 6.0)
    pipe = MotionPipeline.from_config(cfg.data).fit([read_bvh(src / "a.bvh")])
    ex = make_extractor(cfg.audio, FPS)
    window = int(cfg.data.window_s * FPS)
    model = build_denoiser(cfg.model, pipe.feature_dim, ex.dim, window, nnx.Rngs(0), fps=FPS)
    return types.SimpleNamespace(config=cfg, model=model, pipeline=pipe, step=0,
                                 manifest={"audio_feature": ex.name, "audio_dim": ex.dim}, src=src)


def _wave(seconds, sr=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_frame_counts_are_duration_times_fps_for_short_and_odd_lengths(bundle):
    waves = [_wave(1.0), _wave(5.37, seed=1)]  # 1 s is shorter than the 4 s model window
    bvhs = G.generate_motion(bundle, waves, sampler="dpm-solver++", steps=5, num_samples=2)
    assert [[b.num_frames for b in per] for per in bvhs] == [[20, 20], [107, 107]]
    assert bvhs[0][0].fps == pytest.approx(FPS)
    assert not np.allclose(bvhs[1][0].frames, bvhs[1][1].frames)  # two different samples


def test_seed_reproducible_and_batching_independent(bundle):
    w = _wave(4.5)
    a = G.generate_motion(bundle, w, sampler="ddim", steps=4, seed=3)[0][0].frames
    b = G.generate_motion(bundle, [w, _wave(2.0, seed=2)], sampler="ddim", steps=4, seed=3)[0][0].frames
    c = G.generate_motion(bundle, w, sampler="ddim", steps=4, seed=4)[0][0].frames
    np.testing.assert_array_equal(a, G.generate_motion(bundle, w, sampler="ddim", steps=4, seed=3)[0][0].frames)
    assert a.shape == b.shape and not np.allclose(a, c)


def test_70s_zeggs_audio_gives_exact_frames_and_a_bvh_that_parses(bundle, tmp_path):
    from conftest import shared_file
    from gesture_jax.audio.io import load_audio
    from gesture_jax.motion.bvh import read_bvh, write_bvh

    wav = shared_file("zeggs/067_Speech_2_x_1_0.wav")
    wave = load_audio(wav)
    bvh = G.generate_motion(bundle, wave, sampler="dpm-solver++", steps=3)[0][0]
    want = int(np.floor(wave.shape[0] * FPS / 16000))  # 68.83 s -> 1376 frames
    assert want == 1376 and bvh.num_frames == want
    write_bvh(tmp_path / "z.bvh", bvh)
    back = read_bvh(tmp_path / "z.bvh")
    assert back.num_frames == want and back.fps == pytest.approx(FPS)
    assert back.skeleton.names == bundle.pipeline.skeleton.names
    assert np.isfinite(back.frames).all()


def test_guidance_needs_a_model_trained_with_cond_dropout(bundle):
    with pytest.raises(G.GenerateError, match="cond_dropout"):
        G.generate_motion(bundle, _wave(1.5), guidance=2.0)
    with bundle.config.unlocked():
        bundle.config.train.cond_dropout = 0.1
    try:
        out = G.generate_motion(bundle, _wave(1.5), guidance=2.0, sampler="ddim", steps=3)
        assert out[0][0].num_frames == 30 and np.isfinite(out[0][0].frames).all()
    finally:
        with bundle.config.unlocked():
            bundle.config.train.cond_dropout = 0.0


def test_smooth_sigma_smooths_each_file_and_sample_on_its_own(bundle):
    """--smooth_sigma is a Gaussian over time of the sampled features, per timeline (no blur across files)."""
    feats = [G.audio_features(bundle, w)[0] for w in (_wave(4.5), _wave(6.0, seed=1))]
    kw = dict(sampler="dpm-solver++", steps=4, seed=1, num_samples=2)
    raw, plan = G.sample_timelines(bundle, feats, G.SamplingOptions(smooth_sigma=0.0, **kw), progress=False)
    smooth, _ = G.sample_timelines(bundle, feats, G.SamplingOptions(smooth_sigma=1.0, **kw), progress=False)
    from scipy.ndimage import gaussian_filter1d
    for r, s in zip(plan.split(raw), plan.split(smooth)):  # 4 timelines: 2 files x 2 samples
        np.testing.assert_allclose(s, gaussian_filter1d(r, 1.0, axis=0, mode="nearest"), atol=1e-5)
        assert np.abs(np.diff(s, 3, axis=0)).mean() < 0.5 * np.abs(np.diff(r, 3, axis=0)).mean()
    assert G.resolve_options(bundle, G.SamplingOptions())["smooth"] == bundle.config.sample.smooth_sigma
    with pytest.raises(G.GenerateError, match="smooth_sigma"):
        G.resolve_options(bundle, G.SamplingOptions(smooth_sigma=-1.0))


def test_bad_requests_are_clear(bundle):
    with pytest.raises(G.GenerateError, match="too short|at least 1.0 s"):
        G.generate_motion(bundle, _wave(0.3))
    with pytest.raises(G.GenerateError, match="steps"):
        G.generate_motion(bundle, _wave(1.5), sampler="ddim", steps=10_000)
    with pytest.raises(G.GenerateError, match="unknown sampler"):
        G.generate_motion(bundle, _wave(1.5), sampler="euler")
    with pytest.raises(G.GenerateError, match="mono"):
        G.generate_motion(bundle, np.zeros((2, 16000 * 2), np.float32))


def test_collect_audio_expands_folders_and_reports_missing(tmp_path):
    (tmp_path / "d").mkdir()
    for n in ("b.wav", "a.flac", "notes.txt", "a.bvh"):
        (tmp_path / "d" / n).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    files, bad = G.collect_audio([tmp_path / "d", tmp_path / "missing.wav", tmp_path / "empty"])
    assert [f.name for f in files] == ["a.flac", "b.wav"]
    assert len(bad) == 2 and "no such file" in bad[0][1] and "no audio files" in bad[1][1]


def test_workdir_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(G.GenerateError, match="no such directory"):
        G.load_bundle(tmp_path / "nope")
    (tmp_path / "run").mkdir()
    with pytest.raises(G.GenerateError, match="no checkpoint"):
        G.load_bundle(tmp_path / "run")
    assert G.main(["--workdir", str(tmp_path / "run"), "--audio", "x.wav", "--out", str(tmp_path / "o")]) == 2


def test_default_steps_follow_the_runs_sample_config(bundle):
    """No --steps: DDPM takes every training step, the run's own sampler its cfg.sample.steps,
    any other sampler the generator's default."""
    import copy

    cfg = copy.deepcopy(bundle.config)
    with cfg.unlocked():
        cfg.sample.sampler, cfg.sample.steps = "ddim", 7
    b = types.SimpleNamespace(**{**vars(bundle), "config": cfg})
    T = int(cfg.diffusion.num_steps)
    assert G.resolve_options(b, G.SamplingOptions(sampler="ddim"))["steps"] == 7
    assert G.resolve_options(b, G.SamplingOptions())["steps"] == 7
    assert G.resolve_options(b, G.SamplingOptions(sampler="ddpm"))["steps"] == T
    assert G.resolve_options(b, G.SamplingOptions(sampler="dpm-solver++"))["steps"] == G.DEFAULT_STEPS["dpm-solver++"]
    assert G.resolve_options(b, G.SamplingOptions(sampler="ddim", steps=3))["steps"] == 3
