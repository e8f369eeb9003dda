"""Two local JAX processes (jax.distributed, gloo on CPU) train in lockstep like one process.

Each process has 2 CPU devices; together they form a data:2 x fsdp:2 mesh over 4 devices,
feed their halves of each global batch, and must reproduce the single-process run on 4
devices (losses and final parameters, 1e-5 relative).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

CHECKS = Path(__file__).resolve().parent / "parallel_checks.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    for k in ("GESTURE_JAX_COORDINATOR", "GESTURE_JAX_NUM_PROCESSES", "GESTURE_JAX_PROCESS_ID"):
        env.pop(k, None)
    env.update(extra)
    return env


def test_two_processes_match_single_process(tmp_path):
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, str(CHECKS), "lockstep", str(tmp_path / "multi.npz")],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2",
                 GESTURE_JAX_COORDINATOR=f"127.0.0.1:{port}", GESTURE_JAX_NUM_PROCESSES="2",
                 GESTURE_JAX_PROCESS_ID=str(i)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    single = subprocess.run([sys.executable, str(CHECKS), "lockstep", str(tmp_path / "single.npz")],
                            env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                            capture_output=True, text=True, timeout=900)
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
        assert '"processes": 2' in o and '"devices": 4' in o, o
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = np.load(tmp_path / "multi.npz"), np.load(tmp_path / "single.npz")
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
    keys = [k for k in b.files if k.startswith("p/")]
    assert keys and sorted(keys) == sorted(k for k in a.files if k.startswith("p/"))
    scale = max(np.abs(b[k]).max() for k in keys)
    for k in keys:
        assert np.abs(a[k] - b[k]).max() <= 1e-5 * scale, k


def _two_processes(args: list[str], cwd=None, **env) -> list[tuple[dict, str]]:
    """Both processes of a jax.distributed job run ``parallel_checks.py ARGS``: [(result, stderr)]."""
    import json
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, str(CHECKS), *args], cwd=cwd,
        env=_env(**env, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                 GESTURE_JAX_COORDINATOR=f"127.0.0.1:{port}", GESTURE_JAX_NUM_PROCESSES="2",
                 GESTURE_JAX_PROCESS_ID=str(i)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    return [(json.loads(o.strip().splitlines()[-1]), e) for o, e in outs]


def test_two_process_run_skips_a_damaged_sharded_checkpoint(tmp_path):
    """Sharded checkpoints written by two processes carry checksums; a flipped weight file
    in the newest step makes both processes resume from the step before, and the curve
    continues as an uninterrupted two-process run's.

    The three two-process jobs train the same program: they share jax's persistent compilation
    cache (tests/conftest.py), so the second and third load the executables the first compiled."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import training_fixtures as tf
    from conftest import persistent_compilation_cache
    from gesture_jax.training import verify
    data = tmp_path / "data"
    tf.make_prepared(data)
    with persistent_compilation_cache(tmp_path / "jax_cache"):
        ref = _two_processes(["train_run", str(data), str(tmp_path / "ref"), "0"])
        run = tmp_path / "run"
        _two_processes(["train_run", str(data), str(run), "6"])
        step6 = run / "checkpoints" / "6"
        assert verify.verify_step(step6).ok
        weights = max((p for p in (step6 / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        weights.write_bytes(bytes(raw))
        res = _two_processes(["train_run", str(data), str(run), "0"])
    for r, err in res:
        assert r["step"] == 9 and r["processes"] == 2
    assert "checkpoint step 6 is damaged" in res[0][1] and "resuming from step 3" in res[0][1], res[0][1][-2000:]
    want = ref[0][0]["losses"]
    got = res[0][0]["losses"]
    np.testing.assert_allclose([got[str(s)] for s in range(4, 10)], [want[str(s)] for s in range(4, 10)], rtol=1e-6)
