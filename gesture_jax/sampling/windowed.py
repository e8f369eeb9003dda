"""Long audio through a window-based diffusion denoiser: one jitted loop for every window.

Shared by the diffusion methods whose model denoises fixed-length windows conditioned on
audio features (Persona-Gestor; the same machinery serves any method whose model exposes
``condition(audio_w)``, ``denoise(x_t, t, cond)``, ``null_condition`` and ``motion_dim``).
Files of any length are sampled as overlapping model windows fused at every solver step
(long_audio.py), all windows of all files and samples in one batch; with snapping, a short
pre-pass moves the window borders to where the motion is slowest.

Audio features are at the rate of the run's data (manifest audio.rate, `audio_rate`): the motion
rate (mel), or WavLM's own 50 Hz (audio.native_rate), when a file of L motion frames has
audio_frames_for(L) feature frames and a window at motion frame k reads the audio_frames_for(T)
from floor(k * rate / fps), exactly as the training records were cut (gesture_jax.audio.frames).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from gesture_jax.sampling.options import GenerateError, SamplingOptions

DEFAULT_STEPS = {"ddim": 50, "dpm-solver++": 20}  # ddpm: every training step (the reference)


def audio_rate(bundle) -> float:
    """Frames/s of the audio features the bundle's model was trained on (its manifest's audio.rate;
    the motion rate for runs prepared before audio could keep its own rate)."""
    from gesture_jax.data.manifest import audio_rate as manifest_audio_rate

    m = bundle.manifest if isinstance(getattr(bundle, "manifest", None), dict) else {}
    return manifest_audio_rate({"fps": float(bundle.config.data.fps), **m})


def resolve_options(bundle, opts: SamplingOptions) -> dict[str, Any]:
    """Fill unset options from the run's config and check them (errors before any audio work).

    Public so evaluation can record exactly the settings generation used."""
    from gesture_jax.sampling.samplers import SAMPLERS, STUDENT, SamplerError, student_timesteps

    cfg = bundle.config
    student = bool(getattr(bundle, "student", False))
    sampler = opts.sampler or (STUDENT if student else cfg.sample.sampler)
    if sampler not in SAMPLERS + (STUDENT,):
        raise GenerateError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS + (STUDENT,))}")
    if (sampler == STUDENT) != student:
        raise GenerateError("--sampler=student samples the run's distilled student, which must be loaded for it "
                            "(generate.load_bundle(RUN, student=True))" if not student else
                            f"--sampler={sampler}: this bundle holds the distilled student, which samples only with "
                            f"--sampler=student (load the run without student=True for the teacher's samplers)")
    T = int(cfg.diffusion.num_steps)
    grid = None
    if sampler == STUDENT:
        dc = cfg.get("distill") or {}
        steps = int(dc.get("steps", 2) if opts.steps is None else opts.steps)
        try:
            grid = tuple(int(t) for t in student_timesteps(T, steps, float(dc.get("mid_frac", 0.5))))
        except SamplerError as e:
            raise GenerateError(f"--steps={steps} with --sampler=student: {e}") from None
    elif opts.steps is not None:
        steps = int(opts.steps)
    elif sampler == "ddpm":
        steps = T
    elif sampler == cfg.sample.sampler and int(cfg.sample.get("steps", 0)) > 0:
        steps = int(cfg.sample.steps)  # the run's own choice for its default sampler
    else:
        steps = DEFAULT_STEPS[sampler]
    if grid is None and not 1 <= steps <= T:
        raise GenerateError(f"--steps={steps} must be between 1 and the model's {T} diffusion steps")
    guidance = float(cfg.sample.guidance if opts.guidance is None else opts.guidance)
    if guidance != 1.0 and float(cfg.train.get("cond_dropout", 0.0)) <= 0.0:
        raise GenerateError(f"--guidance={guidance}: this model was trained without conditioning dropout "
                            "(train.cond_dropout=0), so it has no unconditional branch for classifier-free "
                            "guidance; use --guidance=1")
    if opts.num_samples < 1:
        raise GenerateError(f"--num_samples must be >= 1, got {opts.num_samples}")
    fps = float(cfg.data.fps)
    window = int(round(cfg.data.window_s * fps))
    overlap_s = float(cfg.sample.overlap_s if opts.overlap_s is None else opts.overlap_s)
    overlap = int(round(overlap_s * fps))
    if not 0 <= overlap < window:
        raise GenerateError(f"overlap {overlap_s} s must be shorter than the {cfg.data.window_s} s model window")
    snap_s = float(cfg.sample.get("snap_s", 0.0) if opts.snap_s is None else opts.snap_s)
    if snap_s < 0:
        raise GenerateError(f"snap_s must be >= 0 seconds, got {snap_s}")
    snap_steps = int(cfg.sample.get("snap_steps", 5))
    if snap_s > 0 and snap_steps < 1:
        raise GenerateError(f"sample.snap_steps must be >= 1 when snapping, got {snap_steps}")
    smooth = float(cfg.sample.get("smooth_sigma", 0.0) if opts.smooth_sigma is None else opts.smooth_sigma)
    if not (math.isfinite(smooth) and smooth >= 0):
        raise GenerateError(f"smooth_sigma must be >= 0 frames, got {smooth}")
    from gesture_jax.audio.frames import audio_frames_for

    rate = audio_rate(bundle)
    return dict(sampler=sampler, steps=steps, guidance=guidance, smooth=smooth,
                eta=float(cfg.sample.eta if opts.eta is None else opts.eta), fps=fps, window=window,
                audio_rate=rate, audio_window=audio_frames_for(window, fps, rate),
                overlap=overlap, snap=int(round(snap_s * fps)), snap_steps=snap_steps,
                batch_windows=int(opts.batch_windows or cfg.sample.batch_windows),
                prediction=str(cfg.distill.prediction if grid else cfg.diffusion.prediction), grid=grid,
                clip_x0=float(cfg.sample.get("clip_x0", 20.0)))


def _chunked(f, xs, size: int):
    """f over the leading axis of xs (array or tuple of arrays) in chunks of `size` rows.

    One call when everything fits; otherwise a `lax.map` over zero-padded chunks, which
    bounds activation memory (the reference model at 20 s windows needs ~1 GB per window).
    """
    import jax
    import jax.numpy as jnp

    leaves = xs if isinstance(xs, tuple) else (xs,)
    n = leaves[0].shape[0]
    if n <= size:
        return f(xs)
    chunks = -(-n // size)
    pad = chunks * size - n
    shaped = tuple(jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape((chunks, size) + a.shape[1:])
                   for a in leaves)
    out = jax.lax.map(lambda c: f(c if isinstance(xs, tuple) else c[0]), shaped)
    return out.reshape((chunks * size,) + out.shape[2:])[:n]


# Compiled sampling loops, reused across calls with the same model, options and array shapes.
_COMPILED: dict[tuple, Any] = {}
# The progress bar of the sampling call in flight (the compiled loop's host callback ticks it).
_ACTIVE_BAR: list[Any] = [None]


def _tick(i) -> None:
    bar = _ACTIVE_BAR[0]
    if bar is not None:
        bar.update(1)


def build_sampling_fn(bundle, plan, opts: SamplingOptions = SamplingOptions()):
    """The jitted whole sampling loop for one window layout: fn(state, audio_w, key) -> x0.

    state: nnx.split(bundle.model)[1]; audio_w [W, Ta, A] window audio features (Ta = r["audio_window"]); returns
    the flat timeline [plan.total, F] of standardized motion. Exposed (rather than only
    sample_features) so a benchmark can compile once and time runs separately. The
    underlying jitted function takes the window layout as array arguments and is cached per
    model and options, so files of equal length (other seeds, other clips) reuse its compilation.
    Returns (fn, state, resolved options, SamplerCoefficients).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gesture_jax.models.diffusion import make_schedule
    from gesture_jax.sampling import long_audio, samplers

    r = resolve_options(bundle, opts)
    cfg = bundle.config
    model = bundle.model
    ab = np.asarray(make_schedule(cfg.diffusion).alphas_cumprod, np.float64)
    coeffs = samplers.sampler_coefficients(ab, r["sampler"], r["steps"], eta=r["eta"], ts=r["grid"])
    motion_dim = int(model.motion_dim)
    guided = r["guidance"] != 1.0
    w = r["guidance"]
    bw = max(1, r["batch_windows"])
    graphdef, state = nnx.split(model)
    traced = {k: v for k, v in r.items() if k not in ("smooth", "snap", "snap_steps")}  # used outside the jit
    key_ = (id(model), tuple(sorted(traced.items())), coeffs.ts.tobytes(), coeffs.a.tobytes(), coeffs.b.tobytes(),
            coeffs.c.tobytes(), coeffs.s.tobytes())
    jitted = _COMPILED.get(key_)
    if jitted is None:
        def run(state, audio_w, key, idx, wts, total_like):
            m = nnx.merge(graphdef, state)
            cond = _chunked(lambda a: m.condition(a, deterministic=True, frames=r["window"]), audio_w, bw)  # [W,T,D], once
            null = m.null_condition(1, r["window"]) if guided else None  # [1, T, D]

            def net(x_t, t):  # x_t [W, T, F] -> network output [W, T, F], bw windows per model call
                def chunk(xc):
                    x, c = xc
                    return samplers.guided_denoise(m, x, jnp.full((x.shape[0],), t, jnp.int32), c, null, w)
                return _chunked(chunk, (x_t, cond), bw)

            window_x0 = samplers.model_x0_fn(net, ab, r["prediction"], clip=r["clip_x0"] or None)
            k_init, k_loop = jax.random.split(key)
            x_T = jax.random.normal(k_init, (total_like.shape[0], motion_dim), jnp.float32)
            return samplers.sample_loop(long_audio.fused_x0_fn(window_x0, (idx, wts)), coeffs, x_T, k_loop,
                                        on_step=_tick)

        jitted = _COMPILED[key_] = jax.jit(run)
        if len(_COMPILED) > 16:
            _COMPILED.pop(next(iter(_COMPILED)))
    idx, wts = long_audio.fusion_arrays(plan)
    total_like = np.zeros((plan.total, 0), np.float32)  # carries the timeline length as a shape

    def fn(state, audio_w, key):
        return jitted(state, audio_w, key, idx, wts, total_like)

    fn.lower = lambda state, audio_w, key: jitted.lower(state, audio_w, key, idx, wts, total_like)  # AOT
    fn.layout_args = (idx, wts, total_like)  # what a compiled `fn.lower(...).compile()` also takes
    return fn, state, r, coeffs


def border_cost(bundle, motion: np.ndarray) -> np.ndarray:
    """float64 [N]: mean joint speed into each frame of standardized motion [N, F] (frame 0: the
    speed into frame 1), 3-frame averaged: where a window border is least visible."""
    from gesture_jax.motion.kinematics import bvh_positions

    pos = bvh_positions(bundle.pipeline.inverse(np.asarray(motion)))  # [N, J, 3]
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean(-1)  # [N-1]: frame n -> n+1
    speed = np.concatenate([speed[:1], speed])
    return np.convolve(np.pad(speed, 1, mode="edge"), np.ones(3) / 3, mode="valid")


def _run_plan(bundle, plan, feats, opts: SamplingOptions, progress: bool, desc: str) -> np.ndarray:
    """One jitted sampling loop over every window of `plan`: flat motion [total, F]."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from gesture_jax.sampling import long_audio

    r = resolve_options(bundle, opts)
    audio_w = long_audio.gather_windows(feats, plan, r["audio_window"], r["audio_rate"] / r["fps"])  # [W, Ta, A]
    fn, state, r, coeffs = build_sampling_fn(bundle, plan, opts)
    with tqdm(total=coeffs.num_steps, desc=desc, unit="step", disable=not progress) as bar:
        _ACTIVE_BAR[0] = bar
        try:
            return np.asarray(jax.block_until_ready(fn(state, jnp.asarray(audio_w), jax.random.key(int(opts.seed)))))
        finally:
            _ACTIVE_BAR[0] = None


def sample_timelines(bundle, features: Sequence[np.ndarray], opts: SamplingOptions = SamplingOptions(), *,
                     progress: bool = True):
    """(flat motion [total, F], WindowPlan): every sample of every file on one flat timeline
    (timeline s = file i * num_samples + sample k), and the window layout that produced it.

    features[i]: [L_a, A] at `audio_rate(bundle)`; file i has motion_frames_covered(L_a) motion
    frames (L_a at the motion rate; generate.audio_features gives audio_frames_for(L) for L frames).

    With snapping (cfg.sample.snap_s > 0, an overlap, and more than two windows somewhere) a
    pre-pass of `snap_steps` DPM-Solver++ steps with the same seed on the regular grid finds
    where each timeline moves slowest, and the borders move there (sampling/long_audio.py).
    """
    from gesture_jax.sampling import long_audio

    from gesture_jax.audio.frames import motion_frames_covered

    r = resolve_options(bundle, opts)
    K = int(opts.num_samples)
    feats = [f for f in features for _ in range(K)]
    lengths = [motion_frames_covered(f.shape[0], r["fps"], r["audio_rate"]) for f in feats]
    plan = long_audio.plan_windows(lengths, r["window"], r["overlap"])
    t0 = time.perf_counter()
    if progress:
        print(f"sampling {len(features)} file(s) x {K} sample(s): {plan.num_windows} windows of {r['window']} "
              f"frames, {r['sampler']} {r['steps']} steps"
              + (f", guidance {r['guidance']}" if r["guidance"] != 1.0 else ""), file=sys.stderr, flush=True)
    if long_audio.snap_reach(r["overlap"], r["snap"]) > 0 and int(np.bincount(plan.timeline).max()) > 2:
        pre_steps = min(r["snap_steps"], int(bundle.config.diffusion.num_steps))
        pre_opts = (replace(opts, steps=1) if r["grid"] else  # a student's 1 step is its quick draft
                    replace(opts, sampler="dpm-solver++", steps=pre_steps))
        pre = plan.split(_run_plan(bundle, plan, feats, pre_opts, progress, "placing borders"))
        plan = long_audio.plan_windows(lengths, r["window"], r["overlap"],
                                       cost=[border_cost(bundle, m) for m in pre], snap_frames=r["snap"])
    out = _run_plan(bundle, plan, feats, opts, progress, r["sampler"])
    if r["smooth"] > 0:
        out = long_audio.smooth_timelines(out, plan, r["smooth"])
    if progress:
        print(f"sampled in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out, plan
