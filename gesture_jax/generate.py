"""Speech in, motion out: BVH (and optionally a stick-figure MP4) for any audio file of 1 s or more.

    python -m gesture_jax.generate --workdir=runs/demo --audio=talk.wav [more.wav a_folder/] --out=out/ \\
        [--sampler=ddpm|ddim|dpm-solver++] [--steps=N] [--guidance=W] [--eta=E] [--seed=S] \\
        [--num_samples=K] [--video]

Everything comes from the training workdir: the config, the checkpoint (EMA weights when
saved), the motion pipeline with its scalers, and the manifest naming the audio features
the model was trained on, so no dataset or hand-copied statistics are needed. Audio of
any sample rate and channel count is resampled to 16 kHz mono; files of any length are
sampled as overlapping model windows fused at every solver step (sampling/long_audio.py),
all windows of all files (and samples) in one batch and one jitted loop. One BVH per
input and sample is written in the dataset's skeleton at the dataset frame rate, with
exactly floor(duration * fps) frames.

A folder with one unreadable or too-short file still generates the others; the bad ones
are listed at the end and the exit status is 1.

Python use (e.g. from the evaluation CLI):
    bundle = load_for_inference(workdir)
    bvhs = generate_motion(bundle, [wave_16k], sampler="ddim", steps=50, seed=0)  # [file][sample] -> BVH
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif")
DEFAULT_STEPS = {"ddim": 50, "dpm-solver++": 20}  # ddpm: every training step (the reference)
SAMPLE_RATE = 16000


class GenerateError(RuntimeError):
    """A generation request that cannot be served (message names the file or workdir)."""


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample; None fields fall back to the run's config (cfg.sample) or DEFAULT_STEPS."""
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    guidance: float | None = None
    seed: int = 0
    num_samples: int = 1
    overlap_s: float | None = None
    snap_s: float | None = None
    smooth_sigma: float | None = None
    batch_windows: int | None = None


def resolve_options(bundle, opts: SamplingOptions) -> dict[str, Any]:
    """Fill unset options from the run's config and check them (errors before any audio work).

    Public so evaluation can record exactly the settings generation used."""
    from gesture_jax.sampling.samplers import SAMPLERS

    cfg = bundle.config
    sampler = opts.sampler or cfg.sample.sampler
    if sampler not in SAMPLERS:
        raise GenerateError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    T = int(cfg.diffusion.num_steps)
    if opts.steps is not None:
        steps = int(opts.steps)
    elif sampler == "ddpm":
        steps = T
    elif sampler == cfg.sample.sampler and int(cfg.sample.get("steps", 0)) > 0:
        steps = int(cfg.sample.steps)  # the run's own choice for its default sampler
    else:
        steps = DEFAULT_STEPS[sampler]
    if not 1 <= steps <= T:
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
    return dict(sampler=sampler, steps=steps, guidance=guidance, smooth=smooth,
                eta=float(cfg.sample.eta if opts.eta is None else opts.eta), fps=fps, window=window,
                overlap=overlap, snap=int(round(snap_s * fps)), snap_steps=snap_steps,
                batch_windows=int(opts.batch_windows or cfg.sample.batch_windows),
                prediction=str(cfg.diffusion.prediction), clip_x0=float(cfg.sample.get("clip_x0", 20.0)))


def audio_features(bundle, wave: np.ndarray, extractor=None) -> tuple[np.ndarray, int]:
    """Model-rate audio features of a 16 kHz mono wave, padded to at least one window.

    Returns (features [max(N, window), A], N) with N = floor(S * fps / 16000) motion frames.
    Clips shorter than one model window are padded with digital silence before feature
    extraction (so the features are those of silence, not zeros of an arbitrary scale) and
    the motion is cut back to N frames afterwards.
    """
    from gesture_jax.audio.features import make_extractor

    cfg = bundle.config
    fps = float(cfg.data.fps)
    window = int(round(cfg.data.window_s * fps))
    extractor = extractor or make_extractor(cfg.audio, fps)
    n = int(math.floor(wave.shape[0] * fps / SAMPLE_RATE))
    need = int(math.ceil(window * SAMPLE_RATE / fps)) + 1
    if wave.shape[0] < need:
        wave = np.concatenate([wave, np.zeros(need - wave.shape[0], np.float32)])
    feats = np.asarray(extractor(wave), np.float32)
    if feats.shape[0] < max(n, window):
        raise GenerateError(f"audio extractor {extractor.name!r} returned {feats.shape[0]} frames for "
                            f"{wave.shape[0]} samples; expected at least {max(n, window)}")
    return feats[:max(n, window)], n


def _check_extractor(bundle, extractor) -> None:
    man = bundle.manifest if isinstance(bundle.manifest, dict) else {}
    audio = man.get("audio") if isinstance(man.get("audio"), dict) else {}
    want_name = audio.get("feature", man.get("audio_feature"))
    want_dim = audio.get("dim", man.get("audio_dim"))
    if want_name is not None and str(want_name) != str(extractor.name):
        raise GenerateError(f"the model was trained on {want_name!r} audio features but the config builds "
                            f"{extractor.name!r}")
    if want_dim is not None and int(want_dim) != int(extractor.dim):
        raise GenerateError(f"the model was trained on {want_dim}-dim audio features; the extractor "
                            f"gives {extractor.dim}")


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

    state: nnx.split(bundle.model)[1]; audio_w [W, T, A] window audio features; returns
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
    coeffs = samplers.sampler_coefficients(ab, r["sampler"], r["steps"], eta=r["eta"])
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
            cond = _chunked(lambda a: m.condition(a, deterministic=True), audio_w, bw)  # [W, T, D], once
            null = m.null_condition(1, r["window"]) if guided else None  # [1, T, D]

            def net(x_t, t):  # x_t [W, T, F] -> network output [W, T, F], bw windows per model call
                def chunk(xc):
                    x, c = xc
                    tt = jnp.full((x.shape[0],), t, jnp.int32)
                    if not guided:
                        return m.denoise(x, tt, c, deterministic=True)
                    both = m.denoise(jnp.concatenate([x, x]), jnp.concatenate([tt, tt]),
                                     jnp.concatenate([c, jnp.broadcast_to(null, c.shape)]), deterministic=True)
                    oc, ou = jnp.split(both, 2)  # [bw, T, F] each: conditional, unconditional
                    return samplers.guided_output(oc, ou, w)
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
    audio_w = long_audio.gather_windows(feats, plan, r["window"])  # [W, T, A]
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

    With snapping (cfg.sample.snap_s > 0, an overlap, and more than two windows somewhere) a
    pre-pass of `snap_steps` DPM-Solver++ steps with the same seed on the regular grid finds
    where each timeline moves slowest, and the borders move there (sampling/long_audio.py).
    """
    from gesture_jax.sampling import long_audio

    r = resolve_options(bundle, opts)
    K = int(opts.num_samples)
    feats = [f for f in features for _ in range(K)]
    lengths = [f.shape[0] for f in feats]
    plan = long_audio.plan_windows(lengths, r["window"], r["overlap"])
    t0 = time.perf_counter()
    if progress:
        print(f"sampling {len(features)} file(s) x {K} sample(s): {plan.num_windows} windows of {r['window']} "
              f"frames, {r['sampler']} {r['steps']} steps"
              + (f", guidance {r['guidance']}" if r["guidance"] != 1.0 else ""), file=sys.stderr, flush=True)
    if long_audio.snap_reach(r["overlap"], r["snap"]) > 0 and int(np.bincount(plan.timeline).max()) > 2:
        pre_steps = min(r["snap_steps"], int(bundle.config.diffusion.num_steps))
        pre_opts = replace(opts, sampler="dpm-solver++", steps=pre_steps)
        pre = plan.split(_run_plan(bundle, plan, feats, pre_opts, progress, "placing borders"))
        plan = long_audio.plan_windows(lengths, r["window"], r["overlap"],
                                       cost=[border_cost(bundle, m) for m in pre], snap_frames=r["snap"])
    out = _run_plan(bundle, plan, feats, opts, progress, r["sampler"])
    if r["smooth"] > 0:
        out = long_audio.smooth_timelines(out, plan, r["smooth"])
    if progress:
        print(f"sampled in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out, plan


def sample_features(bundle, features: Sequence[np.ndarray], lengths: Sequence[int],
                    opts: SamplingOptions = SamplingOptions(), *, progress: bool = True
                    ) -> list[list[np.ndarray]]:
    """Standardized motion features [N_i, F] for each file i and sample k: result[i][k].

    features[i]: [L_i >= window, A] model-rate audio features; lengths[i]: frames to keep.
    All windows of all files and samples are denoised together in one jitted loop.
    """
    out, plan = sample_timelines(bundle, features, opts, progress=progress)
    return _per_file(plan.split(out), lengths, int(opts.num_samples))


def _per_file(timelines: Sequence[Any], lengths: Sequence[int], k: int) -> list[list[Any]]:
    """Per-timeline items (timeline s = file i * k + sample j) -> result[i][j], each cut to
    lengths[i] frames."""
    return [[timelines[i * k + j][:int(n)] for j in range(k)] for i, n in enumerate(lengths)]


def generate_motion(bundle, waves: Sequence[np.ndarray] | np.ndarray, opts: SamplingOptions | None = None, *,
                    progress: bool = False, return_borders: bool = False, **kwargs):
    """BVHs generated from 16 kHz mono waves: result[file][sample] (gesture_jax.motion.bvh.BVH).

    waves: one float32 [S] array or a list of them (use gesture_jax.audio.io.load_audio for
    files). Options as SamplingOptions or keyword arguments (sampler=, steps=, guidance=,
    eta=, seed=, num_samples=, overlap_s=, snap_s=, smooth_sigma=, batch_windows=). Each BVH has
    floor(S * fps / 16000) frames in the dataset skeleton at the dataset fps.
    return_borders: also return borders[file][sample], the frames where a model window
    starts or ends (for seam checks), as (bvhs, borders).
    """
    from gesture_jax.audio.features import make_extractor
    from gesture_jax.audio.io import MIN_DURATION_S

    if isinstance(waves, np.ndarray):
        if waves.ndim != 1:
            raise GenerateError(f"expected one mono [S] wave at 16 kHz or a list of them, got an array of shape "
                                f"{waves.shape} (downmix with gesture_jax.audio.io.prepare_waveform)")
        waves = [waves]
    opts = opts or SamplingOptions(**kwargs)
    cfg = bundle.config
    extractor = make_extractor(cfg.audio, float(cfg.data.fps))
    _check_extractor(bundle, extractor)
    feats, lengths = [], []
    for i, wave in enumerate(waves):
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1:
            raise GenerateError(f"wave {i}: expected a mono [S] array at 16 kHz, got shape {wave.shape}")
        if wave.shape[0] < MIN_DURATION_S * SAMPLE_RATE:
            raise GenerateError(f"wave {i}: {wave.shape[0] / SAMPLE_RATE:.3f} s of audio; at least "
                                f"{MIN_DURATION_S} s is needed")
        f, n = audio_features(bundle, wave, extractor)
        feats.append(f)
        lengths.append(n)
    K = int(opts.num_samples)
    out, plan = sample_timelines(bundle, feats, opts, progress=progress)
    bvhs = [[bundle.pipeline.inverse(m) for m in per] for per in _per_file(plan.split(out), lengths, K)]
    if not return_borders:
        return bvhs
    borders = [[(lambda b: b[b < lengths[i]])(plan.border_frames(i * K + k)) for k in range(K)]
               for i in range(len(feats))]
    return bvhs, borders


def collect_audio(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expands folders (audio files in them, sorted) and keeps files; missing paths are errors."""
    files, bad = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                bad.append((str(p), f"{p}: folder holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"))
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            bad.append((str(p), f"{p}: no such file or folder"))
    return files, bad


def load_bundle(workdir: str | Path, step: int | None = None):
    """load_for_inference with a clear error for a workdir that holds no trained model."""
    wd = Path(workdir)
    if not wd.is_dir():
        raise GenerateError(f"workdir {wd}: no such directory")
    ck = wd / "checkpoints"
    if not ck.is_dir() or not any(ck.iterdir()):
        raise GenerateError(f"workdir {wd}: no checkpoint found in {ck} (train first: "
                            f"python -m gesture_jax.train --workdir={wd})")
    from gesture_jax.training.inference import load_for_inference
    try:
        return load_for_inference(str(wd), step=step)
    except GenerateError:
        raise
    except Exception as e:  # name the workdir whatever the loader raised
        raise GenerateError(f"workdir {wd}: cannot load a model for inference ({type(e).__name__}: {e})") from e


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gesture_jax.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="training run directory (config, checkpoints, pipeline)")
    ap.add_argument("--audio", nargs="+", required=True, help="audio files and/or folders of audio files")
    ap.add_argument("more_audio", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--out", required=True, help="output folder for BVH (and MP4) files")
    ap.add_argument("--sampler", choices=("ddpm", "ddim", "dpm-solver++"), default=None)
    ap.add_argument("--steps", type=int, default=None, help="model evaluations (default: ddpm all, ddim 50, "
                                                             "dpm-solver++ 20)")
    ap.add_argument("--eta", type=float, default=None,
                    help="ddim / dpm-solver++ noise: 1 = stochastic (config default), 0 = deterministic ODE")
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight (1 = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_samples", type=int, default=1)
    ap.add_argument("--overlap_s", type=float, default=None, help="overlap of consecutive windows (s)")
    ap.add_argument("--snap_s", type=float, default=None,
                    help="move each window border up to this far (s) to where a short pre-pass moves slowest (0 = regular grid)")
    ap.add_argument("--smooth_sigma", type=float, default=None,
                    help="Gaussian smoothing of the sampled motion over time, std in frames at the model fps "
                         "(default: the run's sample.smooth_sigma; 0 = off)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    ap.add_argument("--video", action="store_true", help="also write a stick-figure MP4 with the audio")
    a = ap.parse_args(argv)

    from gesture_jax.audio.io import AudioError, load_audio
    from gesture_jax.motion.bvh import write_bvh

    try:
        bundle = load_bundle(a.workdir, a.step)
        opts = SamplingOptions(sampler=a.sampler, steps=a.steps, eta=a.eta, guidance=a.guidance, seed=a.seed,
                               num_samples=a.num_samples, overlap_s=a.overlap_s,
                               snap_s=a.snap_s, smooth_sigma=a.smooth_sigma)
        resolve_options(bundle, opts)  # option errors before any audio work
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files, bad = collect_audio(list(a.audio) + list(a.more_audio))
    waves, names = [], []
    for f in files:
        try:
            waves.append(load_audio(f, SAMPLE_RATE))
            names.append(f)
        except AudioError as e:
            bad.append((str(f), str(e)))
            print(f"skipping {f}: {e}", file=sys.stderr)
    out = Path(a.out)
    written: list[str] = []
    if waves:
        out.mkdir(parents=True, exist_ok=True)
        try:
            bvhs = generate_motion(bundle, waves, opts, progress=True)
        except GenerateError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        used_stems: set[str] = set()
        for f, wave, per_file in zip(names, waves, bvhs):
            stem = f.stem
            while stem in used_stems:  # same name in two folders
                stem += "_"
            used_stems.add(stem)
            for k, bvh in enumerate(per_file):
                name = stem if a.num_samples == 1 else f"{stem}_s{k}"
                write_bvh(out / f"{name}.bvh", bvh)
                written.append(str(out / f"{name}.bvh"))
                if a.video:
                    from gesture_jax.motion.kinematics import bvh_positions
                    from gesture_jax.viz.video import write_video
                    write_video(out / f"{name}.mp4", bvh_positions(bvh), bvh.skeleton.parents, bvh.fps,
                                audio=wave, audio_sr=SAMPLE_RATE, names=bvh.skeleton.names)
                    written.append(str(out / f"{name}.mp4"))
    print(json.dumps({"written": written, "failed": [{"input": p, "error": m} for p, m in bad]}, indent=1))
    if bad:
        print(f"{len(bad)} input(s) failed: " + "; ".join(m for _, m in bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
