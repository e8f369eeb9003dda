"""MFCC (+ prosody) features of Kucherenko et al. 2019 and their context windows.

Parity is checked against `python_speech_features` 0.6 (a test-only dependency) with
the reference's call, on real speech from ../shared/data and on signals made here.
Tolerance: max |ours - library| <= 1e-4 absolute AND <= 1e-4 relative to max(|library|, 1)
(both are float64 implementations of the same arithmetic; the measured gap is ~1e-12).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from configs.base import get_base_config
from gesture_jax.audio import features as features_mod
from gesture_jax.audio.context import context_windows, silence_frame
from gesture_jax.audio.features import make_extractor
from gesture_jax.audio.mfcc import LOG_FLOOR, MFCCExtractor, mel_filterbank, mfcc, to_model_rate
from tests.conftest import SHARED_DATA

psf = pytest.importorskip("python_speech_features", reason="python_speech_features==0.6 (requirements-dev.txt) "
                          "is the MFCC reference these tests compare against")

TOL = 1e-4
INT16_FULL_SCALE = 32768.0  # what scipy's int16 samples are in units of a [-1, 1] float waveform


def _reference(signal: np.ndarray, sr: int) -> np.ndarray:
    """The reference's call (data_processing/tools.py calculate_mfcc)."""
    return psf.mfcc(signal, winlen=0.02, winstep=0.01, samplerate=sr, numcep=26)


def _reference_average(x: np.ndarray, n: int) -> np.ndarray:
    """The reference's `average`: mean of non-overlapping groups of n, the remainder dropped."""
    end = n * (len(x) // n)
    return x[:end].reshape(-1, n, x.shape[1]).mean(axis=1)


def _assert_close(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    rel = diff / np.maximum(np.abs(ref), 1.0)
    assert diff.max() <= TOL, f"max abs difference {diff.max():.3g}"
    assert rel.max() <= TOL, f"max relative difference {rel.max():.3g}"
    return float(diff.max()), float(rel.max())


def _speechlike(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """int16-scaled float64 test signal: a gliding harmonic tone, noise bursts and a stretch
    of digital silence (which exercises the library's eps floors)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    x += 0.2 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
    x[int(0.3 * t.size):int(0.4 * t.size)] = 0.0
    return np.round(x / np.abs(x).max() * 20000)


# ---- MFCC vs python_speech_features --------------------------------------------------------------

@pytest.mark.parametrize("sr", [16000, 44100])
def test_mfcc_matches_library_on_synthetic_signal(sr):
    """16 kHz (frames zero-padded to nfft) and 44.1 kHz, the reference's rate (882-sample
    frames truncated to nfft 512)."""
    x = _speechlike(sr, 1.7)
    ours, ref = mfcc(x, sr), _reference(x, sr)
    _assert_close(ours, ref)
    # without the energy replacement c0 is the DCT's own (log-filterbank) coefficient
    _assert_close(mfcc(x, sr, append_energy=False),
                  psf.mfcc(x, winlen=0.02, winstep=0.01, samplerate=sr, numcep=26, appendEnergy=False))
    # a signal shorter than one frame is one zero-padded frame
    _assert_close(mfcc(x[:100], sr), _reference(x[:100], sr))


def test_mel_filterbank_matches_library():
    from python_speech_features.base import get_filterbanks

    for sr in (8000, 16000, 44100, 48000):
        np.testing.assert_array_equal(mel_filterbank(26, 512, sr), get_filterbanks(26, 512, sr))


def test_mfcc_matches_library_on_real_speech():
    wavs = sorted(SHARED_DATA.rglob("*.wav"), key=lambda p: p.stat().st_size) if SHARED_DATA.is_dir() else []
    if not wavs:
        pytest.skip(f"no WAV under {SHARED_DATA} (../shared/data is not beside this checkout)")
    import scipy.io.wavfile

    sr, audio = scipy.io.wavfile.read(wavs[0])       # the reference's loader: int16 samples
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    ours, ref = mfcc(audio, sr), _reference(audio, sr)
    err = _assert_close(ours, ref)
    print(f"{wavs[0].name}: {ref.shape[0]} frames, max abs {err[0]:.3g}, max rel {err[1]:.3g}")

    # The extractor on the float waveform (as load_audio gives it) = the reference's
    # 5-frame average of the library's MFCCs of the int16 samples.
    if sr == 16000:
        wave = (np.asarray(audio, np.float64) / INT16_FULL_SCALE).astype(np.float32)
        got = MFCCExtractor(fps=20.0)(wave)
        want = _reference_average(ref, 5)
        assert got.shape == (math.floor(wave.shape[0] * 20 / 16000), 26)
        n = min(len(got), len(want))
        err = _assert_close(got[:n].astype(np.float64), want[:n])
        print(f"extractor vs library + 5-frame average (float32 output): max abs {err[0]:.3g}")


# ---- rate change and the extractor contract ----------------------------------------------------

@pytest.mark.parametrize("num_samples", [16000, 16159, 16160, 16799, 16800, 17000, 23456])
def test_group_average_and_frame_count(num_samples):
    """20 fps: exactly floor(S*20/16000) frames, frame k = mean of native frames 5k..5k+4; a
    last group past the native frames repeats the last one (edge padding)."""
    wave = (_speechlike(16000, 1.5, seed=num_samples)[:num_samples] / INT16_FULL_SCALE).astype(np.float32)
    wave = np.pad(wave, (0, max(0, num_samples - wave.size)))
    native = mfcc(wave.astype(np.float64) * INT16_FULL_SCALE, 16000)              # [L, 26]
    got = MFCCExtractor(fps=20.0)(wave)
    n = num_samples * 20 // 16000
    assert got.shape == (n, 26) and got.dtype == np.float32
    padded = np.concatenate([native, np.repeat(native[-1:], max(0, 5 * n - len(native)), axis=0)])
    want = padded[:5 * n].reshape(n, 5, 26).mean(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("fps", [15.0, 20.0, 25.0, 30.0, 24.0])
def test_frame_count_at_other_rates(fps):
    wave = np.random.default_rng(1).standard_normal(24011).astype(np.float32) * 0.1
    assert MFCCExtractor(fps=fps)(wave).shape == (math.floor(24011 * fps / 16000), 26)


def test_fractional_rate_is_the_box_average():
    """100 Hz -> 30 fps (10/3 frames per model frame): partial frames weighted by overlap,
    which equals the integer group average of the sequence held 3x longer at 300 Hz."""
    x = np.random.default_rng(2).standard_normal((97, 3))
    got = to_model_rate(x, 100.0, 30.0, 29)
    want = to_model_rate(np.repeat(x, 3, axis=0), 300.0, 30.0, 29)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(to_model_rate(np.ones((10, 2)) * 4.0, 100.0, 30.0, 5), 4.0)


# ---- configuration, command line ---------------------------------------------------------------

def _audio_cfg(**kw):
    cfg = get_base_config()
    cfg.audio.feature = "mfcc"
    for k, v in kw.items():
        setattr(cfg.audio, k, v)
    return cfg.audio


def test_make_extractor_mfcc():
    ext = make_extractor(_audio_cfg(), 20.0)
    assert (ext.name, ext.dim, ext.fps) == ("mfcc", 26, 20.0)
    wave = np.random.default_rng(3).standard_normal(16000 * 2).astype(np.float32) * 0.1
    np.testing.assert_array_equal(ext(wave), MFCCExtractor(fps=20.0)(wave))
    assert make_extractor(_audio_cfg(mfcc_numcep=13), 20.0)(wave).shape == (40, 13)
    try:
        import parselmouth  # noqa: F401
        assert make_extractor(_audio_cfg(prosody=True), 20.0).dim == 30
    except ImportError:
        pass  # test_prosody_without_parselmouth_names_the_package covers this case
    with pytest.raises(ValueError, match="numcep must be in"):
        make_extractor(_audio_cfg(mfcc_numcep=40), 20.0)
    with pytest.raises(ValueError, match="'wavlm', 'mel' or 'mfcc'"):
        make_extractor(_audio_cfg(feature="mfc"), 20.0)


def test_manifest_rejects_other_mfcc_width(tmp_path):
    """A dataset prepared with other MFCC settings (or prosody on/off) fails in one line."""
    from gesture_jax.data import manifest as manifest_lib

    cfg = get_base_config()
    cfg.audio.feature = "mfcc"
    m = manifest_lib.new_manifest(cfg, feature_names=["a"], audio_feature="mfcc", audio_dim=26, splits={},
                                  skipped=[], source_root="src")
    manifest_lib.validate_against_config(m, cfg, tmp_path)
    cfg.audio.prosody = True
    with pytest.raises(manifest_lib.ManifestError, match=r"audio feature dim .* 26 .* 30"):
        manifest_lib.validate_against_config(m, cfg, tmp_path)
    m["audio"]["feature"] = "wavlm"
    with pytest.raises(manifest_lib.ManifestError, match="audio feature is 'wavlm'.*'mfcc'"):
        manifest_lib.validate_against_config(m, cfg, tmp_path)


def test_cli_writes_mfcc_npy(tmp_path, capsys):
    wav, out = tmp_path / "talk.wav", tmp_path / "feats" / "talk.npy"
    sf.write(wav, (_speechlike(16000, 1.6) / INT16_FULL_SCALE).astype(np.float32), 16000, subtype="PCM_16")
    assert features_mod.main(["--audio", str(wav), "--out", str(out), "--mfcc"]) == 0
    feats = np.load(out)
    from gesture_jax.audio.io import load_audio

    np.testing.assert_array_equal(feats, MFCCExtractor(fps=20.0)(load_audio(wav)))
    assert feats.shape == (32, 26) and feats.dtype == np.float32
    assert "MFCC (26 coefficients)" in capsys.readouterr().out
    assert features_mod.main(["--audio", str(wav), "--out", str(out), "--prosody"]) == 2
    assert "--prosody applies to MFCC features only" in capsys.readouterr().err


# ---- silence vector and context windows ----------------------------------------------------------

def test_silence_frame_is_no_energy():
    s = silence_frame(MFCCExtractor(fps=20.0))
    assert s.shape == (26,) and s.dtype == np.float32
    np.testing.assert_allclose(s, np.r_[np.log(LOG_FLOOR), np.zeros(25)], atol=1e-6)


@pytest.mark.parametrize("T", [50, 5, 0])
def test_context_windows(T):
    rng = np.random.default_rng(T)
    feats = rng.standard_normal((T, 4)).astype(np.float32)
    pad = np.array([-36.0, 1.0, 2.0, 3.0], np.float32)
    win = context_windows(feats, context=30, pad=pad)
    assert win.shape == (T, 61, 4) and win.dtype == np.float32
    for t in range(T):
        np.testing.assert_array_equal(win[t, 30], feats[t])              # centre = frame t
        for o in (-30, -7, -1, 1, 13, 30):
            want = feats[t + o] if 0 <= t + o < T else pad
            np.testing.assert_array_equal(win[t, 30 + o], want)
    if T:
        np.testing.assert_array_equal(win[0, :30], np.broadcast_to(pad, (30, 4)))   # silence before the start
        np.testing.assert_array_equal(win[-1, 31:], np.broadcast_to(pad, (30, 4)))  # ... and after the end
    with pytest.raises(ValueError, match="silence pad has shape"):
        context_windows(feats, pad=np.zeros(3, np.float32))


# ---- prosody (Praat through parselmouth) -------------------------------------------------------------

def _reference_prosody(wave: np.ndarray, sr: int) -> np.ndarray:
    """The reference's compute_prosody + derivative + average(., 10), written out loop by loop."""
    import parselmouth as pm

    snd = pm.Sound(wave.astype(np.float64), sampling_frequency=sr)
    step = 0.005
    pitch, intensity = snd.to_pitch(time_step=step), snd.to_intensity(time_step=step)
    times = np.arange(0, snd.get_total_duration() - step, step)
    p = np.nan_to_num(np.asarray([pitch.get_value_at_time(t) for t in times]))
    i = np.nan_to_num(np.asarray([intensity.get_value(t) for t in times]))
    i = np.clip(i, np.finfo(i.dtype).eps, None)
    pitch_n = np.clip(np.log(p + 1) - 4, 0, None)
    energy_n = np.clip(np.log(i) - 3, 0, None)

    def derivative(f):
        der = (np.convolve(f, [1, -1]) / 5.0)[:-1].copy()
        der[0] = 0
        return der

    cols = [energy_n, derivative(energy_n), pitch_n, derivative(pitch_n)]
    return np.stack([_reference_average(c[:, None], 10)[:, 0] for c in cols], axis=1)


def test_prosody_matches_praat_recipe():
    pytest.importorskip("parselmouth", reason="praat-parselmouth==0.4.7 (requirements.txt) is needed for prosody")
    sr = 16000
    t = np.arange(int(2.0 * sr)) / sr
    voiced = (t >= 0.5) & (t < 1.7)
    wave = (0.1 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 5)) * voiced).astype(np.float32)
    ext = MFCCExtractor(fps=20.0, prosody=True)
    assert ext.dim == 30
    got = ext(wave)
    assert got.shape == (40, 30)
    ref = _reference_prosody(wave, sr)
    n = min(len(ref), len(got))
    assert n >= len(got) - 1
    np.testing.assert_allclose(got[:n, 26:], ref[:n], atol=1e-5)
    np.testing.assert_array_equal(got[:, :26], MFCCExtractor(fps=20.0)(wave))   # MFCC first, prosody after
    # a 150 Hz voice: pitch' = ln(151) - 4 inside the voiced stretch, 0 in the silence before it
    assert abs(np.median(got[14:32, 28]) - (math.log(151) - 4)) < 0.01
    assert np.all(got[:8, 28] == 0) and np.all(got[:8, 26] == 0)
    assert np.all(got[12:32, 26] > 0)                                            # energy' while speaking
    # the silence vector: MFCC of silence, prosody zeros (the reference pads prosody with zeros)
    np.testing.assert_array_equal(silence_frame(ext)[26:], 0.0)


def test_prosody_without_parselmouth_names_the_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_parselmouth(name, *a, **kw):
        if name == "parselmouth":
            raise ImportError("No module named 'parselmouth'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_parselmouth)
    with pytest.raises(ImportError, match="praat-parselmouth"):
        make_extractor(_audio_cfg(prosody=True), 20.0)
