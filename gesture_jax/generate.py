"""Speech in, motion out: BVH (and optionally a stick-figure MP4) for any audio file of 1 s or more.

    python -m gesture_jax.generate --workdir=runs/demo --audio=talk.wav [more.wav a_folder/] --out=out/ \\
        [--sampler=ddpm|ddim|dpm-solver++] [--steps=N] [--guidance=W] [--eta=E] [--seed=S] \\
        [--num_samples=K] [--video]
    python -m gesture_jax.generate --stream --workdir=runs/demo --audio=talk.wav --out=out/ \\
        [--chunk_s=0.5] [--lookahead_s=0.5] [--realtime]

Everything comes from the training workdir: the config, the checkpoint (EMA weights when
saved), the motion pipeline with its scalers, and the manifest naming the audio features
the model was trained on, so no dataset or hand-copied statistics are needed. Audio of
any sample rate and channel count is resampled to 16 kHz mono; files of any length are
sampled as overlapping model windows fused at every solver step (sampling/long_audio.py),
all windows of all files (and samples) in one batch and one jitted loop. One BVH per
input and sample is written in the dataset's skeleton at the dataset frame rate, with
exactly floor(duration * fps) frames.

A folder with one unreadable or too-short file still generates the others; the bad ones
are listed at the end and the exit status is 1. A run that cannot be used (no checkpoint,
a damaged one, options its method does not know) is one line and exit status 2;
``--verbose`` adds the traceback.

Python use (e.g. from the evaluation CLI):
    bundle = load_for_inference(workdir)
    bvhs = generate_motion(bundle, [wave_16k], sampler="ddim", steps=50, seed=0)  # [file][sample] -> BVH

Streaming (``stream``, ``--stream``; sampling/streaming.py): audio chunks in as they arrive,
blocks of motion frames out as soon as their audio + a fixed look-ahead is in, each block
continuing the emitted motion without a seam. ``--stream`` reads each file progressively in
chunks of ``--chunk_s`` (``--realtime``: at the pace of a microphone), appends every block to
the BVH as it comes out (the frame count is filled in at the end) and prints the latency and
real-time factor.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from gesture_jax import errors, storage
from gesture_jax.sampling.options import GenerateError, SamplingOptions  # noqa: F401  (public here too)
from gesture_jax.sampling.streaming import DEFAULT_LOOKAHEAD_S
from gesture_jax.storage import Path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif")
SAMPLE_RATE = 16000


def method_of(bundle):
    """The plug-in (gesture_jax.methods) that trained the bundle's run."""
    from gesture_jax.methods import get_method, method_name
    return get_method(method_name(bundle.config))


def resolve_options(bundle, opts: SamplingOptions) -> dict[str, Any]:
    """The run's method fills unset options from its config and checks them (errors before any
    audio work). Public so evaluation can record exactly the settings generation used."""
    return method_of(bundle).resolve_options(bundle, opts)


def audio_features(bundle, wave: np.ndarray, extractor=None) -> tuple[np.ndarray, int]:
    """Audio features of a 16 kHz mono wave at the run's audio rate, padded to at least one window.

    Returns (features [audio_frames_for(max(N, window)), A], N) with N = floor(S * fps / 16000)
    motion frames: max(N, window) frames at the motion rate (mel), or the encoder's frames of that
    span at its own rate (WavLM at 50 Hz with audio.native_rate: frame j <-> time j/50).
    Clips shorter than one model window are padded with digital silence before feature
    extraction (so the features are those of silence, not zeros of an arbitrary scale) and
    the motion is cut back to N frames afterwards.
    """
    from gesture_jax.audio.features import feature_rate, make_extractor
    from gesture_jax.audio.frames import audio_frames_for

    cfg = bundle.config
    fps = float(cfg.data.fps)
    window = int(round(cfg.data.window_s * fps))
    extractor = extractor or make_extractor(cfg.audio, fps)
    n = int(math.floor(wave.shape[0] * fps / SAMPLE_RATE))
    need = int(math.ceil(window * SAMPLE_RATE / fps)) + 1
    if wave.shape[0] < need:
        wave = np.concatenate([wave, np.zeros(need - wave.shape[0], np.float32)])
    feats = np.asarray(extractor(wave), np.float32)
    want = audio_frames_for(max(n, window), fps, feature_rate(extractor))
    if feats.shape[0] < want:
        raise GenerateError(f"audio extractor {extractor.name!r} returned {feats.shape[0]} frames for "
                            f"{wave.shape[0]} samples; expected at least {want}")
    return feats[:want], n


def _reference_input_scaler(bundle, opts: SamplingOptions):
    """The reference's waveform scaler of an imported run, used by its own procedure only."""
    if not opts.reference_sampling:
        return None
    from gesture_jax.methods.persona_gestor import reference_sampling
    return reference_sampling.input_scaler(bundle)


def _reference_window_features(bundle, wave, extractor, scaler):
    from gesture_jax.methods.persona_gestor import reference_sampling
    return reference_sampling.window_features(bundle, wave, extractor, scaler)


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
    from gesture_jax.audio.features import feature_rate

    fps = float(bundle.config.data.fps)
    want_rate = float(audio.get("rate", fps)) if man else None  # no "rate": motion-rate data (older runs)
    if want_rate is not None and want_rate != feature_rate(extractor):
        raise GenerateError(f"the model was trained on audio features at {want_rate:g} frames/s but the "
                            f"run's config builds them at {feature_rate(extractor):g} (audio.native_rate)")


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
        scaler = _reference_input_scaler(bundle, opts)
        f, n = (audio_features(bundle, wave, extractor) if scaler is None else
                _reference_window_features(bundle, wave, extractor, scaler))
        feats.append(f)
        lengths.append(n)
    K = int(opts.num_samples)
    timelines, borders = method_of(bundle).sample(bundle, feats, opts, progress=progress)
    bvhs = [[bundle.pipeline.inverse(m) for m in per] for per in _per_file(timelines, lengths, K)]
    if not return_borders:
        return bvhs
    if borders is None:  # a method that sees the whole file at once has no window borders
        borders = [np.zeros((0,), np.int64)] * len(timelines)
    per = [[np.asarray(borders[i * K + k]) for k in range(K)] for i in range(len(feats))]
    return bvhs, [[b[b < lengths[i]] for b in per[i]] for i in range(len(feats))]


def stream(bundle, chunks: Iterable[np.ndarray], *, lookahead_s: float = DEFAULT_LOOKAHEAD_S,
           opts: SamplingOptions | None = None, **kwargs) -> Iterator[np.ndarray]:
    """Blocks of motion features [n, F] (bundle.pipeline.inverse of all of them is the BVH) from
    16 kHz mono audio chunks of any sizes, as they arrive (sampling/streaming.py).

    A frame is yielded once the audio up to its end + lookahead_s has been consumed; the rest
    when `chunks` ends, floor(duration * fps) frames in all. Options as SamplingOptions or
    keyword arguments (default: DPM-Solver++ with streaming.STREAM_STEPS steps; seed=,
    guidance=, eta=, smooth_sigma=; impose= chooses how a window continues the emitted motion).
    Errors about the request or a chunk (NaN, stereo, another rate) are GenerateErrors, raised
    here for the options and while iterating for the chunks.
    """
    from gesture_jax.sampling import streaming

    impose = kwargs.pop("impose", "x0_fade")
    if opts is not None and kwargs:
        raise GenerateError(f"pass sampling options either as opts= or as keywords, not both ({', '.join(kwargs)})")
    return streaming.stream(bundle, chunks, lookahead_s=lookahead_s, opts=opts or SamplingOptions(**kwargs),
                            impose=impose)


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


def load_bundle(workdir: str | Path, step: int | None = None, student: bool = False):
    """load_for_inference with a clear error for a workdir that holds no trained model;
    ``student``: its distilled few-step model (``--sampler=student``; ``step`` is the student's)."""
    wd = Path(workdir)
    if not wd.is_dir():
        raise GenerateError(f"workdir {wd}: no such directory")
    from gesture_jax.methods import MethodError, get_method, method_name
    from gesture_jax.training.inference import RunError, load_config, load_for_inference
    if not (wd / "config.json").is_file():
        raise GenerateError(f"workdir {wd}: no checkpoint found (no config.json either: train first: "
                            f"python -m gesture_jax.train --config=CONFIG --workdir={wd})")
    try:
        cfg = load_config(wd)
        method = get_method(method_name(cfg))
    except (RunError, MethodError) as e:
        raise GenerateError(f"workdir {wd}: {e}") from None
    if student and method.student_stage is None:
        raise GenerateError(f"workdir {wd}: method {method.name!r} has no few-step student (--sampler=student); "
                            f"students exist for the diffusion methods")
    stages = (method.student_stage,) if student else method.inference_stages(cfg)
    for stage in stages:  # every stage generation uses must have been trained
        ck = method.stage_dir(wd, stage) / "checkpoints"
        if not ck.is_dir() or not any(ck.iterdir()):
            how = f" --config.train.stage={stage}" if len(method.stages) > 1 else ""
            raise GenerateError(f"workdir {wd}: no checkpoint found in {ck} (train first: "
                                f"python -m gesture_jax.train --workdir={wd}{how})")
    try:
        return load_for_inference(str(wd), step=step, student=student)
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
    ap.add_argument("--sampler", choices=("ddpm", "ddim", "dpm-solver++", "student"), default=None,
                    help="default: the run's sample.sampler; student = the distilled few-step model "
                         "(train it with --config.train.stage=distill)")
    ap.add_argument("--steps", type=int, default=None, help="model evaluations (default: ddpm all, ddim 50, "
                                                             "dpm-solver++ 20, student distill.steps = 2)")
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
    ap.add_argument("--reference_sampling", action="store_true",
                    help="Persona-Gestor: the reference's own procedure, to reproduce its outputs next to ours: "
                         "ancestral DDPM over all steps, audio conditioning once per window, windows laid end to "
                         "end and concatenated (no overlap, no smoothing, no guidance)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    ap.add_argument("--video", action="store_true", help="also write a stick-figure MP4 with the audio")
    ap.add_argument("--stream", action="store_true",
                    help="stream: read each file in chunks, write BVH frames as they come out, print latency/RTF")
    ap.add_argument("--chunk_s", type=float, default=0.5, help="--stream: audio chunk length (s)")
    ap.add_argument("--lookahead_s", type=float, default=DEFAULT_LOOKAHEAD_S,
                    help="--stream: audio a frame waits for beyond its own end (s)")
    ap.add_argument("--realtime", action="store_true",
                    help="--stream: hand chunks over at the pace of a live microphone (else as fast as read)")
    ap.add_argument("--verbose", action="store_true", help="print the traceback of errors about your files")
    a = ap.parse_args(argv)
    try:
        if a.stream and a.reference_sampling:
            raise GenerateError("--reference_sampling is the reference's offline procedure (all windows of a file "
                                "at once, 1000 DDPM steps); --stream samples as audio arrives: choose one")
        if a.stream:
            return _generate_stream(a)
        return _generate(a)
    except Exception as e:  # noqa: BLE001 - your files/run: one line, exit 2 (--verbose: traceback)
        if not errors.is_user_error(e):
            raise
        return errors.report(e, a.verbose)


def _generate(a: argparse.Namespace) -> int:

    from gesture_jax.audio.io import AudioError, load_audio
    from gesture_jax.motion.bvh import write_bvh

    try:
        bundle = load_bundle(a.workdir, a.step, student=a.sampler == "student")
        opts = SamplingOptions(sampler=a.sampler, steps=a.steps, eta=a.eta, guidance=a.guidance, seed=a.seed,
                               num_samples=a.num_samples, overlap_s=a.overlap_s,
                               snap_s=a.snap_s, smooth_sigma=a.smooth_sigma,
                               reference_sampling=a.reference_sampling)
        resolve_options(bundle, opts)  # option errors before any audio work
    except GenerateError as e:
        return errors.report(e, a.verbose)
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
            return errors.report(e, a.verbose)
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


def _audio_chunks(path: Path, chunk_s: float, keep: list | None = None) -> Iterator[np.ndarray]:
    """16 kHz mono chunks of `chunk_s` seconds of an audio file, read progressively (soundfile;
    soxr's streaming resampler for other rates, channels averaged). A format soundfile cannot
    open is decoded whole by load_audio and then cut. keep: receives every chunk (for --video)."""
    import soundfile as sf

    from gesture_jax.audio.io import MIN_DURATION_S, AudioError, load_audio
    from gesture_jax.sampling.streaming import chunked

    def out(c):
        if keep is not None:
            keep.append(c)
        return c

    try:
        f = sf.SoundFile(storage.path(path).open("rb") if storage.is_remote(path) else str(path))
    except Exception:  # noqa: BLE001 - not a libsndfile format: load_audio decodes it (or names the problem)
        for c in chunked(load_audio(path, SAMPLE_RATE), chunk_s):
            yield out(c)
        return
    with f:
        if f.frames / float(f.samplerate) < MIN_DURATION_S:
            raise AudioError(f"{path}: too short ({f.frames / float(f.samplerate):.3f} s < {MIN_DURATION_S} s minimum)")
        rs = None
        if int(f.samplerate) != SAMPLE_RATE:
            import soxr
            rs = soxr.ResampleStream(float(f.samplerate), float(SAMPLE_RATE), 1, dtype="float32", quality="HQ")
        n = max(1, int(round(chunk_s * f.samplerate)))
        while True:
            try:
                block = f.read(n, dtype="float32", always_2d=True)
            except Exception as e:  # noqa: BLE001 - a damaged file part-way through
                raise AudioError(f"{path}: cannot be read as audio ({type(e).__name__}: {e})") from e
            last = block.shape[0] < n
            mono = np.ascontiguousarray(block.mean(axis=1), np.float32)
            if rs is not None:
                mono = rs.resample_chunk(mono, last=last)
            if mono.size:
                yield out(mono)
            if last:
                return


class _StreamingBVHWriter:
    """Appends motion blocks to a BVH file as they arrive; the frame count is written at close().

    Each block goes through the run's pipeline as generate_motion's output does
    (bundle.pipeline.inverse). The root trajectory integrates from frame 0, so a block is
    converted together with the frames since an anchor frame, started where the anchor's root
    stands (ground position and heading, `_root_start`); the anchor moves forward every
    ANCHOR_EVERY frames, so a block costs about the same however long the stream has run, and
    the file is the one write_bvh(pipeline.inverse(all frames)) gives (tests/test_streaming.py)."""

    ANCHOR_EVERY = 64

    def __init__(self, path: Path, pipeline):
        self.path, self.pipeline = storage.path(path), pipeline
        # the frame count is patched in place at close(): a bucket object cannot be, so a
        # remote file is written locally and uploaded whole at close()
        self._local = self.path if not storage.is_remote(self.path) else Path(
            tempfile.mkdtemp(prefix="gesture_jax-stream-")) / self.path.name
        self.frames = 0
        self.seconds = 0.0
        self._f = None
        self._count_at = 0
        self._since = None  # features of the frames from the anchor frame on (already written)
        self._start = None  # the anchor frame's RootStart (None: frame 0, at the origin)

    def _root_start(self, bvh, last: np.ndarray):
        """Ground position and heading of the root in bvh's last frame, from its root transform and
        that of the same features placed at the origin facing +Z (motion/root.deltas_to_root:
        R_root = yaw(heading) @ R_local, p_root = ground + yaw(heading) @ p_local)."""
        from gesture_jax.motion.bvh import BVH
        from gesture_jax.motion.kinematics import bvh_local_transforms
        from gesture_jax.motion.root import RootStart

        root = int(np.flatnonzero(np.asarray(bvh.skeleton.parents) < 0)[0])
        ref = self.pipeline.inverse(last[None]).frames
        rots, trans = bvh_local_transforms(BVH(bvh.skeleton, np.concatenate([bvh.frames[-1:], ref]), bvh.frame_time))
        yaw = rots[0, root] @ rots[1, root].T
        ground = trans[0, root] - yaw @ trans[1, root]
        return RootStart(float(ground[0]), float(ground[2]), float(np.arctan2(yaw[0, 2], yaw[2, 2])))

    def add(self, start: int, block: np.ndarray) -> None:
        import time

        from gesture_jax.motion.bvh import BVH, format_bvh

        t = time.perf_counter()
        x = np.asarray(block)
        old = 0 if self._since is None else self._since.shape[0]
        seq = x if self._since is None else np.concatenate([self._since, x])
        bvh = self.pipeline.inverse(seq, start=self._start)
        if seq.shape[0] > self.ANCHOR_EVERY:  # the last frame becomes the anchor
            self._start, self._since = self._root_start(bvh, seq[-1]), seq[-1:]
        else:
            self._since = seq
        text = format_bvh(BVH(bvh.skeleton, bvh.frames[old:], bvh.frame_time))
        head, motion = text.split("\nMOTION\n", 1)
        _, frame_time, rows = motion.split("\n", 2)
        if self._f is None:
            self._local.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(os.fspath(self._local), "wb")
            self._f.write((head + "\nMOTION\n").encode())
            self._count_at = self._f.tell()
            self._f.write(f"Frames: {0:<12d}\n{frame_time}\n".encode())
        self._f.write(rows.encode())
        self._f.flush()
        self.frames = start + x.shape[0]
        self.seconds += time.perf_counter() - t

    def close(self) -> None:
        if self._f is not None:
            self._f.seek(self._count_at)
            self._f.write(f"Frames: {self.frames:<12d}".encode())
            self._f.close()
            self._f = None
            if self._local != self.path:
                storage.copy_file(self._local, self.path)
                storage.remove_tree(self._local.parent)

    def discard(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._local != self.path:
            storage.remove_tree(self._local.parent)
        self.path.unlink(missing_ok=True)


def _generate_stream(a: argparse.Namespace) -> int:
    from gesture_jax.audio.io import AudioError
    from gesture_jax.sampling import streaming

    try:
        if not (a.chunk_s > 0 and math.isfinite(a.chunk_s)):
            raise GenerateError(f"--chunk_s must be > 0 seconds, got {a.chunk_s}")
        bundle = load_bundle(a.workdir, a.step, student=a.sampler == "student")
        opts = streaming.stream_options(SamplingOptions(
            sampler=a.sampler, steps=a.steps, eta=a.eta, guidance=a.guidance, seed=a.seed, num_samples=a.num_samples,
            overlap_s=a.overlap_s, snap_s=a.snap_s, smooth_sigma=a.smooth_sigma), bundle.student)
        # option errors before any audio work; compile once so no file's first block waits for it
        probe = streaming.MotionStreamer(bundle, lookahead_s=a.lookahead_s, opts=opts)
        compile_s = probe.warmup()
    except GenerateError as e:
        return errors.report(e, a.verbose)
    print(f"streaming with {probe.r['sampler']} {probe.r['steps']} steps, look-ahead {a.lookahead_s:g} s "
          f"(compiled in {compile_s:.1f} s)", file=sys.stderr, flush=True)
    files, bad = collect_audio(list(a.audio) + list(a.more_audio))
    out = Path(a.out)
    written: list[str] = []
    reports: dict[str, Any] = {}
    used_stems: set[str] = set()
    for f in files:
        stem = f.stem
        while stem in used_stems:
            stem += "_"
        used_stems.add(stem)
        writer = _StreamingBVHWriter(out / f"{stem}.bvh", bundle.pipeline)
        audio: list[np.ndarray] = []
        try:
            motion, rep = streaming.run_stream(bundle, _audio_chunks(f, a.chunk_s, audio if a.video else None),
                                               lookahead_s=a.lookahead_s, opts=opts, realtime=a.realtime,
                                               on_block=writer.add)
            writer.close()
        except (AudioError, GenerateError) as e:
            writer.discard()
            bad.append((str(f), errors.one_line(e) if str(f) in str(e) else f"{f}: {errors.one_line(e)}"))
            print(f"skipping {f}: {errors.one_line(e)}", file=sys.stderr)
            continue
        written.append(str(writer.path))
        summary = rep.summary()
        summary.update(chunk_s=a.chunk_s, lookahead_s=a.lookahead_s, realtime=bool(a.realtime),
                       bvh_write_s=round(writer.seconds, 3))
        reports[str(f)] = summary
        if a.video:
            from gesture_jax.motion.kinematics import bvh_positions
            from gesture_jax.viz.video import write_video
            bvh = bundle.pipeline.inverse(motion)
            write_video(out / f"{stem}.mp4", bvh_positions(bvh), bvh.skeleton.parents, bvh.fps,
                        audio=np.concatenate(audio), audio_sr=SAMPLE_RATE, names=bvh.skeleton.names)
            written.append(str(out / f"{stem}.mp4"))
        print(f"{f}: streamed {summary['audio_s']:.1f} s in {summary['chunks']} chunks of {a.chunk_s:g} s, "
              f"look-ahead {a.lookahead_s:g} s -> {summary['frames']} frames in {summary['blocks']} blocks; latency "
              f"after a frame's audio + look-ahead: first frame {summary['latency_first_frame_ms']} ms, p50 "
              f"{summary['latency_p50_ms']} ms, p99 {summary['latency_p99_ms']} ms; RTF {summary['rtf']} "
              f"({'paced in real time' if a.realtime else 'file read as fast as possible'}; BVH writing "
              f"{summary['bvh_write_s']} s included)", file=sys.stderr, flush=True)
    print(json.dumps({"written": written, "failed": [{"input": p, "error": m} for p, m in bad],
                      "stream": reports}, indent=1))
    if bad:
        print(f"{len(bad)} input(s) failed: " + "; ".join(m for _, m in bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
