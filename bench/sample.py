"""Seconds to generate 20 s of motion with each sampler, at the reference and the demo shape.

    python bench/sample.py                              # both shapes, all samplers, JSON on stdout
    python bench/sample.py --shapes=demo --full_ddpm    # run 1000-step DDPM instead of extrapolating

Random weights (a speed benchmark): the model is built from configs/beat.py (Persona-Gestor,
934M parameters, WavLM Base+ 768-dim features, 156 motion features, one 400-frame window,
batch 1) and configs/demo.py. The timed function is exactly what `gesture_jax.generate`
runs: the conditioning once, then the whole sampler loop as one jitted scan. Compilation is
timed separately (ahead-of-time lower + compile); "seconds" is the best of `--repeats` runs.

Snapping window borders to slow frames (cfg.sample.snap_s, long_audio.py) adds a pre-pass of
cfg.sample.snap_steps DPM-Solver++ steps whenever a clip spans more than two windows (the
demo shape's 20 s, not the reference's single window); it is timed the same way and
reported as "border_prepass" (add it to each sampler's seconds for generate's total).

DDPM uses every training step (1000 at the reference shape). Every step costs the same one
network evaluation, so unless --full_ddpm is given it is timed over `--ddpm_probe_steps`
respaced steps of the same code and scaled to the full count ("extrapolated": true).

"student-1" / "student-2" are the distilled few-step samplers (training/distill.py): the same
network, evaluated once or twice; their border pre-pass is one student step.

Where the time goes: "flops_per_evaluation" is XLA's cost analysis of one network evaluation
over all windows (the denoiser, conditioning excluded), "flops_conditioning" that of the audio
conditioning computed once per clip; "achieved_gflops" = (evaluations x flops_per_evaluation
+ flops_conditioning) / seconds, printed next to "matmul_gflops", the rate this machine
reaches on a large float32 matmul in the same run (`--matmul_n`).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from gesture_jax import generate as G  # noqa: E402
from gesture_jax.sampling import windowed as W  # noqa: E402
from gesture_jax.models.denoiser import build_denoiser  # noqa: E402
from gesture_jax.sampling import long_audio  # noqa: E402
from gesture_jax.audio.features import native_rate  # noqa: E402
from gesture_jax.audio.frames import audio_frames_for  # noqa: E402

# (config module, motion features, audio feature dim) of each benchmarked shape
SHAPES = {"reference": ("beat", 156, 768), "demo": ("demo", None, 80)}


def _config(name: str):
    import importlib
    return importlib.import_module(f"configs.{name}").get_config()


def bench_shape(shape: str, samplers: list[str], seconds: float, repeats: int, full_ddpm: bool,
                probe: int) -> dict:
    cfg_name, motion_dim, audio_dim = SHAPES[shape]
    cfg = _config(cfg_name)
    if motion_dim is None:  # demo: the synthetic corpus' non-constant channels (configs/demo.py, no mirroring)
        motion_dim = 32
    fps = float(cfg.data.fps)
    window = int(round(cfg.data.window_s * fps))
    frames = int(round(seconds * fps))
    t0 = time.perf_counter()
    # audio at the config's rate: WavLM's own 50 Hz with audio.native_rate (the reference), else the motion rate
    rate = float(cfg.model.fuzzy.audio_fps) if native_rate(cfg.audio) else fps
    model = build_denoiser(cfg.model, motion_dim, audio_dim, window, nnx.Rngs(0), fps=fps, audio_rate=rate)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    build_s = time.perf_counter() - t0
    bundle = types.SimpleNamespace(config=cfg, model=model, pipeline=None, manifest={"audio": {"rate": rate}})
    n_audio = audio_frames_for(max(frames, window), fps, rate)
    feats = [np.random.default_rng(0).standard_normal((n_audio, audio_dim)).astype(np.float32)]
    plan = long_audio.plan_windows([max(frames, window)], window, int(round(cfg.sample.overlap_s * fps)))
    audio_w = jnp.asarray(long_audio.gather_windows(feats, plan, audio_frames_for(window, fps, rate), rate / fps))
    out = {"config": f"configs/{cfg_name}.py", "params": params, "motion_dim": motion_dim, "audio_dim": audio_dim,
           "window_frames": window, "windows": plan.num_windows, "seconds_of_motion": seconds,
           "batch": 1, "diffusion_steps": int(cfg.diffusion.num_steps), "build_s": round(build_s, 2),
           "samplers": {}}
    T = int(cfg.diffusion.num_steps)
    snapping = (float(cfg.sample.get("snap_s", 0.0)) > 0 and float(cfg.sample.overlap_s) > 0
                and plan.num_windows > 2)
    runs = []
    for name in samplers:
        sampler, _, k = name.partition("-") if name.startswith("student") else (name, "", "")
        steps = int(k) if k else {"ddpm": T, "ddim": 50, "dpm-solver++": 20, "student": 2}[sampler]
        runs.append((name, sampler, steps))
    if snapping:
        runs.append(("border_prepass", "dpm-solver++", int(cfg.sample.get("snap_steps", 5))))
        if any(r[1] == "student" for r in runs):
            runs.append(("border_prepass_student", "student", 1))
    flops_eval, flops_cond = _flops(model, audio_w, window, motion_dim, plan.num_windows)
    out["flops_per_evaluation"] = flops_eval
    out["flops_conditioning"] = flops_cond
    for name, sampler, steps in runs:
        run_steps = steps if (sampler != "ddpm" or full_ddpm) else min(probe, T)
        opts = G.SamplingOptions(sampler=sampler, steps=run_steps, batch_windows=max(1, plan.num_windows))
        bundle.student = sampler == "student"
        fn, state, _, coeffs = W.build_sampling_fn(bundle, plan, opts)
        t = time.perf_counter()
        compiled = fn.lower(state, audio_w, jax.random.key(0)).compile()
        compile_s = time.perf_counter() - t
        times = []
        for i in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(compiled(state, audio_w, jax.random.key(i + 1), *fn.layout_args))
            times.append(time.perf_counter() - t)
        best = min(times)
        scale = steps / coeffs.num_steps
        out["samplers"][name] = {
            "sampler": sampler, "steps": steps, "measured_steps": coeffs.num_steps, "extrapolated": scale != 1.0,
            "seconds": round(best * scale, 3), "seconds_per_step": round(best / coeffs.num_steps, 4),
            "compile_s": round(compile_s, 2), "runs": [round(x, 3) for x in times],
            "achieved_gflops": (round((coeffs.num_steps * flops_eval + flops_cond) / best / 1e9, 2)
                                if flops_eval else None)}
        print(json.dumps({shape: {name: out["samplers"][name]}}), file=sys.stderr, flush=True)
        del fn
        gc.collect()
    return out


def _cost_flops(compiled) -> float | None:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    f = (ca or {}).get("flops")
    return float(f) if f is not None and f > 0 else None


def _flops(model, audio_w, window: int, motion_dim: int, windows: int) -> tuple[float | None, float | None]:
    """XLA's FLOP count of one network evaluation over every window, and of the conditioning."""
    graphdef, state = nnx.split(model)

    def cond_fn(state, a):
        return nnx.merge(graphdef, state).condition(a, deterministic=True)

    def eval_fn(state, x, t, c):
        return nnx.merge(graphdef, state).denoise(x, t, c, deterministic=True)

    cond = jax.eval_shape(cond_fn, state, audio_w)
    x = jax.ShapeDtypeStruct((windows, window, motion_dim), jnp.float32)
    t = jax.ShapeDtypeStruct((windows,), jnp.int32)
    return (_cost_flops(jax.jit(eval_fn).lower(state, x, t, cond).compile()),
            _cost_flops(jax.jit(cond_fn).lower(state, audio_w).compile()))


def matmul_gflops(n: int, repeats: int = 3) -> float:
    """The float32 matmul rate of this machine (an n x n by n x n product, best of `repeats`)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    best = min(_timed(lambda: jax.block_until_ready(f(a))) for _ in range(repeats))
    return round(2.0 * n ** 3 / best / 1e9, 2)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="reference,demo")
    ap.add_argument("--samplers", default="ddpm,ddim,dpm-solver++,student-1,student-2")
    ap.add_argument("--matmul_n", type=int, default=2048)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--full_ddpm", action="store_true")
    ap.add_argument("--ddpm_probe_steps", type=int, default=20)
    a = ap.parse_args()
    res = {"bench": "sample", "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
           "cpu_count": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
           "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
           "matmul_gflops": matmul_gflops(a.matmul_n), "matmul_n": a.matmul_n, "shapes": {}}
    for shape in a.shapes.split(","):
        res["shapes"][shape] = bench_shape(shape, a.samplers.split(","), a.seconds, a.repeats, a.full_ddpm,
                                           a.ddpm_probe_steps)
        gc.collect()
    res["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
