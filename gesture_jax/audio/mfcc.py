"""MFCC speech features, the recipe of Kucherenko et al. 2019 (Aud2Repr2Pose).

The reference computes `python_speech_features.mfcc(audio, winlen=0.02, winstep=0.01,
numcep=26)` on the int16 samples scipy reads, then averages non-overlapping groups of 5
frames (100 -> 20 frames/s). `mfcc` below is our own numpy implementation of that library
function (same framing, padding and frame count, pre-emphasis, power spectrum, mel
filterbank, log floor, orthonormal DCT-II, lifter, c0 replaced by the log frame energy),
so the features match the reference without the library at run time (it is a test
dependency only: tests/test_mfcc.py compares the two).

Why each detail is kept:

* **Rectangular window, frames truncated to nfft.** The library applies no window by
  default, and when a frame is longer than nfft (882 samples at the reference's 44.1 kHz)
  `numpy.fft.rfft(frames, nfft)` silently keeps only the first nfft samples. At our 16 kHz
  a 20 ms frame is 320 samples and is zero-padded to 512 instead; the function supports
  any rate so the truncating case is exercised by the tests too.
* **int16 scale.** The reference reads WAVs with scipy, i.e. samples in int16 units. Our
  waveforms are float in [-1, 1]; the extractor multiplies by 32768 so the log energies
  (c0) have the reference's magnitude (a constant offset of 2*ln(32768) ~ 20.8 otherwise;
  the other coefficients are scale-free because the DCT of a constant vector only reaches c0).
* **Rate change.** Model frame k is the mean of the native frames whose windows *start*
  in [k/fps, (k+1)/fps): for 100/fps an integer (20 fps: 5 frames) that is exactly the
  reference's group average. Otherwise it is the same box average over the fractional
  interval (the 100 Hz sequence read as piecewise constant, partial frames weighted by
  their overlap) -- an interpolation in time that reduces to the group average for
  integer ratios. The output always has floor(S*fps/sr) frames (the extractor contract);
  a last group that runs past the native frames is padded with the last native frame.

Known departures from the reference, both outside the MFCC function: its audio is 44.1 kHz
stereo summed in int16 (which can wrap); ours is loaded as 16 kHz mono float (the
project's single audio format), so the window covers the full 20 ms and the mel bands span
0-8 kHz instead of 0-22.05 kHz.
"""
from __future__ import annotations

import decimal
import math

import numpy as np

from gesture_jax.audio.frames import num_model_frames

# python_speech_features.mfcc with the reference's arguments (tools.py calculate_mfcc)
WINLEN_S = 0.02
WINSTEP_S = 0.01
NUMCEP = 26
NFILT = 26
NFFT = 512
PREEMPH = 0.97
CEPLIFTER = 22
LOG_FLOOR = float(np.finfo(np.float64).eps)  # the library replaces exact zeros by float64 eps before the log
INT16_FULL_SCALE = 32768.0  # float [-1, 1] -> the int16 units scipy.io.wavfile gives the reference
_BLOCK_FRAMES = 8192  # frames per FFT block: bounds memory on hour-long files (8192 x 512 float64 = 32 MB)


def round_half_up(x: float) -> int:
    """The library's rounding of window lengths in samples (decimal ROUND_HALF_UP of the exact float)."""
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def frame_geometry(sr: int, winlen: float = WINLEN_S, winstep: float = WINSTEP_S) -> tuple[int, int]:
    """(frame length, frame step) in samples at `sr`, rounded as the library rounds them."""
    return round_half_up(winlen * sr), round_half_up(winstep * sr)


def num_mfcc_frames(num_samples: int, frame_len: int, frame_step: int) -> int:
    """The library's frame count: 1 for a signal no longer than a frame, else
    1 + ceil((S - frame_len) / step) (the last frame is zero-padded)."""
    if num_samples <= frame_len:
        return 1
    return 1 + int(math.ceil((1.0 * num_samples - frame_len) / frame_step))


def hz2mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def mel2hz(mel: np.ndarray | float) -> np.ndarray | float:
    return 700 * (10 ** (np.asarray(mel) / 2595.0) - 1)


def mel_filterbank(nfilt: int = NFILT, nfft: int = NFFT, sr: int = 16000, lowfreq: float = 0.0,
                   highfreq: float | None = None) -> np.ndarray:
    """float64 [nfilt, nfft//2+1] triangular filters, the library's `get_filterbanks`.

    Band edges are equally spaced in mel and snapped to FFT bins with
    floor((nfft+1) * hz / sr); filter j rises over bins [b_j, b_{j+1}) and falls over
    [b_{j+1}, b_{j+2}) (peak 1 at b_{j+1}). Degenerate (empty) slopes stay zero, as in the
    library's loops.
    """
    highfreq = sr / 2 if highfreq is None else highfreq
    if highfreq > sr / 2:
        raise ValueError(f"highfreq {highfreq} Hz is above the Nyquist frequency {sr / 2} Hz")
    melpoints = np.linspace(hz2mel(lowfreq), hz2mel(highfreq), nfilt + 2)
    edges = np.floor((nfft + 1) * mel2hz(melpoints) / sr)          # [nfilt+2] FFT bins
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [nfilt, 1] each
    i = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]         # [1, nfft//2+1]
    rise_w, fall_w = mid - lo, hi - mid
    rise = np.divide(i - lo, rise_w, out=np.zeros((nfilt, i.shape[1])), where=(i >= lo) & (i < mid))
    fall = np.divide(hi - i, fall_w, out=np.zeros((nfilt, i.shape[1])), where=(i >= mid) & (i < hi))
    return rise + fall                                              # [nfilt, nfft//2+1]


def dct2_ortho_matrix(n: int) -> np.ndarray:
    """float64 [n, n] orthonormal DCT-II (scipy `dct(type=2, norm='ortho')` as a matrix): y = D @ x."""
    k = np.arange(n, dtype=np.float64)[:, None]
    j = np.arange(n, dtype=np.float64)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * j + 1) / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


def lifter_weights(numcep: int, ceplifter: float = CEPLIFTER) -> np.ndarray:
    """float64 [numcep] sinusoidal lifter 1 + (L/2) sin(pi n / L) (all ones when L <= 0)."""
    if ceplifter <= 0:
        return np.ones(numcep)
    n = np.arange(numcep, dtype=np.float64)
    return 1.0 + (ceplifter / 2.0) * np.sin(np.pi * n / ceplifter)


def mfcc(signal: np.ndarray, sr: int, *, winlen: float = WINLEN_S, winstep: float = WINSTEP_S,
         numcep: int = NUMCEP, nfilt: int = NFILT, nfft: int = NFFT, lowfreq: float = 0.0,
         highfreq: float | None = None, preemph: float = PREEMPH, ceplifter: float = CEPLIFTER,
         append_energy: bool = True) -> np.ndarray:
    """float64 [frames, numcep] MFCCs of a 1-D signal, as `python_speech_features.mfcc` computes them.

    Defaults are the reference's call (winlen 0.02, winstep 0.01, numcep 26); the signal is
    used in the units given (the reference passes int16 values). Frame j covers samples
    [j*step, j*step + frame_len) of the zero-padded signal; frames number
    `num_mfcc_frames(S, frame_len, step)`.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("cannot compute MFCCs of an empty signal")
    if not 1 <= numcep <= nfilt:
        raise ValueError(f"numcep must be in [1, nfilt={nfilt}], got {numcep}")
    frame_len, step = frame_geometry(sr, winlen, winstep)
    if frame_len < 1 or step < 1:
        raise ValueError(f"winlen {winlen} s / winstep {winstep} s are shorter than one sample at {sr} Hz")
    emph = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])       # [S] pre-emphasis, first sample kept
    frames = num_mfcc_frames(emph.shape[0], frame_len, step)
    used = min(frame_len, nfft)                                     # rfft(frame, nfft) keeps the first nfft samples
    padlen = (frames - 1) * step + frame_len
    padded = np.zeros(padlen, np.float64)
    padded[:emph.shape[0]] = emph
    fb = mel_filterbank(nfilt, nfft, sr, lowfreq, highfreq)         # [nfilt, nfft//2+1]
    dct = dct2_ortho_matrix(nfilt)[:numcep]                         # [numcep, nfilt]
    lift = lifter_weights(numcep, ceplifter)                        # [numcep]
    out = np.empty((frames, numcep), np.float64)
    for a in range(0, frames, _BLOCK_FRAMES):
        b = min(frames, a + _BLOCK_FRAMES)
        idx = (np.arange(a, b) * step)[:, None] + np.arange(used)[None, :]   # [b-a, used]
        spec = np.fft.rfft(padded[idx], nfft, axis=-1)             # [b-a, nfft//2+1]
        pspec = np.square(np.abs(spec)) / nfft                      # power spectrum, as the library scales it
        energy = pspec.sum(axis=1)                                  # [b-a]
        energy = np.where(energy == 0, LOG_FLOOR, energy)
        feat = pspec @ fb.T                                         # [b-a, nfilt]
        feat = np.where(feat == 0, LOG_FLOOR, feat)
        cep = (np.log(feat) @ dct.T) * lift                         # [b-a, numcep]
        if append_energy:
            cep[:, 0] = np.log(energy)
        out[a:b] = cep
    return out


def to_model_rate(feats: np.ndarray, rate: float, fps: float, num_frames: int) -> np.ndarray:
    """Native frames [L, D] at `rate` Hz -> float64 [num_frames, D] at `fps`: model frame k is the
    mean of the native frames in [k*rate/fps, (k+1)*rate/fps).

    Integer rate/fps (100 Hz -> 20 fps: 5): a plain mean of non-overlapping groups, the
    reference's `average(x, 5)`. Fractional ratios: the same box average with the boundary
    frames weighted by their overlap (a cumulative sum read at fractional positions), i.e.
    time interpolation that agrees with the group average whenever the ratio is an integer.
    Frames needed past the end repeat the last native frame (edge padding).
    """
    x = np.asarray(feats, np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected native features [frames, dims], got shape {x.shape}")
    if rate <= 0 or fps <= 0:
        raise ValueError(f"rates must be positive, got native {rate} Hz and fps {fps}")
    d = x.shape[1]
    if num_frames <= 0:
        return np.zeros((0, d), np.float64)
    if x.shape[0] == 0:
        raise ValueError(f"no native frames to bring to {fps:g} fps")
    ratio = rate / fps
    group = int(round(ratio))
    if group >= 1 and abs(ratio - group) < 1e-9:
        need = num_frames * group
        x = x[:need] if x.shape[0] >= need else np.pad(x, ((0, need - x.shape[0]), (0, 0)), mode="edge")
        return x.reshape(num_frames, group, d).mean(axis=1)         # [num_frames, D]
    edges = np.arange(num_frames + 1, dtype=np.float64) * ratio      # [num_frames+1] in native frames
    need = int(math.floor(edges[-1])) + 1
    if x.shape[0] < need:
        x = np.pad(x, ((0, need - x.shape[0]), (0, 0)), mode="edge")
    csum = np.concatenate([np.zeros((1, d)), np.cumsum(x, axis=0)])  # [L+1, D]: csum[j] = sum of frames < j
    j = np.minimum(np.floor(edges).astype(np.int64), x.shape[0] - 1)  # [num_frames+1]
    integral = csum[j] + (edges - j)[:, None] * x[j]                 # [num_frames+1, D]: integral up to each edge
    return (integral[1:] - integral[:-1]) / ratio


class MFCCExtractor:
    """float32 [S] wave at `sr` -> float32 [floor(S*fps/sr), numcep (+4 with prosody)].

    The reference's speech input: 26 MFCCs (20 ms window, 10 ms hop) averaged to the model
    rate (frame k <-> time k/fps, see `to_model_rate`), optionally followed by the 4 prosodic
    features [energy, d energy, pitch, d pitch] (`prosody.py`, needs praat-parselmouth),
    the reference's "MFCC+Pros" (30-d).
    """

    name = "mfcc"

    def __init__(self, fps: float = 20.0, numcep: int = NUMCEP, prosody: bool = False, sr: int = 16000):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 1 <= int(numcep) <= NFILT:
            raise ValueError(f"mfcc numcep must be in [1, {NFILT}] (the filterbank has {NFILT} bands), got {numcep}")
        self.fps, self.numcep, self.prosody, self.sr = float(fps), int(numcep), bool(prosody), int(sr)
        if self.prosody:
            from gesture_jax.audio.prosody import require_parselmouth

            require_parselmouth()  # fail at construction, not after the first file's MFCCs
        self.dim = self.numcep + (4 if self.prosody else 0)
        _, step = frame_geometry(self.sr)
        self.native_fps = self.sr / step                            # 100 Hz at 16 kHz

    @property
    def rate(self) -> float:
        """Frames/s of the output: the motion rate (MFCCs are averaged to it)."""
        return self.fps

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """float32 [floor(S*fps/sr), dim]: frame k <-> time k/fps."""
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono [S] waveform, got shape {wave.shape}")
        n = num_model_frames(wave.shape[0], self.fps, self.sr)
        cep = mfcc(wave.astype(np.float64) * INT16_FULL_SCALE, self.sr, numcep=self.numcep)  # [L, numcep]
        feats = to_model_rate(cep, self.native_fps, self.fps, n)  # [n, numcep]
        if self.prosody:
            from gesture_jax.audio.prosody import PROSODY_RATE, prosody_features

            pros = to_model_rate(prosody_features(wave, self.sr), PROSODY_RATE, self.fps, n)  # [n, 4]
            feats = np.concatenate([feats, pros], axis=1)
        return np.ascontiguousarray(feats, np.float32)


def mfcc_dim(audio_cfg: object) -> int:
    """Feature width `cfg.audio` asks of the mfcc extractor (numcep + 4 with prosody)."""
    numcep = int(getattr(audio_cfg, "mfcc_numcep", NUMCEP))
    return numcep + (4 if bool(getattr(audio_cfg, "prosody", False)) else 0)
