"""Streaming generation at the demo shape: latency, real-time factor and chunk-border smoothness.

    python bench/stream.py                                  # runs/demo/run; JSON on stdout
    python bench/stream.py --workdir=RUN --chunks=0.1,0.5,1.0 --lookaheads=0.25,0.5,1.0
    python bench/stream.py --compare_impose                 # + every way of imposing the context

For every chunk size and look-ahead, `gesture_jax.generate.stream` runs on held-out demo clips
(demo_test_*.wav of the run's corpus) cut into chunks:
  * latency (one clip, paced in real time: a chunk is handed over only when the wall clock
    reaches its end in the audio, as a microphone delivers it): for every frame, its emission
    time minus the arrival of the chunk that completed the audio up to the end of the frame +
    the look-ahead; first frame, p50, p99, max (ms);
  * RTF: streamed audio seconds / compute seconds (wall time minus the time spent waiting
    for audio), from the same paced run;
  * seams: p99 joint speed (frame-to-frame joint displacement, forward kinematics) at the borders
    between emitted blocks / p99 elsewhere, pooled over --clips clips x --seeds seeds, with
    `gesture_jax.eval.kinematic.border_vs_elsewhere` (the long-audio window-border
    measure); `vs_offline`: border p99 / p99 of offline generate_motion on the same clips and
    seeds (all transitions), since blocks of 2 frames (0.1 s chunks at 20 fps) leave "elsewhere"
    only the transitions inside blocks. Without the smoothing post-filter unless
    --smooth_sigma is given, so the check sees what the context imposing does.
Model compilation is excluded (one warm-up stream first). Sampler: the streaming default,
DPM-Solver++ with sampling/streaming.py's STREAM_STEPS, unless --steps is given; --student
streams with the run's distilled few-step student (train it with --config.train.stage=distill).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def _positions(bundle, motion: np.ndarray) -> np.ndarray:
    from gesture_jax.motion.kinematics import bvh_positions
    return bvh_positions(bundle.pipeline.inverse(motion))


def border_ratio(pos: list[np.ndarray], borders: list[np.ndarray], offline_p99: float | None = None) -> dict:
    """The long-audio seam measure on emitted-block borders (guard shrunk for short blocks)."""
    from gesture_jax.eval.kinematic import border_vs_elsewhere

    gaps = np.concatenate([np.diff(np.concatenate([[0], b])) for b in borders if len(b)])
    guard = int(max(0, min(2, (int(np.median(gaps)) - 2) // 2)))  # "elsewhere" must exist between borders
    pb, pe, rank = border_vs_elsewhere(pos, borders, guard=guard)
    out = {"border_p99": round(pb, 4), "elsewhere_p99": round(pe, 4), "ratio": round(pb / pe, 3),
           "rank": round(rank, 2), "guard": guard, "borders": int(sum(len(b) for b in borders))}
    if offline_p99:
        out["vs_offline"] = round(pb / offline_p99, 3)
    return out


def offline_p99(bundle, waves, seeds, steps, smooth, sampler="dpm-solver++") -> float:
    from gesture_jax import generate as G

    steps_all = []
    for seed in seeds:
        bvhs = G.generate_motion(bundle, waves, sampler=sampler, steps=steps, seed=seed, smooth_sigma=smooth)
        from gesture_jax.motion.kinematics import bvh_positions
        for per in bvhs:
            p = bvh_positions(per[0])
            steps_all.append(np.linalg.norm(np.diff(p, axis=0), axis=-1))
    return float(np.percentile(np.concatenate(steps_all), 99))


def seams(bundle, waves, seeds, chunk_s, lookahead_s, opts_kw, impose, off99) -> dict:
    from gesture_jax import generate as G
    from gesture_jax.sampling import streaming as S

    pos, borders = [], []
    for seed in seeds:
        for w in waves:
            opts = G.SamplingOptions(seed=seed, **opts_kw)
            motion, rep = S.run_stream(bundle, S.chunked(w, chunk_s), lookahead_s=lookahead_s, opts=opts,
                                       impose=impose)
            n = int(np.floor(w.shape[0] * bundle.config.data.fps / 16000))
            assert motion.shape[0] == n, (motion.shape, n)
            pos.append(_positions(bundle, motion))
            borders.append(np.asarray([a for a, _ in rep.blocks[1:]], np.int64))
    return border_ratio(pos, borders, off99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/demo/run")
    ap.add_argument("--chunks", default="0.1,0.5,1.0")
    ap.add_argument("--lookaheads", default="0.25,0.5,1.0")
    ap.add_argument("--steps", type=int, default=None, help="DPM-Solver++ steps (default: streaming's)")
    ap.add_argument("--student", action="store_true",
                    help="stream with the run's distilled few-step student (--steps: 1 or 2, default distill.steps)")
    ap.add_argument("--clips", type=int, default=4, help="held-out clips pooled for the seam measure")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per clip for the seam measure")
    ap.add_argument("--smooth_sigma", type=float, default=0.0)
    ap.add_argument("--no_pace", action="store_true", help="latency without real-time pacing (compute only)")
    ap.add_argument("--compare_impose", action="store_true",
                    help="also measure seams for every impose mode (chunk 0.5 s / 0.1 s, look-ahead 0.5 s)")
    ap.add_argument("--impose", default="x0_fade")
    a = ap.parse_args()

    wd = Path(a.workdir)
    if not (wd / "config.json").is_file():
        print(json.dumps({"bench": "stream", "error": f"{wd}: no trained run here (make demo writes runs/demo/run; "
                                                     f"or pass --workdir=RUN)"}))
        sys.exit(2)
    import jax

    from gesture_jax import generate as G
    from gesture_jax.audio.io import load_audio
    from gesture_jax.sampling import streaming as S

    bundle = G.load_bundle(wd, student=a.student)
    src = Path(bundle.config.data.root)
    if not src.is_absolute():
        src = REPO / src
    wavs = sorted(src.glob("demo_test_*.wav"))[: a.clips] or sorted(src.glob("*.wav"))[: a.clips]
    if not wavs:
        print(json.dumps({"bench": "stream", "error": f"no WAV files in the run's corpus {src}"}))
        sys.exit(2)
    waves = [load_audio(w) for w in wavs]
    seeds = list(range(a.seeds))
    sampler = "student" if a.student else "dpm-solver++"
    steps = a.steps or (int(bundle.config.distill.steps) if a.student else S.STREAM_STEPS)
    opts_kw = {"sampler": sampler, "steps": steps, "smooth_sigma": a.smooth_sigma}
    res = {"bench": "stream", "workdir": str(wd), "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "jax": jax.__version__,
           "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
           "fps": float(bundle.config.data.fps), "window_s": float(bundle.config.data.window_s),
           "sampler": (f"student {steps} steps" if a.student else
                       f"dpm-solver++ {steps} steps (eta {bundle.config.sample.eta})"), "impose": a.impose,
           "smooth_sigma": a.smooth_sigma, "clips": [w.name for w in wavs], "seeds": seeds,
           "paced": not a.no_pace, "runs": []}
    t0 = time.perf_counter()
    S.run_stream(bundle, S.chunked(waves[0][: 16000 * 6], 0.5), lookahead_s=0.5,
                 opts=G.SamplingOptions(**opts_kw))  # compile
    off99 = offline_p99(bundle, waves, seeds, steps if a.student else 20, a.smooth_sigma, sampler)
    res["offline_p99_student" if a.student else "offline_p99_dpm20"] = round(off99, 4)
    for cs in map(float, a.chunks.split(",")):
        for la in map(float, a.lookaheads.split(",")):
            _, rep = S.run_stream(bundle, S.chunked(waves[0], cs), lookahead_s=la,
                                  opts=G.SamplingOptions(**opts_kw), impose=a.impose, realtime=not a.no_pace)
            row = {"chunk_s": cs, "lookahead_s": la, **rep.summary(),
                   "seams": seams(bundle, waves, seeds, cs, la, opts_kw, a.impose, off99)}
            res["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if a.compare_impose:
        res["impose_modes"] = {}
        for cs in (0.5, 0.1):
            for mode in S.IMPOSE_MODES:
                r = seams(bundle, waves, seeds, cs, 0.5, opts_kw, mode, off99)
                res["impose_modes"][f"{mode} chunk {cs} s"] = r
                print(json.dumps({mode: r, "chunk_s": cs}), file=sys.stderr, flush=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
