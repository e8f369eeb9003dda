"""Train-step benchmark at the reference shape (configs/beat.py: 934M parameters, B=1, 400 frames).

    python bench/train_step.py                    # JSON: memory for 1 and 8 devices, step time
    python bench/train_step.py --time_depth=2     # time a 2-block model when 12 blocks do not fit in RAM
    python bench/train_step.py --no_time          # compiled memory only

Compiled memory comes from ahead-of-time lowering of the real jitted train step on abstract
inputs (nothing allocated): ``compiled.memory_analysis()`` per device, for one device and
for 8 host devices with ``mesh.shape=fsdp:8`` (a subprocess with
``--xla_force_host_platform_device_count=8``). The step time is measured on real arrays
(fp32, AdamW, clipping; median of ``--steps`` steps after one compile step) and needs about
as much RAM as the 1-device analysis says; the script refuses to time it when
/proc/meminfo's MemAvailable is smaller, and then times ``--time_depth`` blocks instead (set
by you, reported as such).
Reference figures (DESIGN.md): PyTorch 24.5 s/step (18.8 s without WavLM), ~19 GB RAM.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BEAT_MOTION_DIM, BASE_PLUS_AUDIO_DIM, FRAMES = 156, 768, 400


def _setup(mesh_spec: str, depth: int | None, devices=None):
    import jax
    from configs import beat
    from gesture_jax.models import build_denoiser
    from gesture_jax.parallel import mesh as mesh_lib, sharding as shd
    from gesture_jax.training import state as state_lib, step as step_lib

    cfg = beat.get_config()
    with cfg.unlocked():
        cfg.train.batch_size = 1
        cfg.mesh.shape = mesh_spec
        if depth is not None:
            cfg.model.depth = depth
    F, A, T = BEAT_MOTION_DIM, BASE_PLUS_AUDIO_DIM, FRAMES
    from gesture_jax.audio.features import native_rate
    from gesture_jax.audio.frames import audio_frames_for
    rate = float(cfg.model.fuzzy.audio_fps) if native_rate(cfg.audio) else float(cfg.data.fps)
    Ta = audio_frames_for(T, float(cfg.data.fps), rate)  # the records' audio frames (999 at WavLM's 50 Hz)
    model_fn = lambda rngs: build_denoiser(cfg.model, F, A, T, rngs, fps=float(cfg.data.fps), audio_rate=rate)
    mesh = mesh_lib.make_mesh(mesh_spec, devices)
    rules = shd.rules_from_config(cfg.mesh)
    abstract, shardings, parts, tx, schedule, _ = state_lib.abstract_train_state(
        model_fn, cfg.train, 0, mesh, rules, int(cfg.mesh.min_shard_size))
    loss_fn = step_lib.diffusion_loss_fn(cfg.diffusion, cfg.train, parts, mesh,
                                         step_lib.compute_shardings(shardings.params, True))
    step = step_lib.jit_train_step(step_lib.make_train_step(loss_fn, tx, schedule, cfg.train, mesh),
                                   shardings, mesh, {"motion": 3, "audio": 3})
    B = int(cfg.train.batch_size) * mesh_lib.batch_parallelism(mesh)  # >= 1 row per device
    batch = {"motion": jax.ShapeDtypeStruct((B, T, F), jax.numpy.float32,
                                            sharding=shd.batch_sharding(mesh, 3)),
             "audio": jax.ShapeDtypeStruct((B, Ta, A), jax.numpy.float32,
                                           sharding=shd.batch_sharding(mesh, 3))}
    n_params = state_lib.count_params(abstract.params)
    return cfg, model_fn, mesh, rules, abstract, shardings, step, batch, n_params


def memory(mesh_spec: str, depth: int | None = None) -> dict:
    import jax
    t0 = time.perf_counter()
    cfg, _, mesh, _, abstract, _, step, batch, n_params = _setup(mesh_spec, depth)
    compiled = step.lower(abstract, batch).compile()
    ma = compiled.memory_analysis()
    gib = lambda b: round(b / 2**30, 3)
    args, out, temp, alias = (ma.argument_size_in_bytes, ma.output_size_in_bytes,
                              ma.temp_size_in_bytes, ma.alias_size_in_bytes)
    return {"mesh": mesh_spec, "devices": int(mesh.size), "batch": int(batch["motion"].shape[0]),
            "params": n_params, "depth": int(cfg.model.depth),
            "per_device_gib": {"arguments": gib(args), "outputs": gib(out), "temp": gib(temp),
                               "aliased (donated)": gib(alias),
                               "peak_estimate": gib(args + out - alias + temp)},
            "compile_s": round(time.perf_counter() - t0, 1)}


def timing(depth: int | None, steps: int) -> dict:
    import jax
    import numpy as np
    from gesture_jax.training import state as state_lib
    cfg, model_fn, mesh, rules, abstract, shardings, step, batch, n_params = _setup("data:1", depth)
    state, *_ = state_lib.create_train_state(model_fn, cfg.train, 0, mesh, rules, int(cfg.mesh.min_shard_size))
    rng = np.random.default_rng(0)
    real = {k: jax.device_put(rng.standard_normal(v.shape, np.float32), v.sharding) for k, v in batch.items()}
    t0 = time.perf_counter()
    state, m = step(state, real)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, real)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return {"depth": int(cfg.model.depth), "params": n_params, "batch": 1,
            "first_step_incl_compile_s": round(first, 2), "step_s": [round(t, 3) for t in times],
            "median_step_s": round(float(np.median(times)), 3), "loss": float(m["loss"])}


def _mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="all", choices=["all", "memory", "time"])
    ap.add_argument("--mesh", default="data:1")
    ap.add_argument("--depth", type=int, default=None, help="override model.depth (default: 12)")
    ap.add_argument("--time_depth", type=int, default=None, help="depth to time if 12 blocks do not fit")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--no_time", action="store_true")
    a = ap.parse_args()
    if a.mode == "memory":
        print(json.dumps(memory(a.mesh, a.depth)))
        return
    if a.mode == "time":
        print(json.dumps(timing(a.depth, a.steps)))
        return

    import jax
    out: dict = {"device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
                 "jax": jax.__version__}
    out["memory_1_device"] = memory("data:1", a.depth)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, __file__, "--mode=memory", "--mesh=fsdp:8"] + (
        [f"--depth={a.depth}"] if a.depth else [])
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out["memory_8_devices_fsdp8"] = (json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0
                                     else {"error": p.stderr[-2000:]})
    if not a.no_time:
        need = out["memory_1_device"]["per_device_gib"]["peak_estimate"] * 1.1
        avail = _mem_available_gib()
        depth = a.depth
        if need > avail:
            out["timing_note"] = (f"full model needs ~{need:.1f} GiB, MemAvailable {avail:.1f} GiB: "
                                  f"timing depth {a.time_depth} instead")
            depth = a.time_depth
        if depth is not None or need <= avail:
            cmd = [sys.executable, __file__, "--mode=time", f"--steps={a.steps}"] + (
                [f"--depth={depth}"] if depth else [])
            p = subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
            out["step_time"] = (json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0
                                else {"error": p.stderr[-2000:]})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
