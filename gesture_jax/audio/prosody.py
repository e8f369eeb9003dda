"""Prosodic speech features of Kucherenko et al. 2019: [energy, d energy, pitch, d pitch].

The reference (data_processing/alt_prosody.py + tools.py `extract_prosodic_features`) runs
Praat through parselmouth at a 5 ms step; we call the same Praat analyses so the values
are the reference's, not an approximation by another pitch tracker:

* Praat pitch (`to_pitch(time_step=0.005)`, its defaults) and intensity
  (`to_intensity(time_step=0.005)`), read at t = 0, 0.005, ... < duration - 0.005 with
  `get_value_at_time` / `get_value`; undefined values (NaN) become 0.
* pitch' = max(ln(F0 + 1) - 4, 0); energy' = max(ln(intensity) - 3, 0) with the intensity
  floored at float64 eps (Chiu 2011's normalisation).
* derivatives = first difference per millisecond (/ 5), the first value 0.
* the extractor then averages groups of 10 (5 ms -> 50 ms, 20 fps) via `to_model_rate`.

praat-parselmouth is an optional feature-extraction dependency (requirements.txt); without
it, asking for prosody fails with an error naming the package.
"""
from __future__ import annotations

import numpy as np

STEP_S = 0.005                     # Praat analysis step of the reference (5 ms)
PROSODY_RATE = 1.0 / STEP_S        # 200 values per second, averaged to the model rate afterwards
DERIVATIVE_DX_MS = STEP_S * 1000   # the reference differentiates per millisecond
_INSTALL = "pip install praat-parselmouth==0.4.7"


def require_parselmouth():
    """The parselmouth module, or ImportError naming the package (audio.prosody needs Praat)."""
    try:
        import parselmouth
    except ImportError as e:
        raise ImportError(f"audio.prosody=True needs the praat-parselmouth package (Praat pitch and intensity, "
                          f"as the reference computes them); install it with `{_INSTALL}`") from e
    return parselmouth


def _derivative(f: np.ndarray) -> np.ndarray:
    """[L] -> [L]: (f[k] - f[k-1]) / 5 ms for k >= 1, and 0 at k = 0 (the reference's `derivative`)."""
    d = np.zeros_like(f)
    d[1:] = np.diff(f) / DERIVATIVE_DX_MS
    return d


def prosody_features(wave: np.ndarray, sr: int = 16000) -> np.ndarray:
    """float64 [L, 4] = [energy, d energy, pitch, d pitch] at 5 ms steps of a mono waveform.

    `wave` is float in [-1, 1] (Praat reads WAV files into the same scale, so the dB
    intensities equal the reference's). L = len(arange(0, duration - 0.005, 0.005)).
    """
    pm = require_parselmouth()
    x = np.asarray(wave, np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono [S] waveform, got shape {x.shape}")
    snd = pm.Sound(x, sampling_frequency=float(sr))
    pitch = snd.to_pitch(time_step=STEP_S)
    intensity = snd.to_intensity(time_step=STEP_S)
    times = np.arange(0, snd.get_total_duration() - STEP_S, STEP_S)           # [L]
    # Praat queries take one time each; this runs at C speed per call (~1 s per hour of audio).
    f0 = np.nan_to_num(np.fromiter((pitch.get_value_at_time(t) for t in times), np.float64, times.size))
    db = np.nan_to_num(np.fromiter((intensity.get_value(t) for t in times), np.float64, times.size))
    db = np.clip(db, np.finfo(np.float64).eps, None)
    pitch_n = np.clip(np.log(f0 + 1) - 4, 0, None)                             # [L]
    energy_n = np.clip(np.log(db) - 3, 0, None)                                # [L]
    return np.stack([energy_n, _derivative(energy_n), pitch_n, _derivative(pitch_n)], axis=1)  # [L, 4]
