"""Checkpoints: a SIGKILLed run resumes exactly; a checkpoint loads onto another mesh shape."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_fixtures as tf  # noqa: E402
from test_parallel_step import run_check  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "tiny_train_config.py"


def _cmd(data: Path, workdir: Path, steps: int, every: int) -> list[str]:
    return [sys.executable, "-m", "gesture_jax.train", f"--config={CONFIG}:{data}", f"--workdir={workdir}",
            f"--config.train.num_steps={steps}", f"--config.train.checkpoint_every={every}",
            "--config.train.log_every=1"]


def _losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _saved_steps(workdir: Path) -> list[int]:
    """Steps of the finished checkpoints (Orbax renames a step's directory when it is complete)."""
    return sorted(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit())


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")


def test_sigkill_then_same_command_continues_the_same_loss_curve(tmp_path):
    data = tmp_path / "data"
    tf.make_prepared(data)
    steps, every = 40, 4
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = subprocess.Popen(_cmd(data, ref_dir, steps, every), cwd=REPO, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cmd(data, run_dir, steps, every), cwd=REPO, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (run_dir / "checkpoints" / str(every)).is_dir():  # a finished (renamed) checkpoint
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = max(_losses(run_dir), default=0)
    assert killed_at < steps, "the run finished before it could be killed"
    last_saved = max(_saved_steps(run_dir))

    resumed = subprocess.run(_cmd(data, run_dir, steps, every), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # An equal curve alone does not show a resume: a restart from step 0 replays the same one.
    said = re.findall(r"^resumed at step (\d+) from ", resumed.stdout, re.M)
    assert said, f"no 'resumed at step N' message: {resumed.stdout[-2000:]}"
    assert int(said[0]) == last_saved >= every, (said, last_saved, killed_at)
    assert ref.wait(timeout=900) == 0, ref.stderr.read()[-3000:]
    want, got = _losses(ref_dir), _losses(run_dir)
    assert sorted(want) == sorted(got) == list(range(1, steps + 1))
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)], (
        f"killed after step {killed_at}; curves differ: "
        f"{[(s, want[s], got[s]) for s in sorted(want) if want[s] != got[s]][:5]}")


def test_checkpoint_restores_onto_other_mesh_shapes(tmp_path):
    res = run_check("reshard_restore", str(tmp_path / "ck"))
    for spec, r in res.items():
        assert r["equal"] and r["layout"], f"{spec}: {r}"
        assert r["data"] == {"position": 7}, f"{spec}: data iterator state not restored: {r}"


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    data = tmp_path / "data"
    tf.make_prepared(data)
    run_dir = tmp_path / "run"
    p = subprocess.Popen(_cmd(data, run_dir, 100_000, 1000), cwd=REPO, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (run_dir / "metrics.jsonl").exists() or max(_losses(run_dir), default=0) < 3:
        assert p.poll() is None, p.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "preempted" in out
    saved = _saved_steps(run_dir)
    assert saved and saved[-1] >= 3 and saved[-1] == max(_losses(run_dir))
