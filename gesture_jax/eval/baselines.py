"""Reference sets scored by the same metrics, so a model's numbers have context.

- ground_truth:  the held-out motion itself (FGD 0 by construction; BC and kinematics of
                 natural motion with its own audio: the target).
- mismatched:    natural motion paired with the wrong audio: file i gets the motion of another
                 recording, fitted to file i's length. By default (the evaluate CLI) the other
                 recordings are training-split files, picked evenly over the sorted training list
                 (`pick_others`); without a pool, file i+1 of the same split (cyclically).
                 Natural kinematics, no audio alignment: a model must beat this on BC to show it
                 listens to the audio, and on FGD to show its motion is as close to the held-out
                 motion as other real recordings are.
- mean_pose:     the training set's mean pose held still (no motion at all).
- random_noise:  standard-normal motion features (the standardized space the model samples
                 in), turned into positions by the motion pipeline's inverse: valid skeletons,
                 no temporal structure.
All are deterministic given their inputs and seed.

Why other recordings and not the other held-out files: FGD compares distributions, so the
held-out windows reassigned to other held-out audio are the same set of windows, FGD ~0 by
construction (equal lengths), which no model can beat and which says nothing. Motion of
other recordings of the same dataset measures the natural spread between recordings: a
model below it generates motion closer to this audio's ground truth than real motion made
for other speech.

BC rewards many speed minima: `random_noise` moves every upper-body joint independently every
frame, so some joint has a minimum within sigma of almost any onset. On the 6 held-out demo
files it scores 0.69-0.70 against ground truth 0.79 and mismatched 0.60 (heading-free
positions), while its jerk is ~140x the ground truth's and its speed-histogram distance 0.48
(ground truth 0). Read BC next to jerk and the speed histogram.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

BASELINES = ("ground_truth", "mismatched", "mean_pose", "random_noise")


def fit_length(clip: np.ndarray, length: int) -> np.ndarray:
    """Crop, or extend by playing back and forth (no jump at the joins), to `length` frames."""
    if clip.shape[0] >= length:
        return clip[:length]
    if clip.shape[0] < 2:
        return np.repeat(clip[:1], length, axis=0)
    period = np.concatenate([clip, clip[-2:0:-1]])  # forward then backward, without repeating ends
    reps = -(-length // period.shape[0])
    return np.concatenate([period] * reps)[:length]


def pick_others(num_files: int, num_pool: int) -> list[int]:
    """Indices into a sorted pool of other recordings for num_files files: evenly spread
    (for BEAT-like sorted ids, across speakers), distinct while the pool is large enough."""
    if num_pool <= 0:
        return []
    return [int((i + 0.5) * num_pool / num_files) % num_pool for i in range(num_files)]


def mismatched(real: Sequence[np.ndarray], pool: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Motion of other recordings fitted to each file's length.

    pool given (clips of other recordings, e.g. the training split): file i gets
    pool[pick_others(...)[i]]. No pool: file i gets file (i+1)'s motion; one file: its time reversal.
    """
    if pool:
        idx = pick_others(len(real), len(pool))
        return [fit_length(pool[j], c.shape[0]) for j, c in zip(idx, real)]
    n = len(real)
    if n == 1:
        return [np.ascontiguousarray(real[0][::-1])]
    return [fit_length(real[(i + 1) % n], real[i].shape[0]) for i in range(n)]


def mean_pose(real: Sequence[np.ndarray], pose: np.ndarray) -> list[np.ndarray]:
    """The pose [J, 3] held for every file's length."""
    pose = np.asarray(pose, np.float64)
    return [np.repeat(pose[None], c.shape[0], axis=0) for c in real]


def random_noise(real: Sequence[np.ndarray], feature_dim: int,
                 features_to_positions: Callable[[np.ndarray], np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """N(0, 1) motion features [N_i, F] per file -> positions via the pipeline's inverse.

    features_to_positions must return [N_i, J, 3] at the evaluation frame rate.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    out = []
    for c in real:
        feats = rng.standard_normal((c.shape[0], feature_dim)).astype(np.float32)
        pos = np.asarray(features_to_positions(feats), np.float64)
        if pos.shape[0] != c.shape[0]:
            pos = fit_length(pos, c.shape[0])
        out.append(pos)
    return out
