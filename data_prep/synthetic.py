"""Synthetic speech + gesture corpus: the demo's data on a fresh machine, in seconds.

    python -m data_prep.synthetic --config=configs/demo.py   # writes into cfg.data.root

Writes ``demo_train_NNN.{wav,bvh}`` and held-out ``demo_test_NNN.{wav,bvh}`` into
``data.root`` (matching the ``demo_test_*`` holdout of configs/demo.py), plus ``*.onsets.json`` sidecars with the ground-truth
timing. Sizes come from ``cfg.data.synthetic`` (num_train, num_test, duration_s, seed).
The same seed gives byte-identical files; file i depends only on (seed, i).

Why this design: the demo must show that a trained model learns *audio-driven* motion, in
particular beat alignment, which needs a corpus where motion depends on the audio in a
known, checkable way.

Audio (16 kHz mono, 16-bit PCM): speech-like phrases of 3-8 syllables separated by
pauses (0.35-0.9 s). Each syllable is a voiced harmonic burst (0.12-0.26 s) whose pitch
follows a phrase declination (speaker base f0 95-210 Hz) plus a rise-fall on stressed
syllables, with two vowel-like formant peaks chosen per syllable, a 12 ms raised-cosine
attack (a sharp onset), a short noise burst (consonant) at the start, and an exponential
release. Stressed syllables are louder (x1.0 vs x0.45).

Motion (Trinity-like skeleton made in code: root Hips with 6 channels, every other joint
3 channels, ZXY Euler order, centimetres, Y up, facing +Z; the 23 joints of
configs/trinity.py; written at ``SOURCE_FPS``):
  * **Beats.** Every syllable onset t_k is a gesture beat. The wrists' path is a sum of
    Gaussian strokes exp(-(t - t_k)^2 / 2 sigma^2), sigma = ``STROKE_SIGMA_S`` (0.06 s),
    applied to elbow flexion and shoulder lift. The stroke apex (position extreme) sits
    exactly at the onset, so the hands' **speed has a local minimum at each onset** (the
    motion-beat definition of the beat-consistency metric) and **speed peaks at
    t_k - sigma and t_k + sigma**. Syllable onsets are >= 0.17 s (about 2.8 sigma) apart,
    so neighbouring strokes barely overlap. Stroke size scales with the syllable's stress;
    the right hand leads, the left joins on about half of the beats.
  * **Head nods** (Neck/Head X rotation) on stressed syllables, same Gaussian timing.
  * **Phrase posture**: the arms rise (slowly, 0.4 s ramps) while a phrase is voiced and
    return to rest in pauses, so voice activity also drives the pose.
  * Slow idle sway of hips/spine (independent of audio) so pauses are not frozen.
The sidecar ``*.onsets.json`` lists onsets, stress and phrase spans in seconds.
"""
from __future__ import annotations

import json
import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from gesture_jax.motion.bvh import BVH, Skeleton, write_bvh

SAMPLE_RATE = 16000
SOURCE_FPS = 30                 # BVH frame rate (the pipeline resamples to data.fps)
STROKE_SIGMA_S = 0.06           # width of a gesture stroke around its onset
DEFAULTS = {"num_train": 10, "num_test": 2, "duration_s": 24.0, "seed": 0}

# (name, parent, offset cm) in depth-first file order; left is +X (the figure faces +Z).
_JOINTS: list[tuple[str, str | None, tuple[float, float, float]]] = [
    ("Hips", None, (0.0, 95.0, 0.0)),
    ("Spine", "Hips", (0.0, 9.0, -1.0)),
    ("Spine1", "Spine", (0.0, 9.0, 0.0)),
    ("Spine2", "Spine1", (0.0, 10.0, 0.0)),
    ("Spine3", "Spine2", (0.0, 10.0, 0.0)),
    ("Neck", "Spine3", (0.0, 14.0, 0.5)),
    ("Head", "Neck", (0.0, 9.0, 1.0)),
    ("RightShoulder", "Spine3", (-3.0, 11.0, 0.0)),
    ("RightArm", "RightShoulder", (-12.0, 0.0, 0.0)),
    ("RightForeArm", "RightArm", (-28.0, 0.0, 0.0)),
    ("RightHand", "RightForeArm", (-25.0, 0.0, 0.0)),
    ("LeftShoulder", "Spine3", (3.0, 11.0, 0.0)),
    ("LeftArm", "LeftShoulder", (12.0, 0.0, 0.0)),
    ("LeftForeArm", "LeftArm", (28.0, 0.0, 0.0)),
    ("LeftHand", "LeftForeArm", (25.0, 0.0, 0.0)),
    ("RightUpLeg", "Hips", (-9.0, -4.0, 0.0)),
    ("RightLeg", "RightUpLeg", (0.0, -42.0, 0.0)),
    ("RightFoot", "RightLeg", (0.0, -41.0, 0.0)),
    ("RightToeBase", "RightFoot", (0.0, -6.0, 13.0)),
    ("LeftUpLeg", "Hips", (9.0, -4.0, 0.0)),
    ("LeftLeg", "LeftUpLeg", (0.0, -42.0, 0.0)),
    ("LeftFoot", "LeftLeg", (0.0, -41.0, 0.0)),
    ("LeftToeBase", "LeftFoot", (0.0, -6.0, 13.0)),
]
_END_SITES = {"Head": (0.0, 16.0, 0.0), "RightHand": (-17.0, 0.0, 0.0),
              "LeftHand": (17.0, 0.0, 0.0), "RightToeBase": (0.0, 0.0, 5.0),
              "LeftToeBase": (0.0, 0.0, 5.0)}
_ROT = ["Zrotation", "Xrotation", "Yrotation"]


def make_skeleton() -> Skeleton:
    """Trinity-like skeleton: root Hips (6 channels), ZXY rotations, cm, Y up."""
    names = [j[0] for j in _JOINTS]
    parents = [-1 if p is None else names.index(p) for _, p, _ in _JOINTS]
    offsets = np.array([o for _, _, o in _JOINTS], np.float64)
    channels = [(["Xposition", "Yposition", "Zposition"] if p is None else []) + list(_ROT)
                for _, p, _ in _JOINTS]
    end_sites = {names.index(k): np.array(v, np.float64) for k, v in _END_SITES.items()}
    return Skeleton(names, parents, offsets, channels, end_sites)


@dataclass
class Syllable:
    onset: float     # seconds
    duration: float  # seconds
    stress: float    # 0.45 (unstressed) or 1.0 (stressed)
    phrase: int


def plan_syllables(rng: np.random.Generator, duration_s: float) -> tuple[list[Syllable], list[tuple[float, float]]]:
    """Phrases of syllables separated by pauses, filling [0.4, duration_s - 0.5] s."""
    syl: list[Syllable] = []
    phrases: list[tuple[float, float]] = []
    t = 0.4 + rng.uniform(0.0, 0.3)
    while True:
        n = int(rng.integers(3, 9))
        durs = rng.uniform(0.12, 0.26, n)
        gaps = rng.uniform(0.05, 0.12, n)
        if t + float(durs.sum() + gaps.sum()) > duration_s - 0.5:
            break
        start = t
        stressed = rng.random(n) < 0.4
        stressed[int(rng.integers(0, n))] = True  # every phrase has a stressed syllable
        for k in range(n):
            syl.append(Syllable(round(t, 6), float(durs[k]), 1.0 if stressed[k] else 0.45, len(phrases)))
            t += float(durs[k] + gaps[k])
        phrases.append((start, t))
        t += rng.uniform(0.35, 0.9)
    return syl, phrases


def synthesize_audio(rng: np.random.Generator, syllables: Sequence[Syllable],
                     phrases: Sequence[tuple[float, float]], duration_s: float) -> np.ndarray:
    """Speech-like waveform [S] float32 in [-1, 1] at SAMPLE_RATE (see module docstring)."""
    sr = SAMPLE_RATE
    n = int(round(duration_s * sr))
    out = rng.normal(0.0, 10 ** (-55 / 20), n)  # quiet noise floor
    base_f0 = rng.uniform(95.0, 210.0)
    for s in syllables:
        ps, pe = phrases[s.phrase]
        i0 = int(round(s.onset * sr))
        m = min(int(round(s.duration * sr)), n - i0)
        t = np.arange(m) / sr
        # pitch: phrase declination (-15 %) and a rise-fall on stressed syllables
        decl = 1.0 - 0.15 * (s.onset - ps) / max(pe - ps, 1e-3)
        f0 = base_f0 * decl * (1.0 + 0.12 * (s.stress > 0.5) * np.sin(np.pi * t / s.duration))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        f1, f2 = rng.uniform(300, 850), rng.uniform(900, 2400)
        wave_ = np.zeros(m)
        for h in range(1, int(4000 // f0.max()) + 1):
            fh = h * f0
            amp = (np.exp(-0.5 * ((fh - f1) / 120.0) ** 2) + 0.6 * np.exp(-0.5 * ((fh - f2) / 180.0) ** 2)
                   + 0.15 / h)
            wave_ += amp * np.sin(h * phase)
        attack = np.minimum(t / 0.012, 1.0)
        env = (0.5 - 0.5 * np.cos(np.pi * attack)) * np.exp(-2.5 * np.maximum(t - 0.6 * s.duration, 0) / s.duration)
        burst_n = min(int(0.015 * sr), m)
        burst = np.zeros(m)
        burst[:burst_n] = rng.normal(0, 0.25, burst_n) * np.hanning(burst_n)
        out[i0:i0 + m] += s.stress * (env * wave_ / 3.0 + burst)
    peak = np.abs(out).max()
    return (0.5 * out / peak).astype(np.float32)


def _gauss(t: np.ndarray, centers: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """sum_k weights[k] * exp(-(t - centers[k])^2 / 2 sigma^2), [len(t)]."""
    if len(centers) == 0:
        return np.zeros_like(t)
    return (weights[None, :] * np.exp(-0.5 * ((t[:, None] - centers[None, :]) / sigma) ** 2)).sum(1)


def _smooth_steps(t: np.ndarray, spans: Sequence[tuple[float, float]], ramp: float) -> np.ndarray:
    """1 inside each span, 0 outside, raised-cosine ramps of ``ramp`` s at both ends."""
    v = np.zeros_like(t)
    for a, b in spans:
        up = np.clip((t - a + ramp / 2) / ramp, 0, 1)
        down = np.clip((b + ramp / 2 - t) / ramp, 0, 1)
        v = np.maximum(v, 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down)))
    return v


def synthesize_motion(rng: np.random.Generator, skel: Skeleton, syllables: Sequence[Syllable],
                      phrases: Sequence[tuple[float, float]], duration_s: float) -> np.ndarray:
    """Channel values [N, C] at SOURCE_FPS (degrees / cm) driven by the syllable plan."""
    n = int(round(duration_s * SOURCE_FPS))
    t = np.arange(n) / SOURCE_FPS
    onsets = np.array([s.onset for s in syllables])
    stress = np.array([s.stress for s in syllables])
    left_joins = rng.random(len(syllables)) < 0.5
    style = rng.uniform(0.8, 1.25)  # per-"speaker" gesture size
    sig = STROKE_SIGMA_S
    beat_r = _gauss(t, onsets, stress * style, sig)
    beat_l = _gauss(t, onsets, stress * style * left_joins * 0.7, sig)
    nod = _gauss(t, onsets, (stress > 0.5) * style, sig)
    talk = _smooth_steps(t, phrases, 0.4)
    sway = lambda f, a: a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))  # noqa: E731

    rot = {name: np.zeros((n, 3)) for name in skel.names}  # per joint (Z, X, Y) degrees
    root_pos = np.stack([sway(0.05, 2.0), 95.0 + sway(0.11, 0.4), sway(0.07, 1.5)], 1)
    rot["Hips"][:, 2] = sway(0.04, 6.0)
    rot["Spine"][:, 1] = 3.0 + sway(0.09, 1.5)
    rot["Spine2"][:, 0] = sway(0.06, 1.5)
    rot["Neck"][:, 1] = 4.0 + 5.0 * nod
    rot["Head"][:, 1] = -2.0 + 7.0 * nod + sway(0.13, 2.0)
    rot["Head"][:, 2] = sway(0.05, 6.0)
    # arms: rest pose lowered 75 deg from the T-pose; phrases lift; beats lift and flex the elbow
    rot["RightArm"][:, 0] = 75.0 - 12.0 * talk - 10.0 * beat_r
    rot["LeftArm"][:, 0] = -(75.0 - 10.0 * talk - 10.0 * beat_l)
    rot["RightArm"][:, 2] = -10.0 * talk
    rot["LeftArm"][:, 2] = 10.0 * talk
    rot["RightForeArm"][:, 2] = 35.0 + 25.0 * talk + 28.0 * beat_r
    rot["LeftForeArm"][:, 2] = -(35.0 + 20.0 * talk + 28.0 * beat_l)
    rot["RightHand"][:, 1] = -8.0 * beat_r
    rot["LeftHand"][:, 1] = -8.0 * beat_l
    for side, sgn in (("Right", 1.0), ("Left", -1.0)):
        rot[f"{side}Shoulder"][:, 0] = sgn * (2.0 * talk + sway(0.08, 0.5))
        rot[f"{side}UpLeg"][:, 1] = sway(0.05, 1.0)
        rot[f"{side}Leg"][:, 1] = -2.0 + sway(0.05, 1.0)
        rot[f"{side}Foot"][:, 1] = sway(0.05, 0.5)

    cols = []
    for j, name in enumerate(skel.names):
        if skel.parents[j] < 0:
            cols.append(root_pos)
        cols.append(rot[name])
    return np.concatenate(cols, axis=1)


def write_wav(path: Path, wave_f32: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono WAV (stdlib `wave`: no timestamps, so bytes depend only on samples)."""
    pcm = np.clip(np.round(wave_f32 * 32767.0), -32768, 32767).astype("<i2")
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    tmp.replace(path)


def generate_file(out_dir: Path, stem: str, seed: int, duration_s: float) -> dict:
    """Write ``stem``.wav/.bvh/.onsets.json into ``out_dir``; returns the sidecar dict."""
    rng = np.random.default_rng(seed)
    skel = make_skeleton()
    syllables, phrases = plan_syllables(rng, duration_s)
    audio = synthesize_audio(rng, syllables, phrases, duration_s)
    frames = synthesize_motion(rng, skel, syllables, phrases, duration_s)
    write_wav(out_dir / f"{stem}.wav", audio)
    write_bvh(out_dir / f"{stem}.bvh", BVH(skel, frames, 1.0 / SOURCE_FPS))
    side = {"onsets_s": [s.onset for s in syllables], "stress": [s.stress for s in syllables],
            "phrases_s": [[round(a, 6), round(b, 6)] for a, b in phrases],
            "stroke_sigma_s": STROKE_SIGMA_S, "source_fps": SOURCE_FPS, "sample_rate": SAMPLE_RATE,
            "design": "wrist speed minimum (stroke apex) at every onset; speed peaks at onset +- sigma"}
    (out_dir / f"{stem}.onsets.json").write_text(json.dumps(side, indent=1) + "\n")
    return side


def generate_corpus(out_dir: str | Path, *, num_train: int = DEFAULTS["num_train"],
                    num_test: int = DEFAULTS["num_test"], duration_s: float = DEFAULTS["duration_s"],
                    seed: int = DEFAULTS["seed"]) -> list[str]:
    """Write the whole corpus; returns the file stems. File i uses seed (seed, i) only."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = [f"demo_train_{i:03d}" for i in range(num_train)] + [f"demo_test_{i:03d}" for i in range(num_test)]
    for i, stem in enumerate(stems):
        file_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        generate_file(out, stem, file_seed, duration_s)
    return stems


def synthetic_settings(cfg) -> dict:
    """num_train/num_test/duration_s/seed from ``cfg.data.synthetic`` when present."""
    s = dict(DEFAULTS)
    syn = cfg.data.get("synthetic", None)
    if syn is not None:
        s.update({k: syn[k] for k in DEFAULTS if k in syn})
    s["duration_s"] = float(s["duration_s"])
    if s["duration_s"] < 2.0 or s["num_train"] < 1:
        raise ValueError(f"synthetic corpus needs duration_s >= 2 and num_train >= 1, got {s}")
    return s


def main(argv: Sequence[str]) -> None:
    del argv
    import time
    cfg = _CONFIG.value
    if not cfg.data.root:
        raise SystemExit("data.root is empty: pass --config.data.root=DIR")
    s = synthetic_settings(cfg)
    t0 = time.perf_counter()
    stems = generate_corpus(cfg.data.root, **s)
    print(json.dumps({"root": str(cfg.data.root), "files": len(stems),
                      "seconds_of_audio": len(stems) * s["duration_s"],
                      "elapsed_s": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/demo.py", lock_config=True)
    app.run(main)
