"""Audio features: frame alignment (window of N s <-> fps*N frames, frame k <-> k/fps),
chunked WavLM extraction of a long file == unchunked, make_extractor, the features CLI."""
import numpy as np
import pytest
import soundfile as sf

from configs.base import get_base_config
from gesture_jax.audio import features
from gesture_jax.audio.features import WavLMExtractor, make_extractor
from gesture_jax.audio.frames import blend_weights, num_model_frames, plan_chunks, resample_frames
from gesture_jax.audio.mel import MelExtractor
from gesture_jax.audio.wavlm.checkpoint import save_checkpoint
from wavlm_testlib import random_flax_model, speech, tiny_config

SR = 16000


def burst_at(seconds: float, total_s: float) -> np.ndarray:
    """Silence with a 20 ms noise burst centred at `seconds`."""
    wave = np.zeros(int(total_s * SR), np.float32)
    c = int(seconds * SR)
    wave[c - 160:c + 160] = np.random.default_rng(0).standard_normal(320).astype(np.float32)
    return wave


@pytest.mark.parametrize("fps", [20.0, 30.0])
def test_mel_frame_count_and_alignment(fps):
    mel = MelExtractor(n_mels=80, fps=fps)
    assert mel.name == "mel" and mel.dim == 80
    assert mel(np.zeros(20 * SR, np.float32)).shape == (int(20 * fps), 80)  # window of N s <-> fps*N frames
    assert mel(np.zeros(int(3.33 * SR), np.float32)).shape[0] == int(np.floor(3.33 * fps))
    feats = mel(burst_at(5.0, 10.0))
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert int(np.argmax(feats.sum(axis=1))) == int(5.0 * fps)  # frame k <-> time k/fps


def test_resample_frames_puts_frame_k_at_time_k_over_fps():
    hop, rf = 320, 400
    samples = 7 * SR + 123
    length = (samples - rf) // hop + 1
    centres = ((np.arange(length) * hop + rf / 2) / SR)[:, None].astype(np.float32)  # feature = its own time
    out = resample_frames(centres, samples, 20.0, hop=hop, receptive_field=rf, sr=SR)
    assert out.shape == (num_model_frames(samples, 20.0, SR), 1) == (140, 1)
    want = np.clip(np.arange(140) / 20.0, centres[0, 0], centres[-1, 0])
    np.testing.assert_allclose(out[:, 0], want, atol=1e-6)


def test_chunk_plan_and_blend_weights_cover_every_frame_smoothly():
    starts = plan_chunks(3499, 1500, 250)
    assert starts == [0, 1250, 1999]
    w = blend_weights(starts, 1500, 3499, margin=62)
    total = np.zeros(3499)
    for s, wc in zip(starts, w):
        total[s:s + 1500] += wc
    assert (total > 0).all()
    assert w[0][0] > 0 and w[-1][-1] > 0          # file ends: no penalty
    assert w[1][:62].max() == 0 and w[0][-62:].max() == 0  # interior chunk edges: weight 0
    assert plan_chunks(800, 1500, 250) == [0]
    with pytest.raises(ValueError):
        plan_chunks(5000, 100, 100)


@pytest.fixture(scope="module")
def local_ckpt(tmp_path_factory):
    """A small random Base+-style (GroupNorm, post-norm) WavLM with local attention, on disk."""
    cfg = tiny_config(num_hidden_layers=2)
    model = random_flax_model(cfg, seed=0, attention_reach=16)
    from flax import nnx

    d = tmp_path_factory.mktemp("wavlm_local")
    save_checkpoint(d, cfg, nnx.to_pure_dict(nnx.state(model)), source={"kind": "test"})
    return d


def test_chunked_70s_equals_unchunked(local_ckpt):
    """Chunks (30 s, 5 s overlap, batched) blended == the whole 70 s file encoded at once.

    GroupNorm statistics are the whole file's in both, and this model's context is finite
    (16-frame attention reach, 16-tap positional conv), so chunk borders are the only
    difference: the blend must hide them completely.
    """
    wave = speech(70.0, offset_s=0.0)
    whole = WavLMExtractor.from_checkpoint(local_ckpt, layer=2, chunk_s=0)
    chunked = WavLMExtractor.from_checkpoint(local_ckpt, layer=2, chunk_s=30.0, overlap_s=5.0, batch_chunks=2)
    a, b = whole.native(wave), chunked.native(wave)
    assert a.shape == b.shape == (3499, 32)
    ends = 100  # frames at each file end (2 s) excluded from the comparison the brief asks for
    assert np.abs(a - b)[ends:-ends].max() < 1e-3
    assert np.abs(a - b).max() < 1e-3  # in fact the ends agree too: chunks touching them see the same edge
    a20, b20 = resample_frames(a, wave.size, 20.0, hop=320, receptive_field=400, sr=SR), chunked(wave)
    assert b20.shape == (1400, 32)
    assert np.abs(a20 - b20).max() < 1e-3


def test_padded_and_masked_short_clip_equals_exact_length_forward(local_ckpt):
    """A 3.3 s clip is zero-padded to the 5 s length bucket and the padding masked; its
    features equal the model run on the exact clip (GroupNorm over the clip itself)."""
    from gesture_jax.audio.wavlm.checkpoint import load_checkpoint
    from gesture_jax.audio.wavlm.model import jitted_forward

    model = load_checkpoint(local_ckpt)
    wave = speech(3.3)
    ext = WavLMExtractor(model, layer=2, length_bucket_s=5.0)
    got = ext.native(wave)
    want = np.asarray(jitted_forward(model, output_hidden_states=True, num_layers=2)(wave[None]).hidden_states[2][0])
    assert got.shape == want.shape == (164, 32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_make_extractor_wavlm_and_mel(local_ckpt, tmp_path):
    c = get_base_config()
    c.audio.feature = "mel"
    mel = make_extractor(c.audio, 20)
    assert (mel.name, mel.dim) == ("mel", 80)

    c.audio.feature = "wavlm"
    c.audio.wavlm_dir = str(local_ckpt)
    c.audio.layer = 1
    ext = make_extractor(c.audio, 20)  # audio.native_rate (base config): WavLM's own 50 Hz frames
    assert (ext.name, ext.dim, ext.fps, ext.rate) == ("wavlm", 32, 20.0, 50.0)
    wave = speech(3.0)
    feats = ext(wave)
    assert feats.shape == (149, 32) and feats.dtype == np.float32 and np.isfinite(feats).all()
    np.testing.assert_array_equal(feats, ext.native(wave))
    c.audio.native_rate = False  # resampled to the motion rate
    ext = make_extractor(c.audio, 20)
    assert (ext.fps, ext.rate) == (20.0, 20.0)
    feats = ext(wave)
    assert feats.shape == (60, 32) and feats.dtype == np.float32 and np.isfinite(feats).all()

    c.audio.wavlm_dir = ""
    with pytest.raises(ValueError, match="wavlm_dir"):
        make_extractor(c.audio, 20)
    c.audio.feature = "spectrogram"
    with pytest.raises(ValueError, match="unknown audio.feature"):
        make_extractor(c.audio, 20)


def test_whole_clip_normalization_makes_features_gain_invariant(tmp_path):
    cfg = tiny_config(num_hidden_layers=1, feat_extract_norm="layer", do_stable_layer_norm=True,
                      normalize_waveform=True)
    ext = WavLMExtractor(random_flax_model(cfg, seed=1), layer=1)
    assert ext.normalize
    wave = speech(3.0)
    wave = wave / wave.std()  # unit variance: the 1e-5 epsilon is negligible at both gains
    np.testing.assert_allclose(ext(wave), ext(4.0 * wave + 0.01), atol=1e-4)


def test_cli_writes_features_and_reports_errors(local_ckpt, tmp_path, capsys):
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech(3.0), SR)

    out = tmp_path / "mel.npy"
    assert features.main([f"--audio={wav}", f"--out={out}", "--mel"]) == 0
    assert np.load(out).shape == (60, 80) and np.load(out).dtype == np.float32

    out = tmp_path / "wavlm.npy"
    assert features.main([f"--audio={wav}", f"--out={out}", f"--wavlm={local_ckpt}", "--layer=1",
                          "--no_progress"]) == 0
    assert np.load(out).shape == (60, 32)
    out = tmp_path / "native.npy"
    assert features.main([f"--audio={wav}", f"--out={out}", f"--wavlm={local_ckpt}", "--layer=1",
                          "--native_rate"]) == 0
    assert np.load(out).shape == (149, 32)  # (48000 - 400) // 320 + 1 encoder frames
    assert "50 frames/s" in capsys.readouterr().out

    cases = [
        ([f"--audio={tmp_path / 'missing.wav'}", f"--out={out}", "--mel"], "missing.wav: no such audio file"),
        ([f"--audio={wav}", f"--out={out}", "--mel", "--native_rate"], "--native_rate applies to WavLM"),
        ([f"--audio={wav}", f"--out={out}", f"--wavlm={tmp_path}"], "no config.json"),
        ([f"--audio={wav}", f"--out={out}", f"--wavlm={local_ckpt}", "--layer=7"], "layer must be in [0, 2]"),
        ([f"--audio={wav}", f"--out={tmp_path / 'x.txt'}", "--mel"], "must end in .npy"),
    ]
    for argv, msg in cases:
        assert features.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and "Traceback" not in err

    with pytest.raises(SystemExit) as e:
        features.main(["--help"])
    assert e.value.code == 0
    assert "--native_rate" in capsys.readouterr().out
