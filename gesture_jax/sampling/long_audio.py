"""Audio of any length from a fixed-window model, without seams: overlapping windows fused at every step.

The denoiser sees fixed windows of T frames. The reference cuts a file into disjoint
windows, samples them independently and concatenates them, so the motion jumps at every
border. Here the sample lives on one timeline per file (and per sample); at every solver
step the timeline is cut into overlapping windows (stride T - overlap; the last window is
aligned to the end), the model estimates clean motion x0 in every window, and the
estimates are merged back onto the timeline with raised-cosine cross-fade weights over each
overlap (weights of the two windows sum to 1 there). The solver then advances the single
timeline with that merged x0 and one noise draw per frame.

Why this rather than sequential inpainting (sampling window k+1 with its first frames
replaced by a re-noised copy of window k's result at each step): both make the overlap
consistent, but inpainting conditions only forwards, runs the windows one after another
(n_windows x steps model calls in sequence) and is known to leave a discontinuity at the
edge of the pasted region when the model's estimate disagrees with it. Fusing x0 every
step (MultiDiffusion, Bar-Tal et al. 2023; EDGE's long-form dance uses the same
share-the-overlap idea) lets neighbouring windows negotiate the overlap in both
directions, keeps every window of every file in one batch (so the whole loop stays one
jitted `lax.scan`), and because each window's x_t in the overlap is literally the same
array, the final estimates agree there and the cross-fade has nothing left to hide.

Where the borders go (`snap_s`, default 0.5 s): fusion leaves no jump at a border, and on
16 samples of a 70 s file the demo model's p99 joint speed at regular 2 s-overlap borders
is within 7% of the rest; but a border frame is still special (there one window's weight
is ~0, so it rests on fewer estimates than frames inside an overlap), and any
disagreement the fusion could not remove is least visible when nothing moves fast. So,
as an editor cuts on stillness, each border may move by at most `snap_s` (and at most a
quarter of the overlap, so every overlap keeps at least half its length) to where the
motion is slowest. Where that is comes from a short pre-pass (generate.py: the same seed,
`snap_steps` DPM-Solver++ steps on the regular grid, joint speed by forward kinematics);
a dynamic program then places all borders of a timeline together (each window has two:
its start and its end). Measured on an earlier demo model (16 samples, 70 s): p99 at
borders / elsewhere 1.07 on the regular grid, 0.73 snapped (the current one, 4 samples:
0.99 / 0.68). Disjoint windows cannot move (their borders must tile) and still show their
6-8x jumps, so the check still sees real seams (all without the smooth_sigma post-filter).
The test tests/test_generate_trained.py checks the seam criterion (joint-speed 99th
percentile at window borders no higher than elsewhere) on a trained demo model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gesture_jax.errors import UserError
from gesture_jax.sampling.samplers import X0Fn

# (x_windows [W, T, F], t int32 scalar) -> x0 estimates [W, T, F]
WindowX0Fn = Callable[[jax.Array, jax.Array], jax.Array]


class WindowPlanError(UserError, ValueError):
    """Window geometry that cannot cover the requested timelines."""


@dataclass(frozen=True)
class WindowPlan:
    """Where every window of every timeline sits on one flat, concatenated timeline.

    lengths [S]: frames of each timeline (each >= window); offsets [S]: its start on the flat
    timeline; starts [W]: flat start of each window; local_starts [W]: start within its own
    timeline; timeline [W]: which timeline a window belongs to; weights [T]: cross-fade.
    """
    window: int
    overlap: int
    lengths: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray
    local_starts: np.ndarray
    timeline: np.ndarray
    weights: np.ndarray

    @property
    def total(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_windows(self) -> int:
        return int(self.starts.shape[0])

    def indices(self) -> np.ndarray:
        """Flat frame index of every window frame, int32 [W, T]."""
        return (self.starts[:, None] + np.arange(self.window)[None, :]).astype(np.int32)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Cuts a flat [total, ...] array back into per-timeline arrays."""
        return [flat[o:o + n] for o, n in zip(self.offsets, self.lengths)]

    def border_frames(self, s: int) -> np.ndarray:
        """Frames of timeline s where a window begins or ends inside it (the seams of the
        reference's disjoint-window scheme), for seam checks."""
        sel = self.timeline == s
        n = int(self.lengths[s])
        b = np.concatenate([self.local_starts[sel], self.local_starts[sel] + self.window])
        return np.unique(b[(b > 0) & (b < n)])


def crossfade_weights(window: int, overlap: int) -> np.ndarray:
    """float32 [T]: raised-cosine ramps of `overlap` frames at both ends, 1 in between.

    Over an overlap of exactly `overlap` frames the falling ramp of one window and the
    rising ramp of the next sum to 1; where more windows overlap (the end-aligned last
    window) the fusion divides by the summed weight anyway. Weights never reach 0, so the
    first and last frames of a timeline, covered by one window, stay defined.
    Why raised cosine rather than linear: blending estimates A and B that differ by D adds
    w'(t) * D to the velocity; a linear ramp's w' jumps from 0 to 1/overlap at the window
    borders, the cosine's starts and ends at 0.
    """
    j = np.arange(window, dtype=np.float64)
    if overlap <= 0:
        return np.ones(window, np.float32)
    up = np.clip((j + 0.5) / overlap, 0.0, 1.0)
    down = np.clip((window - 0.5 - j) / overlap, 0.0, 1.0)
    w = (0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 - 0.5 * np.cos(np.pi * down))
    return w.astype(np.float32)


def window_starts(length: int, window: int, overlap: int) -> np.ndarray:
    """Starts of the windows covering [0, length): stride window - overlap, last one end-aligned."""
    if length < window:
        raise WindowPlanError(f"a timeline of {length} frames is shorter than the model window "
                              f"({window}); pad the input to at least one window first")
    if not 0 <= overlap < window:
        raise WindowPlanError(f"overlap must be in [0, window={window}), got {overlap}")
    stride = window - overlap
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return np.asarray(starts, np.int64)


def snap_reach(overlap: int, snap_frames: int) -> int:
    """How far a border may move: `snap_frames`, but at most a quarter of the overlap."""
    return max(0, min(int(snap_frames), int(overlap) // 4))


def snapped_window_starts(length: int, window: int, overlap: int, cost: np.ndarray | None,
                          snap_frames: int) -> np.ndarray:
    """`window_starts` with every interior start moved by at most `snap_reach` frames so that
    the window borders (starts and ends inside the timeline) fall on the cheapest frames.

    cost [length]: price of a border at each frame (generate.py: expected joint speed).
    Minimizes the summed cost of all borders by dynamic programming over the windows,
    keeping the first window at 0, the last one end-aligned, starts increasing and every
    overlap at least `overlap - 2 * reach`. Without cost, overlap or reach: the regular grid.
    """
    regular = window_starts(length, window, overlap)
    reach = snap_reach(overlap, snap_frames)
    if cost is None or reach == 0 or regular.shape[0] <= 2:
        return regular
    act = np.asarray(cost, np.float64)
    if act.shape != (length,) or not np.isfinite(act).all():
        raise WindowPlanError(f"border cost must be {length} finite values, got shape {act.shape}")
    max_stride = window - max(1, overlap - 2 * reach)

    def border_cost(s: np.ndarray) -> np.ndarray:
        end = s + window
        return np.where(s > 0, act[np.minimum(s, length - 1)], 0.0) + np.where(end < length, act[np.minimum(end, length - 1)], 0.0)

    last = length - window
    cands = [np.array([0])]
    for g in regular[1:-1]:
        cands.append(np.arange(max(1, g - reach), min(last - 1, g + reach) + 1))
    cands.append(np.array([last]))
    best = [border_cost(cands[0])]
    back = []
    for k in range(1, len(cands)):
        c, p = cands[k], cands[k - 1]
        gap = c[:, None] - p[None, :]  # [C, P]
        total = np.where((gap > 0) & (gap <= max_stride), best[-1][None, :], np.inf)
        arg = np.argmin(total, axis=1)
        prev_best = total[np.arange(c.shape[0]), arg]
        best.append(prev_best + border_cost(c))
        back.append(arg)
    if not np.isfinite(best[-1]).any():  # cannot happen with reach <= overlap / 4; keep the grid
        return regular
    j = int(np.argmin(best[-1]))
    chosen = [int(cands[-1][j])]
    for k in range(len(cands) - 1, 0, -1):
        j = int(back[k - 1][j])
        chosen.append(int(cands[k - 1][j]))
    return np.asarray(chosen[::-1], np.int64)


def plan_windows(lengths: Sequence[int], window: int, overlap: int,
                 cost: Sequence[np.ndarray | None] | None = None, snap_frames: int = 0) -> WindowPlan:
    """Window layout for timelines of the given frame counts (each >= window).

    cost[s]: optional [lengths[s]] price of a border at each frame of timeline s; with
    snap_frames > 0 its borders move to cheap frames (`snapped_window_starts`).
    """
    lengths = np.asarray([int(n) for n in lengths], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    if cost is not None and len(cost) != len(lengths):
        raise WindowPlanError(f"{len(cost)} border-cost curves for {len(lengths)} timelines")
    starts, local, owner = [], [], []
    for s, (n, o) in enumerate(zip(lengths, offsets)):
        st = snapped_window_starts(int(n), window, overlap, None if cost is None else cost[s], snap_frames)
        local.append(st)
        starts.append(st + o)
        owner.append(np.full(len(st), s))
    return WindowPlan(window=int(window), overlap=int(overlap), lengths=lengths, offsets=offsets,
                      starts=np.concatenate(starts), local_starts=np.concatenate(local),
                      timeline=np.concatenate(owner), weights=crossfade_weights(window, overlap))


def gather_windows(features: Sequence[np.ndarray], plan: WindowPlan, frames_per_window: int,
                   rate_ratio: float = 1.0) -> np.ndarray:
    """Per-window slices of per-timeline conditioning features: [W, frames_per_window, A].

    features[s]: [L_s, A] at `rate_ratio` times the motion frame rate (e.g. 2.5 for 50 Hz
    audio features under 20 fps motion); frames_per_window: the audio frames of one window
    (gesture_jax.audio.frames.audio_frames_for: 999 for 400 frames at 2.5). A window starting
    at motion frame k takes feature frames from floor(k * rate_ratio), as the training records
    do (audio_window). A window that would read past the end of the features is moved back to
    end there, and a feature sequence shorter than one window is padded by repeating its last frame.
    """
    from gesture_jax.audio.frames import audio_start

    out = []
    for s, ls in zip(plan.timeline, plan.local_starts):
        f = features[int(s)]
        a0 = audio_start(int(ls), 1.0, rate_ratio)
        a0 = max(0, min(a0, f.shape[0] - frames_per_window))
        seg = f[a0:a0 + frames_per_window]
        if seg.shape[0] < frames_per_window:
            pad = np.repeat(seg[-1:], frames_per_window - seg.shape[0], axis=0)
            seg = np.concatenate([seg, pad], axis=0)
        out.append(seg)
    return np.stack(out)


def smooth_timelines(flat: np.ndarray, plan: WindowPlan, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time (std `sigma` frames) of each timeline of a flat [total, F]
    array on its own (edges repeat the end frame; no blur across files or samples). A clip
    shorter than one window was padded to it, so its last ~3 sigma kept frames also see
    motion made for the padding.

    Why: a small x0 network returns even a nearly clean input with a little frame-to-frame
    error of its own (demo model, ground truth noised at t <= 30 of 1000: high-frequency
    energy 1.4x the ground truth's), which shows as jerk (1.45x) and moves speed minima off
    the beats. Sampling cannot remove what the network adds at the last step; sigma = 0.75
    frames takes the jerk to the ground truth's level and changes nothing slower than a few
    frames. Off by default (the reference does not smooth).
    """
    from scipy.ndimage import gaussian_filter1d

    if sigma <= 0:
        return flat
    parts = [gaussian_filter1d(np.asarray(x, np.float64), float(sigma), axis=0, mode="nearest").astype(x.dtype)
             for x in plan.split(np.asarray(flat))]
    return np.concatenate(parts, axis=0)


def fusion_arrays(plan: WindowPlan) -> tuple[np.ndarray, np.ndarray]:
    """(idx int32 [W, T], w float32 [W, T]): what fused_x0_fn needs of a plan, as plain arrays,
    so a jitted sampler can take them as arguments and be reused for any layout of one shape."""
    return plan.indices(), np.ascontiguousarray(np.broadcast_to(plan.weights, (plan.num_windows, plan.window)))


def fused_x0_fn(window_x0: WindowX0Fn, plan: WindowPlan | tuple[jax.Array, jax.Array]) -> X0Fn:
    """X0Fn on the flat timeline [total, F]: cut into windows, estimate, cross-fade back.

    plan: a WindowPlan, or its fusion_arrays (possibly traced jit arguments).
    """
    idx, w = fusion_arrays(plan) if isinstance(plan, WindowPlan) else plan
    idx, w = jnp.asarray(idx), jnp.asarray(w, jnp.float32)

    def x0_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        total = x.shape[0]
        den = jnp.zeros((total,), jnp.float32).at[idx].add(w)  # [total] summed weights
        xw = x[idx]  # [W, T, F]
        x0w = window_x0(xw, t)  # [W, T, F]
        num = jnp.zeros((total,) + x.shape[1:], x0w.dtype).at[idx].add(w[..., None].astype(x0w.dtype) * x0w)
        return num / den.reshape((total,) + (1,) * (x.ndim - 1)).astype(x0w.dtype)

    return x0_fn
