"""Beat consistency on synthetic clicks and motion whose speed minima are placed at known times."""
import numpy as np
import pytest
from scipy.special import erf

from gesture_jax.eval import beat

SR, FPS = 16000, 20


def beat_times(rng, dur, lo=0.8, hi=1.6):
    """Irregular beat times on the frame grid (so a speed minimum can sit exactly on one)."""
    t, out = 1.0, []
    while t < dur - 1.0:
        out.append(round(t * FPS) / FPS)
        t += rng.uniform(lo, hi)
    return np.array(out)


def clicks(times, dur):
    """Audio: a 30 ms decaying 1 kHz burst at every time."""
    wave = np.zeros(int(dur * SR), np.float32)
    k = np.arange(int(0.03 * SR))
    burst = (np.sin(2 * np.pi * 1000 * k / SR) * np.exp(-k / (0.006 * SR))).astype(np.float32)
    for t in times:
        i = int(round(t * SR))
        wave[i:i + len(burst)] += burst[:len(wave) - i]
    return wave


def motion(times, dur, joints=4, base=2.0, depth=1.0, width=0.1):
    """Joints moving along x with speed base - depth*Σ gauss(t - t_k): minima (1 = half the
    mean, above the 0.3 threshold) exactly at the beats. Position is the speed's integral in
    closed form, so central differences are symmetric about every beat."""
    t = np.arange(int(dur * FPS)) / FPS
    path = base * t - depth * sum(width * np.sqrt(np.pi / 2) * (1 + erf((t - tk) / (np.sqrt(2) * width)))
                                  for tk in times)
    pos = np.zeros((len(t), joints, 3))
    pos[:, :, 0] = path[:, None]
    pos[:, :, 1] = np.arange(joints)[None, :]
    return pos


@pytest.fixture(scope="module")
def scene():
    dur = 30.0
    times = beat_times(np.random.default_rng(0), dur)
    m = motion(times, dur)
    return times, clicks(times, dur), m, beat.mean_joint_speed([m], FPS)


def test_bc_of_motion_beats_on_onsets_is_high_and_of_shuffled_motion_low(scene):
    times, wave, m, mean_speed = scene
    aligned = beat.beat_consistency(m, wave, FPS, mean_speed)
    assert aligned.score > 0.95, aligned
    # every motion beat found is one of the planted beats inside the unmasked interval
    planted = times[(times > 60 / FPS) & (times < len(m) / FPS - 60 / FPS)] - 60 / FPS
    assert all(np.min(np.abs(planted - b)) < 1e-9 for bj in aligned.beats for b in bj)
    # shuffled: the beats of another draw (same statistics, other times) or the same motion late by 0.5 s
    other = motion(beat_times(np.random.default_rng(1), 30.0), 30.0)
    shuffled = beat.beat_consistency(other, wave, FPS, mean_speed).score
    shifted = beat.beat_consistency(np.roll(m, 10, axis=0), wave, FPS, mean_speed).score
    assert shuffled < aligned.score - 0.25 and shifted < aligned.score - 0.25, (shuffled, shifted)


def test_bc_masking_and_set_weighting(scene):
    times, wave, m, mean_speed = scene
    r = beat.beat_consistency(m, wave, FPS, mean_speed, mask_frames=60)
    assert r.frames == len(m) - 120
    assert r.onsets.min() >= 0 and r.onsets.max() <= r.frames / FPS
    short = beat.beat_consistency(m[:100], wave[:100 * SR // FPS], FPS, mean_speed, mask_frames=60)
    assert np.isnan(short.score) and short.frames == 0  # nothing left after masking
    assert beat.beat_consistency_set([r, short]) == pytest.approx(r.score)
    silent = beat.beat_consistency(m, np.zeros_like(wave), FPS, mean_speed)
    assert np.isnan(silent.score)
    still = beat.beat_consistency(np.repeat(m[:1], len(m), 0), wave, FPS, mean_speed)
    assert still.score == 0.0  # no motion beats: every onset scores exp(-inf)


def test_alignment_score_and_motion_beats():
    assert beat.alignment_score([1.0, 2.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert beat.alignment_score([1.0], [1.3], sigma=0.3) == pytest.approx(np.exp(-0.5))
    assert np.isnan(beat.alignment_score([], [1.0]))
    s = np.full((40, 1), 1.0)
    s[10, 0], s[30, 0] = 0.5, 0.1           # two dips; the second is below the 0.3 threshold
    assert list(beat.motion_beats(s, 0, 40, order=7, threshold=0.3)[0]) == [10]
    assert list(beat.motion_beats(s, 5, 40, order=7, threshold=0.3)[0]) == [5]  # relative to start


def test_joint_speed_differences():
    x = np.zeros((5, 1, 3))
    x[:, 0, 0] = [0.0, 1.0, 3.0, 6.0, 10.0]
    v = beat.joint_speed(x, fps=10)[:, 0]
    assert np.allclose(v, [10.0, 15.0, 25.0, 35.0, 40.0])
