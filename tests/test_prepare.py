"""data_prep.prepare end to end: determinism, kill + resume, unreadable files, multi-machine.

Runs the real command (subprocesses) on a tiny synthetic corpus: 4 training takes and 1
held-out take of 10 s, mel features.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep import synthetic
from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import records, shards

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_src")
    synthetic.generate_corpus(root, num_train=4, num_test=1, duration_s=10.0, seed=1)
    return root


def _cmd(root: Path, out: Path, *extra: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "data_prep.prepare", "--config=configs/demo.py",
            f"--config.data.root={root}", f"--config.data.out={out}", f"--config.data.num_workers={workers}",
            "--config.data.records_per_shard=16", "--config.data.mirror=True", *extra]  # mirrored windows as the reference


def _prepare(root: Path, out: Path, *extra: str, workers: int = 1) -> dict:
    r = subprocess.run(_cmd(root, out, *extra, workers=workers), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


def _prepare_here(root: Path, out: Path, **kw) -> dict | None:
    """The same preparation in this process (no interpreter start-up): run_prepare."""
    from configs import demo
    from data_prep import prepare
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out = str(root), str(out)
        cfg.data.num_workers, cfg.data.records_per_shard = 1, 16
        cfg.data.mirror = True  # as _cmd
    return prepare.run_prepare(cfg, progress=False, **kw)


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.array_record"))}


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory) -> Path:
    """The command with 2 worker processes; every other run here uses 1 (in-process), so
    comparisons with it also show that worker processes do not change the bytes."""
    out = tmp_path_factory.mktemp("prepared") / "a"
    _prepare(corpus, out, workers=2)
    return out


def test_manifest_counts_and_windows(baseline):
    m = json.loads((baseline / "manifest.json").read_text())
    # 10 s at 20 fps, 4 s windows: train stride 2 s -> 4 windows x 2 (mirrored); test stride 4 s -> 2
    assert m["counts"] == {"train": 4 * 4 * 2, "test": 2}
    assert [s["path"] for s in m["splits"]["train"]["shards"]] == [
        "train-00000-of-00002.array_record", "train-00001-of-00002.array_record"]
    assert m["window_frames"] == 80 and m["fps"] == 20 and m["audio"]["feature"] == "mel"
    assert (baseline / "motion_pipeline").is_dir()
    f0 = m["splits"]["train"]["files"][0]
    assert f0["file_id"] == "demo_train_000" and len(f0["sha256"]["bvh"]) == 64
    recs = [records.decode_window(r) for r in shards.read_records(baseline / "train-00000-of-00002.array_record")]
    assert [(r["file_id"], r["start_frame"], r["mirrored"]) for r in recs[:9]] == (
        [("demo_train_000", s, False) for s in (0, 40, 80, 120)] + [("demo_train_000", s, True) for s in (0, 40, 80, 120)]
        + [("demo_train_001", 0, False)])
    # mirrored windows carry the same audio as the plain ones
    assert np.array_equal(recs[0]["audio"], recs[4]["audio"]) and not np.array_equal(recs[0]["motion"], recs[4]["motion"])
    test = [records.decode_window(r) for r in shards.read_records(baseline / "test-00000-of-00001.array_record")]
    assert [r["start_frame"] for r in test] == [0, 80]


def test_same_command_twice_gives_identical_bytes(corpus, baseline, tmp_path):
    out = tmp_path / "b"
    _prepare_here(corpus, out)
    assert _shard_bytes(out) == _shard_bytes(baseline)
    before = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*")}
    _prepare_here(corpus, out)  # rerun in place: nothing redone, same bytes
    assert {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*")} == before
    assert _shard_bytes(out) == _shard_bytes(baseline)


def test_killed_run_resumes_to_the_same_bytes(corpus, baseline, tmp_path):
    out = tmp_path / "c"
    proc = subprocess.Popen(_cmd(corpus, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "work" / "windows").glob("*.json"))) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "manifest.json").exists(), "run ended before the kill"
    finished = {p: p.stat().st_mtime_ns for p in (out / "work" / "windows").glob("*.json")}
    assert finished
    _prepare_here(corpus, out)  # = rerunning the command (run_prepare is its body), minus start-up
    assert _shard_bytes(out) == _shard_bytes(baseline)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished files not redone


def test_unreadable_and_unpaired_files_are_listed_and_skipped(corpus, tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    for p in corpus.glob("*.*"):
        (root / p.name).symlink_to(p)
    (root / "demo_train_007.bvh").write_text("HIERARCHY\nROOT Hips\n{\n OFFSET 0 0\n")  # truncated
    os.link(corpus / "demo_train_000.wav", root / "demo_train_007.wav")
    (root / "demo_train_008.wav").write_bytes(b"RIFF not a wav")                   # unreadable audio
    os.link(corpus / "demo_train_000.bvh", root / "demo_train_008.bvh")
    (root / "demo_test_005.wav").symlink_to(corpus / "demo_test_000.wav")  # no BVH
    other = (corpus / "demo_train_001.bvh").read_text().replace("JOINT Head\n", "JOINT Head2\n")
    (root / "demo_train_006.bvh").write_text(other)                        # another skeleton
    os.link(corpus / "demo_train_001.wav", root / "demo_train_006.wav")
    m = _prepare_here(root, tmp_path / "out")
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"demo_train_006.bvh", "demo_train_007.bvh", "demo_train_008.bvh",
                            "demo_test_005.wav"}, reasons
    assert "first file's layout" in reasons["demo_train_006.bvh"]
    assert "demo_train_007.bvh" in reasons["demo_train_007.bvh"] and "no .bvh" in reasons["demo_test_005.wav"]
    assert "demo_train_008.wav" in reasons["demo_train_008.bvh"]
    assert m["counts"]["train"] == 32 and m["splits"]["train"]["num_files"] == 4


def test_other_settings_into_same_folder_are_refused(corpus, baseline):
    r = subprocess.run(_cmd(corpus, baseline, "--config.data.stride_s=1.0"), cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0 and "other settings" in r.stderr and "data.stride_s" in r.stderr
    assert "Traceback" not in r.stderr


def test_two_machines_give_the_same_shards(corpus, baseline, tmp_path):
    """--num_shards=2: each machine does its half; results wait on each other's files.

    Run one after the other with wait_s=0, so each gives up where it needs the other's
    results (as a machine would after --wait_s), and is rerun, as documented.
    """
    from data_prep.prepare import PrepareError
    out = tmp_path / "d"
    with pytest.raises(PrepareError, match="training-file stats"):
        _prepare_here(corpus, out, num_shards=2, shard_index=1, wait_s=0)   # its stats only
    with pytest.raises(PrepareError, match="prepared files"):
        _prepare_here(corpus, out, num_shards=2, shard_index=0, wait_s=0)   # fit + its windows
    assert _prepare_here(corpus, out, num_shards=2, shard_index=1, wait_s=0) is None  # its windows
    m = _prepare_here(corpus, out, num_shards=2, shard_index=0, wait_s=0)  # assembles
    assert _shard_bytes(out) == _shard_bytes(baseline)
    assert m["counts"] == json.loads((baseline / "manifest.json").read_text())["counts"]


def _die(item):
    os._exit(3)  # a worker killed mid-file (as by the out-of-memory killer)


def test_dead_worker_process_is_a_clear_error_not_a_hang(tmp_path):
    from configs import demo
    from data_prep import prepare
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.num_workers = 2
    with pytest.raises(prepare.PrepareError, match="worker process died during 'windows'.*rerun"):
        with prepare._Workers(cfg, tmp_path, max_jobs=2, progress=False) as workers:
            workers.run(_die, [1, 2], "windows")
