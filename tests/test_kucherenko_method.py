"""The Kucherenko 2019 method plug-in on the shared trainer: stages, their errors, batches, generation.

The training tests use the tiny prepared dataset of training_fixtures (T=16, F=6, A=5) with a
3-frame context, and stand in for the fitted positions pipeline with known statistics, so
both stages run in seconds; tests/test_kucherenko_e2e.py runs the real chain (synthetic BVH ->
positions + MFCC shards -> both stages from the command line -> BVH + MP4).
"""
import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import training_fixtures as tf
from gesture_jax.methods import MethodError, get_method
from gesture_jax.methods.kucherenko import method as ka_method
from gesture_jax.methods.kucherenko.losses import KANormalizer

C = 3  # context frames on each side (the reference: 30)


def _fake_pipeline(F: int):
    rng = np.random.default_rng(1)
    return SimpleNamespace(raw_mean=rng.normal(size=F), raw_std=rng.uniform(0.5, 2.0, F),
                           raw_max_abs=rng.uniform(3.0, 6.0, F))


def ka_config(data_out, *, use_autoencoder=True, ae_steps=4, speech_steps=4):
    from configs import kucherenko

    cfg = tf.tiny_config(data_out)
    with cfg.unlocked():
        if "representation" not in cfg.data:
            cfg.data.representation = "positions"
        kucherenko.apply(cfg, ae_steps=ae_steps, speech_steps=speech_steps, ae_windows=4, speech_windows=8)
        cfg.audio.feature = "mel"           # the tiny dataset's features (any kind feeds SpeechE)
        k = cfg.kucherenko
        k.context, k.width, k.code_dim = C, 8, 4
        k.use_autoencoder = use_autoencoder
        cfg.stages.autoencoder.frames_per_step, cfg.stages.speech.contexts_per_step = 32, 48
        for st in ("autoencoder", "speech"):
            cfg.stages[st].checkpoint_every = 2
            cfg.stages[st].log_every = 1
    return cfg


@pytest.fixture()
def ka_data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    tf.make_prepared(data)
    m = json.loads((data / "manifest.json").read_text())
    m["motion"]["representation"] = "positions"
    (data / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr(ka_method, "_pipeline", lambda d: _fake_pipeline(tf.F))
    return data


def _train(cfg, wd, stage):
    from gesture_jax.training.loop import train
    with cfg.unlocked():
        cfg.train.stage = stage
    return train(cfg, wd, progress=False)


def _losses(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [r["loss"] for r in rows if "loss" in r]


def test_both_stages_train_in_their_own_folders_and_speech_reads_the_frozen_autoencoder(ka_data, tmp_path):
    cfg, wd = ka_config(ka_data), tmp_path / "run"
    _train(cfg, wd, "autoencoder")
    ae_dir = wd / "stages" / "autoencoder"
    assert (ae_dir / "checkpoints" / "4").is_dir() and not (wd / "checkpoints").exists()
    info = json.loads((ae_dir / "model_info.json").read_text())
    assert info["method"] == "kucherenko" and info["stage"] == "autoencoder"
    assert info["param_count"] == 6 * 4 + 4 + 4 * 6 + 6   # F=6 -> code 4 -> F=6
    assert all(np.isfinite(_losses(ae_dir)))

    _train(cfg, wd, "speech")
    sp = wd / "stages" / "speech"
    assert (sp / "checkpoints" / "4").is_dir()
    assert json.loads((sp / "model_info.json").read_text())["stage"] == "speech"
    assert all(np.isfinite(_losses(sp)))
    # the stage's own optimizer settings (configs/kucherenko.py) reached the trainer
    stage_cfg = get_method("kucherenko").train_config(cfg, "speech")
    assert (stage_cfg.train.lr, stage_cfg.train.adam_eps, stage_cfg.train.clip_norm) == (1e-3, 1e-7, 0.0)
    assert get_method("kucherenko").train_config(cfg, "autoencoder").train.lr == 1e-4


def test_speech_stage_without_its_autoencoder_is_a_one_line_error(ka_data, tmp_path):
    from gesture_jax.training.loop import TrainConfigError
    with pytest.raises(TrainConfigError) as e:
        _train(ka_config(ka_data), tmp_path / "run", "speech")
    msg = str(e.value)
    assert "\n" not in msg and "autoencoder" in msg and "--config.train.stage=autoencoder" in msg, msg


def test_stage_choice_errors(ka_data, tmp_path):
    from gesture_jax.training.loop import TrainConfigError
    cfg = ka_config(ka_data)
    for stage, want in (("", "choose one with --config.train.stage"), ("decoder", "no stage 'decoder'")):
        with pytest.raises(TrainConfigError, match=want):
            _train(cfg, tmp_path / "run", stage)
    base = ka_config(ka_data, use_autoencoder=False)
    with pytest.raises(TrainConfigError, match="no 'autoencoder' stage"):
        _train(base, tmp_path / "run2", "autoencoder")


def test_unknown_method_is_a_one_line_error_with_the_closest_name(ka_data, tmp_path):
    from gesture_jax.training.loop import TrainConfigError
    cfg = ka_config(ka_data)
    with cfg.unlocked():
        cfg.method = "kucherenkoo"
    with pytest.raises(TrainConfigError) as e:
        _train(cfg, tmp_path / "run", "autoencoder")
    assert "\n" not in str(e.value) and "unknown method 'kucherenkoo'" in str(e.value)
    assert "Did you mean 'kucherenko'" in str(e.value)


def test_method_refuses_data_of_another_representation(ka_data, tmp_path):
    from gesture_jax.training.loop import TrainConfigError
    m = json.loads((ka_data / "manifest.json").read_text())
    del m["motion"]["representation"]          # expmap features (Persona-Gestor's)
    (ka_data / "manifest.json").write_text(json.dumps(m))
    cfg = ka_config(ka_data)
    with cfg.unlocked():
        cfg.data.representation = "expmap"
    with pytest.raises(TrainConfigError, match="representation 'positions'") as e:
        _train(cfg, tmp_path / "run", "autoencoder")
    assert "\n" not in str(e.value)


def test_baseline_variant_regresses_raw_frames_in_one_stage(ka_data, tmp_path):
    cfg, wd = ka_config(ka_data, use_autoencoder=False), tmp_path / "run"
    assert get_method("kucherenko").inference_stages(cfg) == ("speech",)
    _train(cfg, wd, "speech")
    info = json.loads((wd / "stages" / "speech" / "model_info.json").read_text())
    # SpeechE's output layer is the frame size (6), not the code size (4)
    from flax import nnx
    model = get_method("kucherenko").build_model(cfg, _dims(), "speech", nnx.Rngs(0))
    assert model.out.kernel[...].shape == (8, tf.F)
    assert info["param_count"] == sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert not (wd / "stages" / "autoencoder").exists()


def _dims():
    from gesture_jax.methods import DataDims
    return DataDims(motion_dim=tf.F, audio_dim=tf.A, window=tf.T, fps=20.0)


def test_draw_contexts_are_the_windows_around_each_centre():
    B, T, F, A = 3, 12, 2, 4
    z = jnp.arange(B * T * F, dtype=jnp.float32).reshape(B, T, F)
    a = jnp.arange(B * T * A, dtype=jnp.float32).reshape(B, T, A)
    x, frame = ka_method.draw_contexts(z, a, jax.random.key(0), 100, C)
    n = B * (T - 2 * C)
    assert x.shape == (n, 2 * C + 1, A) and frame.shape == (n, F)   # all centres, each once
    seen = set()
    for i in range(n):
        b, t = divmod(int(frame[i, 0]) // F, T)
        assert C <= t < T - C
        np.testing.assert_array_equal(np.asarray(x[i]), np.asarray(a[b, t - C:t + C + 1]))
        seen.add((b, t))
    assert len(seen) == n


def test_normalization_matches_the_reference_on_raw_frames():
    rng = np.random.default_rng(0)
    y = rng.normal(3.0, [1.0, 5.0, 0.2], size=(500, 3))                     # raw training frames
    pipe = SimpleNamespace(raw_mean=y.mean(0), raw_std=y.std(0), raw_max_abs=np.abs(y).max(0))
    norm = ka_method.Normalization.from_pipeline(pipe, "test", 0.05)
    ref = KANormalizer.fit(y)
    x_ref = ref.normalize(y)
    np.testing.assert_allclose(norm.noise_std, 0.05 * np.std(x_ref), rtol=1e-9)
    z = (y - y.mean(0)) / y.std(0)                                           # what the records hold
    np.testing.assert_allclose(np.asarray(norm.z_to_x(jnp.asarray(z, jnp.float32))), x_ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(norm.y_to_z(norm.z_to_y(jnp.asarray(z, jnp.float32)))), z, atol=1e-5)


def test_predict_file_pads_each_end_with_the_silence_frame():
    L, A = 9, 2
    feats = np.arange(L * A, dtype=np.float32).reshape(L, A) + 100
    silence = np.array([-1.0, -2.0], np.float32)
    first = ka_method.predict_file(lambda x: x[:, 0, :], feats, silence, C)   # frame t-C of each context
    centre = ka_method.predict_file(lambda x: x[:, C, :], feats, silence, C)
    last = ka_method.predict_file(lambda x: x[:, -1, :], feats, silence, C)
    np.testing.assert_array_equal(centre, feats)
    np.testing.assert_array_equal(first[:C], np.broadcast_to(silence, (C, A)))
    np.testing.assert_array_equal(first[C:], feats[:L - C])
    np.testing.assert_array_equal(last[L - C:], np.broadcast_to(silence, (C, A)))
    np.testing.assert_array_equal(last[:L - C], feats[C:])


def test_regression_rejects_sampler_options_in_one_line():
    from gesture_jax.sampling.options import GenerateError, SamplingOptions
    bundle = SimpleNamespace(config=ka_config(""))
    m = get_method("kucherenko")
    assert m.resolve_options(bundle, SamplingOptions())["steps"] == 1
    with pytest.raises(GenerateError, match="--sampler: kucherenko is a regression model") as e:
        m.resolve_options(bundle, SamplingOptions(sampler="ddim", steps=10))
    assert "\n" not in str(e.value)


def test_commands_for_several_methods_pass_a_regression_run_only_its_options():
    ka, pg = get_method("kucherenko"), get_method("persona_gestor")
    opts = dict(sampler="ddpm", steps=None, eta=None, guidance=2.0, smooth_sigma=0.5)
    assert ka.split_options(opts) == ({"smooth_sigma": 0.5}, ["sampler", "guidance"])
    assert pg.split_options(opts) == (opts, [])
