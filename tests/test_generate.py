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
from gesture_jax.sampling import windowed as W

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
    """Guidance without an unconditional branch is refused; generation with guidance is
    test_guidance_in_generation_mixes_the_models_two_outputs."""
    with pytest.raises(G.GenerateError, match="cond_dropout"):
        G.generate_motion(bundle, _wave(1.5), guidance=2.0)
    assert G.resolve_options(_with_cond_dropout(bundle), G.SamplingOptions(guidance=2.0))["guidance"] == 2.0


def _with_cond_dropout(bundle):
    """The bundle as if trained with conditioning dropout (the random-weight model has a null embedding)."""
    import copy

    cfg = copy.deepcopy(bundle.config)
    with cfg.unlocked():
        cfg.train.cond_dropout = 0.1
    return types.SimpleNamespace(**{**vars(bundle), "config": cfg})


def test_guidance_in_generation_mixes_the_models_two_outputs(bundle):
    """The jitted loop generate runs (build_sampling_fn), DDPM over all 20 steps on two fused
    windows, against a reference loop whose network output is out_u + w (out_c - out_u), with
    out_c the model's output under the audio condition and out_u under the null condition, each
    from its own model call: guidance 2 matches it, guidance 1 (where generate skips the
    unconditional branch) matches w = 1, and a reference with the two branches swapped is far
    from generation."""
    import jax
    import jax.numpy as jnp

    from gesture_jax.models.diffusion import make_schedule
    from gesture_jax.sampling import long_audio as L
    from gesture_jax.sampling import samplers as S

    b = _with_cond_dropout(bundle)
    m = b.model
    feats, _ = G.audio_features(b, _wave(5.0))  # 100 frames: 2 windows of 80
    r = G.resolve_options(b, G.SamplingOptions(sampler="ddpm"))
    plan = L.plan_windows([feats.shape[0]], r["window"], r["overlap"])
    audio_w = jnp.asarray(L.gather_windows([feats], plan, r["window"]))  # [2, 80, A]
    key = jax.random.key(7)
    cond = m.condition(audio_w, deterministic=True)  # [2, 80, D]
    null = m.null_condition(*cond.shape[:2])  # [2, 80, D]
    ab = np.asarray(make_schedule(b.config.diffusion).alphas_cumprod, np.float64)
    coeffs = S.sampler_coefficients(ab, "ddpm", r["steps"], eta=r["eta"])

    @jax.jit
    def reference(w: jax.Array, swap: jax.Array) -> jax.Array:  # one compilation for every (w, swap)
        def out(x, t):  # x [2, 80, F] -> [2, 80, F]
            tt = jnp.full((x.shape[0],), t, jnp.int32)
            oc = m.denoise(x, tt, cond, deterministic=True)
            ou = m.denoise(x, tt, null, deterministic=True)
            oc, ou = jnp.where(swap, ou, oc), jnp.where(swap, oc, ou)
            return ou + w * (oc - ou)

        x0 = S.model_x0_fn(out, ab, r["prediction"], clip=r["clip_x0"] or None)
        k_init, k_loop = jax.random.split(key)
        x_T = jax.random.normal(k_init, (plan.total, m.motion_dim), jnp.float32)
        return S.sample_loop(L.fused_x0_fn(x0, plan), coeffs, x_T, k_loop)

    def generated(w: float) -> np.ndarray:
        fn, state, _, co = W.build_sampling_fn(b, plan, G.SamplingOptions(sampler="ddpm", guidance=w))
        np.testing.assert_array_equal(co.ts, coeffs.ts)
        return np.asarray(fn(state, audio_w, key))

    g1, g2 = generated(1.0), generated(2.0)
    r1, r2, r2_swapped = (np.asarray(reference(jnp.float32(w), jnp.bool_(sw))) for w, sw in
                          ((1.0, False), (2.0, False), (2.0, True)))
    np.testing.assert_allclose(g1, r1, atol=5e-5)  # measured: 2e-6 (batched vs separate model calls)
    np.testing.assert_allclose(g2, r2, atol=5e-5)
    assert np.abs(g2 - r2_swapped).max() > 1.0  # measured: 9
    assert np.abs(g2 - g1).max() > 1.0  # guidance changes the sample (measured: 4)


def test_long_audio_moves_window_borders_to_where_the_pre_pass_is_slowest(bundle):
    """6.5 s (130 frames) is 3 windows of 80 at the demo's 40-frame overlap, so the snap
    pre-pass runs (up to 6 s there are 2 windows and nothing can move). The borders returned
    by generate are the dynamic program's choice on the border cost (joint speed) of the
    pre-pass, a `snap_steps` DPM-Solver++ run with the same seed on the regular grid, and
    they differ from the regular grid's by at most the snap reach."""
    from gesture_jax.sampling import long_audio as L

    wave = _wave(6.5, seed=3)
    kw = dict(sampler="ddim", steps=2, seed=0, smooth_sigma=0.0)
    bvhs, borders = G.generate_motion(bundle, wave, return_borders=True, **kw)  # the config's snap_s = 0.5 s
    _, regular = G.generate_motion(bundle, wave, return_borders=True, snap_s=0.0, **kw)
    r = G.resolve_options(bundle, G.SamplingOptions())
    assert r["snap"] == 10 and r["overlap"] == 40 and r["snap_steps"] >= 1
    feats, n = G.audio_features(bundle, wave)
    assert n == 130 and bvhs[0][0].num_frames == n
    pre_opts = G.SamplingOptions(sampler="dpm-solver++", steps=r["snap_steps"], seed=0, snap_s=0.0, smooth_sigma=0.0)
    pre, _ = W.sample_timelines(bundle, [feats], pre_opts, progress=False)  # [130, F]
    cost = W.border_cost(bundle, pre)  # [130]
    assert cost.shape == (n,) and np.isfinite(cost).all() and (cost >= 0).all()
    want = L.plan_windows([n], r["window"], r["overlap"], cost=[cost], snap_frames=r["snap"]).border_frames(0)
    np.testing.assert_array_equal(regular[0][0], [40, 50, 80, 120])
    np.testing.assert_array_equal(borders[0][0], want)
    assert not np.array_equal(borders[0][0], regular[0][0])
    assert np.abs(np.sort(borders[0][0]) - regular[0][0]).max() <= L.snap_reach(r["overlap"], r["snap"])
    assert cost[borders[0][0]].sum() < 0.9 * cost[regular[0][0]].sum()  # measured: 0.80 (middle window -10)


def test_smooth_sigma_smooths_each_file_and_sample_on_its_own(bundle):
    """--smooth_sigma is a Gaussian over time of the sampled features, per timeline (no blur across files)."""
    feats = [G.audio_features(bundle, w)[0] for w in (_wave(4.5), _wave(6.0, seed=1))]
    kw = dict(sampler="dpm-solver++", steps=4, seed=1, num_samples=2)
    raw, plan = W.sample_timelines(bundle, feats, G.SamplingOptions(smooth_sigma=0.0, **kw), progress=False)
    smooth, _ = W.sample_timelines(bundle, feats, G.SamplingOptions(smooth_sigma=1.0, **kw), progress=False)
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
    assert G.resolve_options(b, G.SamplingOptions(sampler="dpm-solver++"))["steps"] == W.DEFAULT_STEPS["dpm-solver++"]
    assert G.resolve_options(b, G.SamplingOptions(sampler="ddim", steps=3))["steps"] == 3
