"""Log-mel spectrogram features: the audio condition that needs no pretrained weights.

Same interface as the WavLM extractor (`.name`, `.dim`, `.fps`, `__call__(wave)`), so
the demo config and tests run the whole pipeline without converting a checkpoint.
Frames are centred on the model frame times (frame k <-> time k/fps): when the sample
rate is a multiple of fps the STFT hop equals one model frame (800 samples at 20 fps,
16 kHz); otherwise a 10 ms hop is computed and linearly interpolated to the frame times.
"""
from __future__ import annotations

import numpy as np

from gesture_jax.audio.frames import num_model_frames

LOG_FLOOR = 1e-6  # added before the log: digital silence maps to log(1e-6), not -inf


class MelExtractor:
    """float32 [S] wave at `sr` -> float32 [floor(S*fps/sr), n_mels] natural-log mel power."""

    name = "mel"

    def __init__(self, *, n_mels: int = 80, fps: float = 20.0, sr: int = 16000, fmin: float = 0.0,
                 fmax: float | None = None):
        if n_mels <= 0:
            raise ValueError(f"n_mels must be positive, got {n_mels}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.n_mels, self.fps, self.sr = int(n_mels), float(fps), int(sr)
        self.dim = self.n_mels
        frame_len = sr / self.fps
        self.exact_hop = abs(frame_len - round(frame_len)) < 1e-9
        self.hop = int(round(frame_len)) if self.exact_hop else sr // 100
        # Analysis window of two model frames (100 ms at 20 fps), at least 25 ms.
        self.win_length = max(int(round(2 * frame_len)), int(0.025 * sr))
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        import librosa

        self._fb = librosa.filters.mel(sr=sr, n_fft=self.n_fft, n_mels=self.n_mels, fmin=fmin,
                                       fmax=fmax if fmax is not None else sr / 2).astype(np.float32)
        self._window = np.hanning(self.win_length + 1)[:-1].astype(np.float32)  # periodic Hann

    @property
    def rate(self) -> float:
        """Frames/s of the output: the motion rate (mel has no other)."""
        return self.fps

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono [S] waveform, got shape {wave.shape}")
        n = num_model_frames(wave.shape[0], self.fps, self.sr)
        spec = self._power_spectrogram(wave)                   # [frames, n_fft//2+1], frame j at j*hop
        mel = np.log(spec @ self._fb.T + LOG_FLOOR).astype(np.float32)  # [frames, n_mels]
        if self.exact_hop:
            return np.ascontiguousarray(mel[:n])
        pos = np.arange(n) * (self.sr / self.fps) / self.hop
        pos = np.clip(pos, 0, mel.shape[0] - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, mel.shape[0] - 1)
        w = (pos - i0).astype(np.float32)[:, None]
        return (mel[i0] * (1 - w) + mel[i1] * w).astype(np.float32)

    def _power_spectrogram(self, wave: np.ndarray) -> np.ndarray:
        """|STFT|^2 with centred frames (reflect padding), computed in blocks to bound memory."""
        pad = self.n_fft // 2
        mode = "reflect" if wave.shape[0] > pad else "constant"
        x = np.pad(wave, (pad, pad), mode=mode)
        frames = 1 + (x.shape[0] - self.n_fft) // self.hop
        win = np.zeros(self.n_fft, np.float32)
        off = (self.n_fft - self.win_length) // 2
        win[off:off + self.win_length] = self._window
        out = np.empty((frames, self.n_fft // 2 + 1), np.float32)
        block = 4096
        for s in range(0, frames, block):
            e = min(frames, s + block)
            idx = (np.arange(s, e) * self.hop)[:, None] + np.arange(self.n_fft)[None, :]
            spec = np.fft.rfft(x[idx] * win, axis=-1)
            out[s:e] = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        return out
