"""The reference's own sampling procedure, to reproduce its outputs next to ours
(``python -m gesture_jax.generate ... --reference_sampling``).

What the reference does at inference, and what this reproduces:
  * every file is cut into consecutive model windows (20 s) starting at 0, W, 2W, ...; all the
    windows of a file are denoised together in one batch (here: all files and samples at once);
  * the audio conditioning of each window is computed once per sample and reused at every step;
  * ancestral DDPM over all T = 1000 training steps with the posterior variance, no guidance, no
    clipping of the clean-data estimate (ours clips |x0| at sample.clip_x0 by default);
  * the windows' motion is concatenated as it comes out: no overlap, no cross-fade, no snapping
    or smoothing (the seams our long-audio sampler removes; they are the point of comparing).
The last window of a file reaches past its end: its audio is padded by repeating the last
feature frame and its motion is cut at the file's end. How the reference treats a file's
incomplete last window is not verified here (its test loader's code was not available).

The reference's input scaler. Its data module standardizes every 20 s waveform window sample by
sample (``input_scaler.sav``: a mean and a scale per sample position, fitted on its training
windows) before WavLM, which therefore runs on each window on its own. A run imported with that
file (``data/reference_input_scaler.npz``) gets the same here: ``window_features`` cuts the wave
into the windows above (the last one zero-padded to a full window), scales each and encodes it
alone, and lays window k's frames where ``window_audio`` reads them. Our own samplers (fused,
overlapping windows at any frame) keep one unscaled pass over the whole file.
"""
from __future__ import annotations

import io
import sys
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from gesture_jax.sampling.options import GenerateError, SamplingOptions
from gesture_jax.storage import Path


def check_options(bundle, opts: SamplingOptions) -> dict[str, Any]:
    """The resolved settings of the reference procedure; options it does not have are errors."""
    from gesture_jax.sampling import windowed

    T = int(bundle.config.diffusion.num_steps)
    clash = []
    if opts.sampler not in (None, "ddpm"):
        clash.append(f"--sampler={opts.sampler}")
    if opts.steps not in (None, T):
        clash.append(f"--steps={opts.steps}")
    for name in ("eta", "overlap_s", "snap_s", "smooth_sigma"):
        v = getattr(opts, name)
        if v not in (None, 0, 0.0):
            clash.append(f"--{name}={v}")
    if opts.guidance not in (None, 1, 1.0):
        clash.append(f"--guidance={opts.guidance}")
    if getattr(bundle, "student", False):
        clash.append("the distilled student")
    if clash:
        raise GenerateError(f"--reference_sampling is the reference's procedure (ancestral DDPM over all {T} steps, "
                            f"windows concatenated, no guidance): it takes no {', '.join(clash)}")
    r = windowed.resolve_options(bundle, replace(opts, sampler="ddpm", steps=T, overlap_s=0.0, snap_s=0.0,
                                                 smooth_sigma=0.0, guidance=1.0, reference_sampling=False))
    return {**r, "overlap": 0, "snap": 0, "smooth": 0.0, "procedure": "reference"}


INPUT_SCALER = "reference_input_scaler.npz"   # in WORKDIR/data/, written by import_reference --scalers


def input_scaler(bundle) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean [S], scale [S]) of the reference's waveform scaler stored with the run, or None."""
    wd = getattr(bundle, "workdir", None)
    path = None if wd is None else Path(wd) / "data" / INPUT_SCALER
    if path is None or not path.is_file():
        return None
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return np.asarray(z["mean"], np.float32), np.asarray(z["scale"], np.float32)


def window_features(bundle, wave: np.ndarray, extractor, scaler: tuple[np.ndarray, np.ndarray]):
    """(features, N) like generate.audio_features, for the reference's procedure with its input
    scaler: window k (motion frames [kW, (k+1)W), samples [k S, (k+1) S), zero-padded) is scaled
    ((x - mean) / scale, per sample position) and encoded on its own; its frames start at
    audio_start(kW), the rest of its block repeats its last frame."""
    from gesture_jax.audio.features import SAMPLE_RATE, feature_rate
    from gesture_jax.audio.frames import audio_frames_for, audio_start

    cfg = bundle.config
    fps = float(cfg.data.fps)
    W = int(round(cfg.data.window_s * fps))
    mean, scale = scaler
    S = int(mean.shape[0])
    if S != int(round(W * SAMPLE_RATE / fps)):
        raise GenerateError(f"the run's input scaler covers {S} samples but a model window is "
                            f"{W * SAMPLE_RATE / fps:g}")
    rate = feature_rate(extractor)
    n = int(np.floor(wave.shape[0] * fps / SAMPLE_RATE))
    k = max(1, -(-n // W))
    ta = audio_frames_for(W, fps, rate)
    blocks = []
    for i in range(k):
        seg = wave[i * S:(i + 1) * S]
        seg = np.concatenate([seg, np.zeros(S - seg.shape[0], np.float32)]) if seg.shape[0] < S else seg
        f = np.asarray(extractor.native((seg - mean) / scale), np.float32)[:ta]       # [Ta, A]
        size = audio_start((i + 1) * W, fps, rate) - audio_start(i * W, fps, rate)
        blocks.append(np.concatenate([f, np.repeat(f[-1:], size - f.shape[0], axis=0)]) if size > f.shape[0] else f)
    return np.concatenate(blocks), n


def window_audio(feats: np.ndarray, frames: int, window: int, audio_window: int, fps: float,
                 audio_rate: float) -> np.ndarray:
    """[K, audio_window, A]: the audio of windows at motion frames 0, W, 2W, ... covering `frames`;
    past the end of the features the last frame repeats."""
    from gesture_jax.audio.frames import audio_start

    k = -(-int(frames) // int(window))
    out = []
    for i in range(k):
        a0 = audio_start(i * window, fps, audio_rate)
        seg = feats[a0:a0 + audio_window]
        if seg.shape[0] < audio_window:
            seg = np.concatenate([seg, np.repeat(feats[-1:], audio_window - seg.shape[0], axis=0)])
        out.append(seg)
    return np.stack(out)


def sample(bundle, features: Sequence[np.ndarray], opts: SamplingOptions, *, progress: bool = True):
    """(timelines, borders) like the windowed sampler: timeline s = file i * num_samples + sample j,
    each [frames, F]; borders: the frames where a window starts."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from tqdm import tqdm

    from gesture_jax.audio.frames import motion_frames_covered
    from gesture_jax.models.diffusion import make_schedule
    from gesture_jax.sampling import samplers, windowed

    r = check_options(bundle, opts)
    W, fps, rate = int(r["window"]), float(r["fps"]), float(r["audio_rate"])
    K = int(opts.num_samples)
    feats = [f for f in features for _ in range(K)]
    lengths = [motion_frames_covered(f.shape[0], fps, rate) for f in feats]
    audio_w = np.concatenate([window_audio(f, n, W, r["audio_window"], fps, rate) for f, n in zip(feats, lengths)])
    counts = [-(-n // W) for n in lengths]
    model = bundle.model
    cfg = bundle.config
    ab = np.asarray(make_schedule(cfg.diffusion).alphas_cumprod, np.float64)   # as the windowed sampler
    coeffs = samplers.sampler_coefficients(ab, "ddpm", int(cfg.diffusion.num_steps))
    graphdef, state = nnx.split(model)
    ab_j = jnp.asarray(ab, jnp.float32)
    prediction = str(cfg.diffusion.prediction)
    bw = int(r["batch_windows"])
    if progress:
        print(f"reference sampling: {len(features)} file(s) x {K} sample(s), {audio_w.shape[0]} windows of {W} "
              f"frames concatenated, DDPM {coeffs.num_steps} steps", file=sys.stderr, flush=True)

    def run(state, audio_w, key):
        m = nnx.merge(graphdef, state)
        cond = windowed._chunked(lambda a: m.condition(a, frames=W, deterministic=True), audio_w, bw)  # once

        def x0_fn(x, t):
            tt = jnp.full((x.shape[0],), t, jnp.int32)
            out = windowed._chunked(lambda xs: m.denoise(xs[0], xs[1], xs[2], deterministic=True), (x, tt, cond), bw)
            return samplers.output_to_x0(out, x, t, ab_j, prediction, None)

        k_init, k_loop = jax.random.split(key)
        x_T = jax.random.normal(k_init, (audio_w.shape[0], W, int(m.motion_dim)), jnp.float32)
        return samplers.sample_loop(x0_fn, coeffs, x_T, k_loop, on_step=_tick)

    with tqdm(total=coeffs.num_steps, desc="ddpm (reference)", unit="step", disable=not progress) as bar:
        _BAR[0] = bar
        try:
            out = np.asarray(jax.jit(run)(state, jnp.asarray(audio_w), jax.random.key(int(opts.seed))))
        finally:
            _BAR[0] = None
    timelines, borders, i = [], [], 0
    for n, c in zip(lengths, counts):
        timelines.append(out[i:i + c].reshape(c * W, -1)[:n])
        borders.append(np.arange(1, c) * W)
        i += c
    return timelines, borders


_BAR: list[Any] = [None]


def _tick(i) -> None:
    if _BAR[0] is not None:
        _BAR[0].update(1)
