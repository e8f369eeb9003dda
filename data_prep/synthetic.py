"""Synthetic speech + gesture corpus: the demo's data on a fresh machine, in seconds.

    python -m data_prep.synthetic --config=configs/demo.py   # writes into cfg.data.root

``data.root`` may be a local folder or a bucket (``gs://...``); every file is written whole
(``gesture_jax.storage.write_atomic``).

Writes ``demo_train_NNN.{wav,bvh}`` and held-out ``demo_test_NNN.{wav,bvh}`` into
``data.root`` (matching the ``demo_test_*`` holdout of configs/demo.py), plus
``*.onsets.json`` sidecars with the ground-truth timing. Sizes come from ``cfg.data.synthetic`` (num_train, num_test, duration_s, seed).
The same seed gives byte-identical files; file i depends only on (seed, i).

Why this design: the demo must show that a trained model learns *audio-driven* motion, in
particular beat alignment, which needs a corpus where motion depends on the audio in a
known, checkable way, and where the beat-consistency metric (gesture_jax.eval.beat: librosa
onsets vs. speed minima above 0.3 x mean speed, argrelextrema order 7, sigma 0.3 s) can
tell matched from mismatched audio.

Audio (16 kHz mono, 16-bit PCM): phrases of 2-5 *feet* separated by pauses (0.6-1.3 s).
A foot is a stressed syllable followed by unstressed ones (each 0.13-0.28 s), voiced
without a break, at least ``MIN_BEAT_GAP_S`` long with the 0.08-0.2 s silence after it, so
syllables come at ~4/s and stressed ones (beats) every 0.75-1.2 s. Voicing is a harmonic
series (speaker f0 85-150 Hz with phrase declination and a rise-fall accent on the
stressed syllable) under two formant peaks per syllable, glided between syllables. The
stressed syllable starts with a consonant-like noise burst and a 10 ms attack after
silence (the audible onset librosa detects, about 50 ms late at hop 512); unstressed
syllables are ``UNSTRESSED_GAIN`` as loud, joined by smooth loudness dips, not silences.

Motion (Trinity-like skeleton made in code: root Hips with 6 channels, every other joint
3 channels, ZXY Euler order, centimetres, Y up, facing +Z; the 23 joints of
configs/trinity.py; written at ``SOURCE_FPS``):
  * **Gesture phase.** From 0.35 s before a phrase (preparation) to its end, the hands
    circle continuously (shoulder lift x forward swing x elbow flexion, i.e. loops), the
    torso and neck join with small loops, at ``CYCLE_HZ`` loops per second. The phase
    speed dips to 25 % at every beat (a Gaussian dip of width ``BEAT_SIGMA_S``). Hence:
    **the speed of hands, elbows, head and upper torso has a local minimum exactly at each
    stressed-syllable onset** (a pause in a movement, not a standstill: above the BC
    threshold), **and its peaks midway between consecutive beats**; nothing moves
    fast in pauses.
  * **Speaker style from the voice**: how far the hands rise and spread while talking
    (the phrase posture below) is the speaker's gesture space, ``gesture_space(f0)`` = 1.5
    at the deepest voice (85 Hz) down to 0.5 at the highest (150 Hz), so the audio tells a
    model how this speaker gestures. An earlier corpus drew a per-speaker loop size
    independently of the voice: no model could learn it, and held-out FGD could not tell a
    model that follows the audio from real motion of other speakers. The loops themselves
    (which carry the beats) keep one size: scaling them moved a small gesturer's beat minima
    below BC's 0.3 x mean-speed threshold (ground-truth BC 0.47). Voices stay at 85-150 Hz:
    at 190-210 Hz librosa also fired on ~30 unstressed syllables per 24 s file (vs ~10).
  * **Phrase posture**: hands rise (0.4 s ramps, done 0.3 s before the phrase's first
    beat) while a phrase is voiced and return to rest in pauses; the head turns slowly during a phrase, alternating sides.
  * Idle sway of hips/spine/head/legs (independent of the audio): small sinusoids of
    0.25-0.47 Hz, so a period (2-4 s) fits in the demo model's 4 s window. An earlier
    corpus swayed at 0.04-0.13 Hz (8-25 s periods): a 4 s-window model can only guess a
    random offset per window there: its held-out FGD was 1.15-1.83 over training runs,
    and 0.33 with those 11 channels replaced by the real ones. Amplitudes keep the sway's
    speed (amplitude x frequency) as before, below the gesture's at the beats.
On the demo corpus (40 + 6 files, seed 0) the held-out files score BC 0.794 at 20 fps over
the upper-body joints with their own motion and 0.604 with the motion of training files
(`python -m gesture_jax.evaluate`; tests/test_synthetic.py checks the gap on a smaller
corpus). The sidecar ``*.onsets.json`` lists every syllable
onset, its stress, the beats (stressed onsets) and phrase spans, in seconds.
"""
from __future__ import annotations

import io
import json
import os
import wave
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gesture_jax import storage
from gesture_jax.motion.bvh import BVH, Skeleton, write_bvh

SAMPLE_RATE = 16000
SOURCE_FPS = 30                 # BVH frame rate (the pipeline resamples to data.fps)
BEAT_SIGMA_S = 0.15             # width of the slow-down of the gesture phase around a beat
CYCLE_HZ = 0.9                  # gesture loops per second at full phase speed
HEAD_TURN_DEG_PER_S = 12.0      # head yaw speed while talking (alternating per phrase)
MIN_BEAT_GAP_S = 0.75           # stressed syllables (gesture beats) at least this far apart
UNSTRESSED_GAIN = 0.5           # loudness of unstressed syllables relative to stressed ones
F0_RANGE = (85.0, 150.0)        # speaker pitch (Hz), uniform over speakers
SPACE_RANGE = (0.5, 1.5)        # gesture space: SPACE_RANGE[1] at the deepest voice, [0] at the highest
DEFAULTS = {"num_train": 10, "num_test": 3, "duration_s": 24.0, "seed": 0}

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
    stress: float    # 1.0 (stressed: a beat) or UNSTRESSED_GAIN
    phrase: int
    foot: int        # syllables of one foot are voiced continuously, the first one stressed


def plan_syllables(rng: np.random.Generator, duration_s: float) -> tuple[list[Syllable], list[tuple[float, float]]]:
    """Phrases of feet of syllables, separated by pauses, filling [0.6, duration_s - 0.6] s.

    A foot is a stressed syllable followed by unstressed ones, voiced without a break and
    at least ``MIN_BEAT_GAP_S`` long with the short silence after it (so beats, one per
    foot, are 0.75-1.2 s apart, like speech beats); feet are separated by 0.08-0.2 s of
    silence, phrases by 0.6-1.3 s.
    """
    syl: list[Syllable] = []
    phrases: list[tuple[float, float]] = []
    t = 0.6 + rng.uniform(0.0, 0.3)
    foot = 0
    while True:
        n_feet = int(rng.integers(2, 6))
        plan = []  # per foot: syllable durations, gap after
        for _ in range(n_feet):
            gap = float(rng.uniform(0.08, 0.2))
            durs = [float(rng.uniform(0.16, 0.28))]
            while sum(durs) + gap < MIN_BEAT_GAP_S or (len(durs) < 4 and rng.random() < 0.25):
                durs.append(float(rng.uniform(0.13, 0.24)))
            plan.append((durs, gap))
        total = sum(sum(d) + g for d, g in plan) - plan[-1][1]
        if t + total > duration_s - 0.6:
            break
        start = t
        for durs, gap in plan:
            for k, d in enumerate(durs):
                syl.append(Syllable(round(t, 6), d, 1.0 if k == 0 else UNSTRESSED_GAIN, len(phrases), foot))
                t += d
            foot += 1
            t += gap
        t -= plan[-1][1]
        phrases.append((start, t))
        t += rng.uniform(0.6, 1.3)
    return syl, phrases


def gesture_space(base_f0: float) -> float:
    """The speaker's gesture space (how far the hands rise while talking) from their voice.

    Why tie it to the voice: a per-speaker style that the audio does not reveal is noise no
    model can learn, and it makes FGD unable to tell a model that follows the audio from real
    motion of other speakers (both are draws from the same marginal). Persona-Gestor's premise
    is that the speech carries the speaker's style; here it does, through the pitch: deep
    voices gesture high and wide.
    """
    u = (float(base_f0) - F0_RANGE[0]) / (F0_RANGE[1] - F0_RANGE[0])
    return SPACE_RANGE[1] - (SPACE_RANGE[1] - SPACE_RANGE[0]) * min(max(u, 0.0), 1.0)


def synthesize_audio(rng: np.random.Generator, syllables: Sequence[Syllable],
                     phrases: Sequence[tuple[float, float]], duration_s: float,
                     base_f0: float) -> np.ndarray:
    """Speech-like waveform [S] float32 in [-1, 1] at SAMPLE_RATE (see module docstring)."""
    sr = SAMPLE_RATE
    n = int(round(duration_s * sr))
    out = rng.normal(0.0, 10 ** (-55 / 20), n)  # quiet noise floor
    feet: dict[int, list[Syllable]] = {}
    for s in syllables:
        feet.setdefault(s.foot, []).append(s)
    for sy in feet.values():
        ps, pe = phrases[sy[0].phrase]
        i0 = int(round(sy[0].onset * sr))
        dur = sy[-1].onset + sy[-1].duration - sy[0].onset
        m = min(int(round(dur * sr)), n - i0)
        t = np.arange(m) / sr                                   # time from the foot's onset
        rel = np.array([s.onset - sy[0].onset for s in sy])     # syllable starts in the foot
        d = np.array([s.duration for s in sy])
        k = np.clip(np.searchsorted(rel, t, side="right") - 1, 0, len(sy) - 1)  # syllable of each sample
        u = np.clip((t - rel[k]) / d[k], 0.0, 1.0)                 # position inside the syllable, 0..1
        # pitch: phrase declination (-15 %) and a rise-fall accent on the stressed syllable
        decl = 1.0 - 0.15 * (sy[0].onset + t - ps) / max(pe - ps, 1e-3)
        f0 = base_f0 * decl * (1.0 + 0.12 * (k == 0) * np.sin(np.pi * np.clip(t / d[0], 0, 1)))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        # two formants per syllable (a vowel), glided between syllable centres
        centres = rel + d / 2
        f1 = np.interp(t, centres, rng.uniform(300, 850, len(sy)))
        f2 = np.interp(t, centres, rng.uniform(900, 2400, len(sy)))
        wave_ = np.zeros(m)
        for h in range(1, int(4000 // f0.max()) + 1):
            fh = h * f0
            amp = (np.exp(-0.5 * ((fh - f1) / 120.0) ** 2) + 0.6 * np.exp(-0.5 * ((fh - f2) / 180.0) ** 2)
                   + 0.15 / h)
            wave_ += amp * np.sin(h * phase)
        # loudness: stressed syllable 1, unstressed UNSTRESSED_GAIN, smooth dips (no silence)
        # between syllables; a sharp 10 ms attack after a consonant-like noise burst at the
        # foot's onset (the audible beat) and an exponential release at its end. The dips are
        # raised-cosine (sin^2): sin^0.5 rose steeply at each syllable start, which librosa's
        # detector took for more onsets (one 190 Hz file: 33 -> 26 of its 59 unstressed syllables)
        gain = np.where(k == 0, 1.0, UNSTRESSED_GAIN) * (0.6 + 0.4 * np.sin(np.pi * u) ** 2)
        attack = 0.5 - 0.5 * np.cos(np.pi * np.minimum(t / 0.010, 1.0))
        release = np.exp(-2.5 * np.maximum(t - (dur - 0.4 * d[-1]), 0) / d[-1])
        burst_n = min(int(0.015 * sr), m)
        burst = np.zeros(m)
        burst[:burst_n] = rng.normal(0, 0.25, burst_n) * np.hanning(burst_n)
        out[i0:i0 + m] += gain * attack * release * wave_ / 3.0 + burst
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
                      phrases: Sequence[tuple[float, float]], duration_s: float,
                      space: float = 1.0) -> np.ndarray:
    """Channel values [N, C] at SOURCE_FPS (degrees / cm) driven by the syllable plan.

    space: the speaker's gesture space (`gesture_space` of their voice).
    """
    n = int(round(duration_s * SOURCE_FPS))
    t = np.arange(n) / SOURCE_FPS
    beats = np.array([s.onset for s in syllables if s.stress > 0.5])   # stressed onsets
    # posture (hands up while talking) is reached 0.3 s before the phrase's first beat
    talk = _smooth_steps(t, [(a - 0.5, b + 0.1) for a, b in phrases], 0.4)
    # Gesture phase: while a phrase is voiced (from a 0.4 s preparation before it) the hands
    # circle continuously; the phase speed dips to 25 % at every beat (a Gaussian dip of
    # width BEAT_SIGMA_S), so hand and head speed have their minima exactly at the beats and
    # their peaks between them, and never stop inside a phrase.
    gate = _smooth_steps(t, [(a - 0.35, b + 0.2) for a, b in phrases], 0.3)
    slow = 1.0 - 0.75 * np.minimum(_gauss(t, beats, np.ones(len(beats)), BEAT_SIGMA_S), 1.0)
    phase = 2 * np.pi * CYCLE_HZ * np.cumsum(gate * slow) / SOURCE_FPS
    direction = np.zeros_like(t)  # head turns one way per phrase, alternating
    for p_i, (a, b) in enumerate(phrases):
        direction += (1.0 if p_i % 2 == 0 else -1.0) * _smooth_steps(t, [(a - 0.35, b + 0.2)], 0.3)
    head_turn = np.cumsum(direction * slow) / SOURCE_FPS * HEAD_TURN_DEG_PER_S
    sway = lambda f, a: a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))  # noqa: E731

    rot = {name: np.zeros((n, 3)) for name in skel.names}  # per joint (Z, X, Y) degrees
    root_pos = np.stack([sway(0.25, 0.4), 95.0 + sway(0.45, 0.1), sway(0.3, 0.35)], 1)
    rot["Hips"][:, 2] = sway(0.27, 0.9)
    c, s_ = np.cos(phase), np.sin(phase)
    # the torso and neck join the loop a little (every upper-body joint carries the beats)
    rot["Spine"][:, 0] = 0.8 * talk * c
    rot["Spine"][:, 1] = 3.0 + sway(0.37, 0.36) + 0.8 * talk * s_
    rot["Spine2"][:, 0] = sway(0.31, 0.29)
    rot["Neck"][:, 0] = 3.0 * talk * c
    rot["Neck"][:, 1] = 4.0 + 3.0 * talk * s_
    rot["Head"][:, 1] = -2.0 + 4.0 * talk * np.sin(phase + 0.5) + sway(0.47, 0.28)
    rot["Head"][:, 2] = head_turn + sway(0.29, 0.52)
    # arms: rest pose lowered 75 deg from the T-pose, elbows bent; phrases raise the hands;
    # the gesture phase moves each hand on a loop (shoulder lift x elbow flexion)
    rot["RightArm"][:, 0] = 75.0 - 12.0 * space * talk - 9.0 * talk * (1.0 + s_)
    rot["LeftArm"][:, 0] = -(75.0 - 10.0 * space * talk - 6.0 * talk * (1.0 + c))
    # Y (applied first, before the lowering Z) swings the upper arm forward: the elbows loop too
    rot["RightArm"][:, 2] = -10.0 * space * talk + 10.0 * talk * c
    rot["LeftArm"][:, 2] = 10.0 * space * talk - 7.0 * talk * s_
    rot["RightForeArm"][:, 2] = 40.0 + 20.0 * space * talk + 16.0 * talk * c
    rot["LeftForeArm"][:, 2] = -(40.0 + 15.0 * space * talk + 11.0 * talk * -s_)
    rot["RightHand"][:, 1] = -6.0 * talk * s_
    rot["LeftHand"][:, 1] = -6.0 * talk * c
    for side, sgn in (("Right", 1.0), ("Left", -1.0)):
        rot[f"{side}Shoulder"][:, 0] = sgn * (2.0 * talk + sway(0.33, 0.12))
        rot[f"{side}UpLeg"][:, 1] = sway(0.26, 0.19)
        rot[f"{side}Leg"][:, 1] = -2.0 + sway(0.3, 0.17)
        rot[f"{side}Foot"][:, 1] = sway(0.34, 0.074)

    cols = []
    for j, name in enumerate(skel.names):
        if skel.parents[j] < 0:
            cols.append(root_pos)
        cols.append(rot[name])
    return np.concatenate(cols, axis=1)


def wav_bytes(wave_f32: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV file bytes (stdlib `wave`: no timestamps, so bytes depend only on samples)."""
    pcm = np.clip(np.round(wave_f32 * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike, wave_f32: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write :func:`wav_bytes` to ``path`` (local or bucket), whole or not at all."""
    storage.write_atomic(path, wav_bytes(wave_f32, sr))


def generate_file(out_dir: str | os.PathLike, stem: str, seed: int, duration_s: float) -> dict:
    """Write ``stem``.wav/.bvh/.onsets.json into ``out_dir``; returns the sidecar dict."""
    out_dir = storage.path(out_dir)
    rng = np.random.default_rng(seed)
    skel = make_skeleton()
    syllables, phrases = plan_syllables(rng, duration_s)
    base_f0 = float(rng.uniform(*F0_RANGE))
    space = gesture_space(base_f0)
    audio = synthesize_audio(rng, syllables, phrases, duration_s, base_f0)
    frames = synthesize_motion(rng, skel, syllables, phrases, duration_s, space)
    write_wav(out_dir / f"{stem}.wav", audio)
    write_bvh(out_dir / f"{stem}.bvh", BVH(skel, frames, 1.0 / SOURCE_FPS))
    side = {"onsets_s": [s.onset for s in syllables], "stress": [s.stress for s in syllables],
            "beats_s": [s.onset for s in syllables if s.stress > 0.5],
            "phrases_s": [[round(a, 6), round(b, 6)] for a, b in phrases],
            "beat_sigma_s": BEAT_SIGMA_S, "source_fps": SOURCE_FPS, "sample_rate": SAMPLE_RATE,
            "cycle_hz": CYCLE_HZ, "base_f0_hz": round(base_f0, 3), "gesture_space": round(space, 4),
            "design": "upper-body joint speed has a local minimum at every beat (stressed-syllable onset) "
                      "and its peak midway between beats; see data_prep/synthetic.py"}
    storage.write_atomic(out_dir / f"{stem}.onsets.json", json.dumps(side, indent=1) + "\n")
    return side


def generate_corpus(out_dir: str | os.PathLike, *, num_train: int = DEFAULTS["num_train"],
                    num_test: int = DEFAULTS["num_test"], duration_s: float = DEFAULTS["duration_s"],
                    seed: int = DEFAULTS["seed"]) -> list[str]:
    """Write the whole corpus (local folder or bucket); returns the file stems. File i uses
    seed (seed, i) only."""
    out = storage.path(out_dir)
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
