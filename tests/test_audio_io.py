"""gesture_jax.audio.io.load_audio: formats, downmix, resampling, and errors naming the file."""
import numpy as np
import pytest
import soundfile as sf

from conftest import shared_file
from gesture_jax.audio.io import AudioError, load_audio, prepare_waveform


def tone(seconds, sr, freq=220.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_real_wav_is_16k_mono_float32():
    path = shared_file("beat/2_scott_0_55_55.wav")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == 496_000  # 31.0 s at 16 kHz (README of ../shared/data)
    assert 0 < np.abs(wave).max() <= 1.0


def test_stereo_44k_flac_is_downmixed_and_resampled(tmp_path):
    left, right = tone(2.0, 44100, 220.0), tone(2.0, 44100, 330.0)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    wave = load_audio(path)
    assert wave.shape == (32000,) and wave.dtype == np.float32
    ref = (tone(2.0, 16000, 220.0) + tone(2.0, 16000, 330.0)) / 2
    # Resampling error is small away from the edges; the downmix is the channel average.
    assert np.abs(wave[1000:-1000] - ref[1000:-1000]).max() < 2e-2


def _dominant_frequency(wave: np.ndarray, sr: int) -> tuple[float, float]:
    """(peak frequency in Hz, fraction of the signal's energy within 5 Hz of it) of `wave`.

    Hann window, zero-padded to 0.1 Hz bins; parabolic interpolation of the log-magnitude peak."""
    w = wave * np.hanning(len(wave))
    n = int(sr / 0.1)
    spec = np.abs(np.fft.rfft(w, n)) ** 2
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-30)
    peak = (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    return float(peak), float(spec[np.abs(freqs - peak) <= 5.0].sum() / spec.sum())


def test_mp3_decodes_to_the_tone_it_encodes(tmp_path):
    """An MP3 of a 440 Hz sine (amplitude 0.5) at 44.1 kHz loads as that sine at 16 kHz:
    same duration (within the encoder's padding), frequency within 0.5 Hz, amplitude within 5 %."""
    path = tmp_path / "tone.mp3"
    sr_file, seconds, freq, amp = 44100, 1.5, 440.0, 0.5
    try:
        sf.write(path, (amp / 0.3) * tone(seconds, sr_file, freq), sr_file, format="MP3")
    except Exception as e:  # libsndfile built without MPEG support
        pytest.skip(f"this libsndfile cannot write MP3 ({e})")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.shape[0] - seconds * 16000) < 2000  # encoder delay / padding: ~1-2 MP3 frames
    mid = wave[4000:-4000]  # away from the encoder's fade-in and padding
    peak, share = _dominant_frequency(mid, 16000)
    assert peak == pytest.approx(freq, abs=0.5)
    assert share > 0.99  # a clean tone, not a mixture (aliasing or a wrong-rate read would smear it)
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(amp / np.sqrt(2), rel=0.05)


def test_silence_is_valid(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(24000, np.float32), 16000)
    wave = load_audio(path)
    assert wave.shape == (24000,) and not wave.any()


def test_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_audio(empty)

    short = tmp_path / "short.wav"
    sf.write(short, tone(0.5, 16000), 16000)
    with pytest.raises(AudioError, match=r"short\.wav.*too short"):
        load_audio(short)

    nan = tmp_path / "nan.wav"
    data = tone(1.5, 16000)
    data[100] = np.nan
    sf.write(nan, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*NaN"):
        load_audio(nan)

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(AudioError, match=r"garbage\.wav.*cannot be read"):
        load_audio(garbage)

    with pytest.raises(AudioError, match=r"missing\.wav.*no such"):
        load_audio(tmp_path / "missing.wav")

    header_only = tmp_path / "noframes.wav"
    sf.write(header_only, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"noframes\.wav.*no audio samples"):
        load_audio(header_only)

    assert issubclass(AudioError, ValueError)


def test_prepare_waveform_checks_in_memory_audio():
    with pytest.raises(AudioError, match="<array>.*too short"):
        prepare_waveform(np.zeros(100, np.float32), 16000)
    out = prepare_waveform(np.stack([tone(1.0, 8000), tone(1.0, 8000)]), 8000)
    assert out.shape == (16000,)
