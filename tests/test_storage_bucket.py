"""A whole run kept in a bucket, against a local GCS emulator (tests/gcs_emulator.py).

The commands are launch/README.md's "Runs and data in a bucket" section, with the bucket
renamed: synthetic corpus on the bucket -> prepare into the bucket -> train with a gs://
workdir, SIGKILLed after its first checkpoint -> the same command resumes on the same loss
curve as an uninterrupted run -> generate and evaluate from the bucket run. Every command
runs from an empty folder, which must stay empty: a gs:// path never becomes a local
``gs:`` folder. Then two processes of one jax.distributed job train into the bucket, each
writing its own checkpoint shards there, and a single process restores their checkpoint.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_parallel_multiprocess import _two_processes  # noqa: E402

REPO = HERE.parent
B = "gs://test-bucket"
STEPS, EVERY = 16, 4


def _env(cwd: Path) -> dict:
    """The emulator's variables (inherited), the repository importable from an empty folder,
    and the shard cache beside it instead of ~/.cache."""
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=str(REPO),
                GESTURE_JAX_CACHE=str(cwd.parent / "cache"))


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    t = time.time()
    p = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                       timeout=timeout)
    print(f"{time.time() - t:6.1f} s  {' '.join(args[:2])}")
    assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


def _losses(run: str) -> dict[int, float]:
    from gesture_jax import storage
    text = storage.path(f"{run}/metrics.jsonl").read_text()
    return {r["step"]: r["loss"] for r in map(json.loads, filter(str.strip, text.splitlines())) if "loss" in r}


def test_bucket_run_prepare_train_kill_resume_generate_evaluate(gcs_bucket, tmp_path):
    from gesture_jax import storage
    from gesture_jax.motion.bvh import read_bvh

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cfg = f"--config={REPO / 'configs' / 'demo.py'}"
    src, data = f"{B}/e2e/src", f"{B}/e2e/data"
    ov = [f"--config.data.root={src}", f"--config.data.out={data}"]
    _run(["-m", "data_prep.synthetic", cfg, *ov, "--config.data.synthetic.num_train=3",
          "--config.data.synthetic.num_test=1", "--config.data.synthetic.duration_s=10"], cwd)
    _run(["-m", "data_prep.prepare", cfg, *ov], cwd)
    assert storage.path(f"{data}/manifest.json").is_file()

    def train(workdir: str) -> list[str]:
        return [sys.executable, "-m", "gesture_jax.train", cfg, *ov, f"--workdir={workdir}",
                f"--config.train.num_steps={STEPS}", f"--config.train.checkpoint_every={EVERY}",
                "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.batch_size=4"]

    ref_run, run = f"{B}/e2e/ref", f"{B}/e2e/run"
    ref = subprocess.Popen(train(ref_run), cwd=cwd, env=_env(cwd), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(train(run), cwd=cwd, env=_env(cwd), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    # Orbax marks a step complete on a bucket with commit_success.txt (it cannot rename a
    # temporary folder there), written after our checksums.json
    first = storage.path(f"{run}/checkpoints/{EVERY}/commit_success.txt")
    deadline = time.time() + 600
    while not first.exists():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = max(_losses(run), default=0)
    assert killed_at < STEPS, "the run finished before it could be killed"

    resumed = subprocess.run(train(run), cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = re.findall(r"^resumed at step (\d+) from ", resumed.stdout, re.M)
    assert said and int(said[0]) >= EVERY, resumed.stdout[-2000:]
    assert ref.wait(timeout=900) == 0, ref.stderr.read()[-3000:]
    want, got = _losses(ref_run), _losses(run)
    assert sorted(want) == sorted(got) == list(range(1, STEPS + 1))
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)], (
        f"killed after step {killed_at}; curves differ")
    for f in ("config.json", "model_info.json", "data/manifest.json", "tensorboard"):
        assert storage.path(f"{run}/{f}").exists(), f

    out = f"{B}/e2e/out"
    gen = _run(["-m", "gesture_jax.generate", f"--workdir={run}", f"--audio={src}/demo_test_000.wav",
                f"--out={out}", "--video", "--steps=4"], cwd)
    assert json.loads(gen.stdout)["written"] == [f"{out}/demo_test_000.bvh", f"{out}/demo_test_000.mp4"]
    with storage.local_copy(f"{out}/demo_test_000.bvh") as local:
        bvh = read_bvh(local)
    assert bvh.frames.shape[0] == int(10.0 * 20) and np.isfinite(bvh.frames).all()
    assert storage.size(f"{out}/demo_test_000.mp4") > 1000
    # streaming: the audio read chunk by chunk from the bucket, the BVH uploaded when complete
    gen = _run(["-m", "gesture_jax.generate", f"--workdir={run}", f"--audio={src}/demo_test_000.wav",
                f"--out={out}/stream", "--stream", "--steps=2"], cwd)
    assert json.loads(gen.stdout)["written"] == [f"{out}/stream/demo_test_000.bvh"]
    with storage.local_copy(f"{out}/stream/demo_test_000.bvh") as local:
        assert read_bvh(local).frames.shape == bvh.frames.shape

    _run(["-m", "gesture_jax.evaluate", "--train_fgd_ae", cfg, *ov, "--config.eval.fgd_ae_steps=20",
          f"--fgd_ae={B}/e2e/fgd_ae"], cwd)
    _run(["-m", "gesture_jax.evaluate", f"--workdir={run}", f"--out={B}/e2e/eval", f"--fgd_ae={B}/e2e/fgd_ae",
          "--steps=4", "--sampler=dpm-solver++"], cwd)
    report = json.loads(storage.path(f"{B}/e2e/eval/metrics.json").read_text())
    assert np.isfinite(report["summary"]["model"]["fgd"])

    assert list(cwd.iterdir()) == [], f"local files appeared: {sorted(p.name for p in cwd.iterdir())}"


def test_two_processes_share_the_bucket_and_one_process_restores(gcs_bucket, tmp_path):
    import training_fixtures as tf
    from gesture_jax import storage

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    data, run = f"{B}/mh/data", f"{B}/mh/run"
    tf.make_prepared(storage.path(data))
    # the fixture's motion pipeline is an empty folder, which a bucket cannot hold
    storage.write_atomic(f"{data}/motion_pipeline/.keep", b"")
    cache = {"PYTHONPATH": str(REPO), "GESTURE_JAX_CACHE": str(tmp_path / "cache")}
    res = [r for r, _ in _two_processes(["train_run", data, run, "0"], cwd, **cache)]
    assert [r["step"] for r in res] == [9, 9] and res[0]["losses"] == res[1]["losses"]   # lockstep
    step = storage.path(f"{run}/checkpoints/9/params")
    assert {p.name for p in step.iterdir() if p.name.startswith("ocdbt.process_")} == {
        "ocdbt.process_0", "ocdbt.process_1"}, "each process writes its own shards into the bucket"
    two = [r for r, _ in _two_processes(["restore_fingerprint", run], cwd, **cache)]
    one = subprocess.run([sys.executable, str(HERE / "parallel_checks.py"), "restore_fingerprint", run], cwd=cwd,
                         env={**_env(cwd), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    single = json.loads(one.stdout.strip().splitlines()[-1])
    assert single["processes"] == 1 and two[0]["processes"] == 2
    assert single["step"] == two[0]["step"] == 9
    assert single["fingerprint"] == two[0]["fingerprint"] == two[1]["fingerprint"]
    assert list(cwd.iterdir()) == []
