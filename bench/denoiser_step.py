"""Time the denoiser's forward+backward (one training step's gradient, no optimizer) on this machine.

    python bench/denoiser_step.py --config=beat --batch=1 [--part=full|fuzzy] [--iters=3] [--dtype=float32]

Prints one JSON line: compile time, median step wall and CPU time, parameter count, peak RSS. The reference
(PyTorch, 2-core CPU, B=1) needs ~24.5 s per training step (~18.8 s without its WavLM forward).
Everything runs in one jitted function over nnx.split state (functional jax.jit, donated nothing).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from gesture_jax.models import build_denoiser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="beat", help="configs/<name>.py")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--motion-dim", type=int, default=156)
    ap.add_argument("--audio-dim", type=int, default=768)
    ap.add_argument("--part", choices=("full", "fuzzy"), default="full")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--dtype", default=None, help="compute dtype (float32 / bfloat16); default: param dtype")
    args = ap.parse_args()

    cfg = importlib.import_module(f"configs.{args.config}").get_config()
    seq = int(round(cfg.data.window_s * cfg.data.fps))
    t0 = time.perf_counter()
    # audio at the config's rate: WavLM's own 50 Hz with audio.native_rate (the reference: 999 frames), else fps
    from gesture_jax.audio.features import native_rate
    from gesture_jax.audio.frames import audio_frames_for
    rate = float(cfg.model.fuzzy.audio_fps) if native_rate(cfg.audio) else float(cfg.data.fps)
    seq_audio = audio_frames_for(seq, cfg.data.fps, rate)
    model = build_denoiser(cfg.model, args.motion_dim, args.audio_dim, seq, nnx.Rngs(0), fps=cfg.data.fps,
                           dtype=args.dtype, audio_rate=rate)
    init_s = time.perf_counter() - t0
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    keys = jax.random.split(jax.random.key(0), 4)
    b = args.batch
    x0 = jax.random.normal(keys[0], (b, seq, args.motion_dim))
    audio = jax.random.normal(keys[1], (b, seq_audio, args.audio_dim))
    t = jax.random.randint(keys[2], (b,), 0, cfg.diffusion.num_steps)

    def loss_fn(params, rest):
        # Fresh Variables for the mutable state (RNG counts, BatchNorm stats): nnx only lets a trace
        # mutate Variables created at its own level.
        m = nnx.merge(graphdef, params, jax.tree_util.tree_map(lambda x: x, rest))
        if args.part == "fuzzy":
            out = m.condition(audio, deterministic=False)
            loss = jnp.mean(out ** 2)
        else:
            out = m(x0, t, audio, deterministic=False)
            loss = jnp.mean((out - x0) ** 2)
        return loss, nnx.state(m, nnx.Not(nnx.Param))

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    t0 = time.perf_counter()
    compiled = step.lower(params, rest).compile()
    compile_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(args.iters + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        (loss, rest), grads = compiled(params, rest)
        jax.block_until_ready(grads)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({
        "bench": "denoiser_fwd_bwd", "config": args.config, "part": args.part, "batch": b, "seq_len": seq,
        "motion_dim": args.motion_dim, "audio_dim": args.audio_dim, "dtype": args.dtype or cfg.model.param_dtype,
        "params": n_params, "init_s": round(init_s, 2), "compile_s": round(compile_s, 2),
        "first_step_s": round(times[0], 3), "step_s_median": round(statistics.median(times[1:]), 3),
        "step_s_all": [round(x, 3) for x in times[1:]],
        # CPU seconds (all threads): robust to other processes sharing the cores; / cores = ideal wall time.
        "step_cpu_s_median": round(statistics.median(cpu[1:]), 3), "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0], "loss": float(loss),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "devices": str(jax.devices()), "note": "shared 2-core CPU: other workers run concurrently",
    }))


if __name__ == "__main__":
    main()
