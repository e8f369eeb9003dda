"""Reading speech files into the one waveform format every audio feature expects.

Every extractor (WavLM, mel) consumes a float32 mono waveform at 16 kHz, so loading is
the single place where file formats, channel layouts and sample rates are reconciled.
Bad input is rejected here, with the file's name, instead of surfacing later as a NaN
feature or a shape error deep inside a jitted model.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np

from gesture_jax import storage
from gesture_jax.errors import UserError

MIN_DURATION_S = 1.0  # shorter clips cannot fill even one 20 fps window sensibly


class AudioError(UserError, ValueError):
    """An audio file that cannot be used as speech input (message names the file)."""


def load_audio(path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    """Load any file librosa reads (WAV/FLAC/OGG/MP3...) as float32 mono at `sr` Hz.

    Channels are averaged (downmix), the signal is resampled with librosa's default
    high-quality resampler, and the result is checked: empty, shorter than
    `MIN_DURATION_S`, or NaN/inf-containing input raises `AudioError`. Digital silence
    is valid input (a speaker may pause for a whole clip).

    Returns:
        np.float32 [S] waveform, S = round(duration * sr).
    """
    import librosa  # imported lazily: its import is slow and most modules never read audio

    p = storage.path(path)  # local or a bucket (gs://...)
    if not p.exists():
        raise AudioError(f"{p}: no such audio file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, expected an audio file")
    if storage.size(p) == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # librosa warns when it falls back to audioread for MP3; the fallback is fine.
            warnings.simplefilter("ignore")
            if not storage.is_remote(p):
                wave, file_sr = librosa.load(os.fspath(p), sr=None, mono=False, dtype=np.float32)
            else:
                wave, file_sr = _load_remote(librosa, p)
    except Exception as e:  # soundfile/audioread raise many unrelated types
        raise AudioError(f"{p}: cannot be read as audio ({type(e).__name__}: {e})") from e
    return prepare_waveform(wave, int(file_sr), sr, name=str(p))


def _load_remote(librosa, p) -> tuple[np.ndarray, int]:
    """A bucket file: decoded from its bytes in memory (soundfile: WAV/FLAC/OGG/MP3); a format
    only audioread decodes needs a file name, so it is read from a temporary local copy."""
    import soundfile

    raw = p.read_bytes()
    try:
        return librosa.load(io.BytesIO(raw), sr=None, mono=False, dtype=np.float32)
    except soundfile.SoundFileRuntimeError:
        with storage.local_copy(p) as local:
            return librosa.load(os.fspath(local), sr=None, mono=False, dtype=np.float32)


def prepare_waveform(wave: np.ndarray, file_sr: int, sr: int = 16000, *, name: str = "<array>") -> np.ndarray:
    """Downmix [C, S] or [S] audio at `file_sr` to float32 mono [S'] at `sr`, with checks.

    Split from `load_audio` so in-memory audio (tests, generated speech) goes through the
    same validation as files.
    """
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        # librosa's layout is [channels, samples]; average channels (downmix).
        wave = wave.mean(axis=0)
    elif wave.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D or [channels, samples] waveform, got shape {wave.shape}")
    if wave.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: contains NaN or infinite samples")
    duration = wave.size / float(file_sr)
    if duration < MIN_DURATION_S:
        raise AudioError(f"{name}: too short ({duration:.3f} s < {MIN_DURATION_S} s minimum)")
    if file_sr != sr:
        wave = librosa.resample(wave, orig_sr=file_sr, target_sr=sr).astype(np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32)
