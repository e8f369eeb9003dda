"""Damaged checkpoints and non-finite training never reach a model silently (issue 15).

One reference run of 9 steps (checkpoints at 3, 6, 9) gives the loss curve. Each fault case
copies a 6-step run, damages one file of step 6 (flipped bytes, truncated, deleted), trains
on to step 9 with the same call, and must (a) say step 6 is damaged and resume from step 3,
(b) reproduce the reference losses of steps 4..9 exactly, (c) keep the damaged step's files in
checkpoints_rejected/. Inference refuses a damaged step and names the newest good one.

Most tests here train the same tiny model again (that training, resuming, saving or refusing is
what they check), so the module runs with jax's persistent compilation cache (tests/conftest.py,
`compile_cache`): the train step's XLA executable is compiled once and loaded from the cache by
the later runs and command-line processes instead of compiled again from the same program.
"""
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_fixtures as tf  # noqa: E402
from gesture_jax.training import check as check_lib  # noqa: E402
from gesture_jax.training import checkpoint as ckpt_lib  # noqa: E402
from gesture_jax.training import inference, loop, verify  # noqa: E402

STEPS = 9

pytestmark = pytest.mark.usefixtures("compile_cache")  # before the module's `runs` fixture


def _cfg(data: Path, **over):
    cfg = tf.make_prepared(data) if not (data / "manifest.json").exists() else tf.tiny_config(data)
    with cfg.unlocked():
        cfg.train.num_steps, cfg.train.checkpoint_every, cfg.train.log_every = STEPS, 3, 1
        cfg.train.ema_decay = 0.9        # an EMA item to damage
        cfg.train.async_checkpoint = True
        for k, v in over.items():
            cfg.train[k] = v
    return cfg


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    cfg = _cfg(data)
    loop.train(cfg, root / "reference", progress=False)
    loop.train(cfg, root / "six", stop_after=6, progress=False)
    return root, cfg


def _largest(d: Path) -> Path:
    files = [p for p in d.rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _target(step_dir: Path, kind: str) -> Path:
    return {"weights": lambda: _largest(step_dir / "params"),
            "optimizer": lambda: _largest(step_dir / "opt_state"),
            "ema": lambda: _largest(step_dir / "ema"),
            "data_state": lambda: next((step_dir / "data").glob("process_*.json")),
            "meta": lambda: _largest(step_dir / "meta"),
            "orbax_metadata": lambda: step_dir / "_CHECKPOINT_METADATA",
            "checksums": lambda: step_dir / verify.CHECKSUMS}[kind]()


def _damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "flip":
        mid = len(raw) // 2
        for i in range(mid, min(mid + 16, len(raw))):
            raw[i] ^= 0x5A
        path.write_bytes(bytes(raw))
    elif how == "truncate":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif how == "delete":
        path.unlink()


CASES = [("weights", "flip"), ("optimizer", "flip"), ("ema", "flip"), ("data_state", "flip"),
         ("meta", "flip"), ("orbax_metadata", "flip"), ("weights", "truncate"), ("weights", "delete"),
         ("checksums", "delete")]


@pytest.mark.parametrize("kind,how", CASES)
def test_resume_skips_a_damaged_step_and_continues_the_same_curve(runs, tmp_path, capsys, kind, how):
    root, cfg = runs
    run = tmp_path / "run"
    shutil.copytree(root / "six", run)
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]
    target = _target(run / "checkpoints" / "6", kind)
    _damage(target, how)

    res = loop.train(cfg, run, progress=False)
    out = capsys.readouterr()
    assert res.step == STEPS
    assert "checkpoint step 6 is damaged" in out.err and "resuming from step 3" in out.err, out.err
    assert "resumed at step 3" in out.out
    rel = target.relative_to(run / "checkpoints" / "6").as_posix()
    if kind != "checksums":
        assert rel in out.err  # the message names the damaged file
    ref, got = _losses(root / "reference"), _losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got[s] for s in range(4, STEPS + 1)], [ref[s] for s in range(4, STEPS + 1)],
                               rtol=1e-6, atol=0)
    rejected = run / ckpt_lib.REJECTED / "6"
    assert (rejected / "REJECTED.txt").is_file()
    # the resumed run wrote a fresh, verifying step 6 (and 9)
    reps = {r.step: r for r in verify.verify_run_dir(run / "checkpoints", [6, 9])}
    assert reps[6].ok and reps[9].ok


def test_a_step_that_verifies_is_used_and_nothing_is_rejected(runs, tmp_path, capsys):
    root, cfg = runs
    run = tmp_path / "run"
    shutil.copytree(root / "six", run)
    loop.train(cfg, run, progress=False)
    out = capsys.readouterr()
    assert "resumed at step 6" in out.out and "damaged" not in out.err
    assert not (run / ckpt_lib.REJECTED).exists()
    rows = check_lib.check_run(run)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]


def test_every_step_damaged_is_one_clear_error(runs, tmp_path):
    root, cfg = runs
    run = tmp_path / "run"
    shutil.copytree(root / "six", run)
    for s in (3, 6):
        _damage(_target(run / "checkpoints" / str(s), "weights"), "flip")
    with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint .* can be used"):
        loop.train(cfg, run, progress=False)


def test_inference_refuses_a_damaged_step_and_names_the_newest_good_one(runs, tmp_path):
    root, _ = runs
    run = tmp_path / "run"
    shutil.copytree(root / "reference", run)
    _damage(_target(run / "checkpoints" / "9", "ema"), "flip")
    with pytest.raises(inference.RunError, match=r"checkpoint .*/9 is damaged .*newest step that verifies is 6: "
                                                 r"pass --step=6"):
        inference.load_for_inference(run)
    assert inference.load_for_inference(run, step=6).step == 6


def test_check_command_lists_each_step(runs, tmp_path, capsys):
    root, _ = runs
    run = tmp_path / "run"
    shutil.copytree(root / "reference", run)
    _damage(_target(run / "checkpoints" / "6", "optimizer"), "truncate")
    assert check_lib.main([f"--workdir={run}"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step 9: ok" and lines[2] == "step 3: ok"
    assert lines[1].startswith("step 6: damaged: ") and "opt_state" in lines[1]
    assert check_lib.main([f"--workdir={tmp_path / 'nothing'}"]) == 2


def test_check_finds_non_finite_weights_that_match_their_checksums(runs, tmp_path):
    """NaN written before hashing (a bug, not a disk fault) is still caught by the finite pass."""
    root, _ = runs
    run = tmp_path / "run"
    shutil.copytree(root / "reference", run)
    import orbax.checkpoint as ocp
    step_dir = run / "checkpoints" / "9"
    ck = ocp.PyTreeCheckpointer()
    meta = ck.metadata(step_dir / "params")
    tree = meta.item_metadata.tree
    params = ck.restore(step_dir / "params", restore_args=jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    leaves[0] = np.full_like(leaves[0], np.nan)
    shutil.rmtree(step_dir / "params")
    ck.save(step_dir / "params", jax.tree_util.tree_unflatten(treedef, leaves))
    verify.write_checksums(step_dir)
    rows = {r["step"]: r for r in check_lib.check_run(run)}
    assert rows[9]["status"] == "damaged" and "non-finite" in rows[9]["problems"][0]
    assert rows[6]["status"] == "ok"
    with pytest.raises(inference.RunError, match="non-finite"):
        inference.load_for_inference(run, use_ema=False)


def test_runs_from_before_checksums_still_resume_unverified(runs, tmp_path, capsys):
    root, cfg = runs
    run = tmp_path / "run"
    shutil.copytree(root / "six", run)
    for s in (3, 6):
        (run / "checkpoints" / str(s) / verify.CHECKSUMS).unlink()
    (run / "checkpoints" / verify.POLICY).unlink()
    res = loop.train(cfg, run, progress=False)
    out = capsys.readouterr()
    assert res.step == STEPS and "resumed at step 6" in out.out and "unverified" in out.err
    assert verify.read_policy(run / "checkpoints") == 7   # steps written from now on must verify
    assert verify.verify_run_dir(run / "checkpoints", [9])[0].ok


# ----------------------------------------------------------------------------- non-finite
def _finite_model(bundle) -> bool:
    from flax import nnx
    return not verify.nonfinite_paths(nnx.state(bundle.model, nnx.Param)) and \
        len(jax.tree_util.tree_leaves(nnx.state(bundle.model, nnx.Param))) > 0


def test_divergence_stops_at_the_first_nonfinite_step_without_saving_it(runs, tmp_path):
    root, _ = runs
    # every step a save point and no log rows: only the check before each save stands
    # between the first non-finite step and its checkpoint
    cfg = _cfg(root / "data", lr=1e30, warmup_steps=0, clip_norm=0.0, ema_decay=0.0, checkpoint_every=1,
               log_every=100)
    run = tmp_path / "run"
    with pytest.raises(loop.NonFiniteError, match=r"step (\d+): loss .* is not finite") as ei:
        loop.train(cfg, run, progress=False)
    bad = int(__import__("re").search(r"step (\d+):", str(ei.value)).group(1))
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert all(s < bad for s in saved), (bad, saved)
    assert f"nothing after step {bad - 1} was saved" in str(ei.value)
    if saved:
        assert _finite_model(inference.load_for_inference(run))
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert max(r["step"] for r in rows) <= bad


def _nan_data(out: Path):
    """The tiny dataset with 2 of its 40 training windows at 1e30 (finite as stored, inf once
    squared: the data layer itself refuses NaN)."""
    from gesture_jax.data import manifest as manifest_lib
    from gesture_jax.data import records, shards
    cfg = tf.make_prepared(out)
    m = manifest_lib.read_manifest(out)
    recs = []
    for s in m["splits"]["train"]["shards"]:
        recs += shards.read_records(out / s["path"])
    for i in (5, 23):
        w = records.decode_window(recs[i])
        w["motion"] = np.full_like(np.asarray(w["motion"]), 1e30)
        recs[i] = records.encode_window(w)
    for s in m["splits"]["train"]["shards"]:
        (out / s["path"]).unlink()
    m["splits"]["train"]["shards"] = shards.write_split_shards(out, "train", recs, 16)
    manifest_lib.save_manifest(out, m)
    return cfg


def test_skip_mode_skips_nonfinite_steps_and_counts_them(tmp_path):
    _nan_data(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", nonfinite="skip", num_steps=12)
    run = tmp_path / "run"
    res = loop.train(cfg, run, progress=False)
    assert res.step == 12
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    skipped = max(r.get("nonfinite_steps", 0) for r in rows)
    nan_rows = [r for r in rows if "loss" in r and (r["loss"] is None or not np.isfinite(r["loss"]))]
    assert skipped == len(nan_rows) > 0          # every NaN step counted, none missed
    assert _finite_model(inference.load_for_inference(run))
    assert all(r.ok for r in verify.verify_run_dir(run / "checkpoints", [3, 6, 9, 12]))


def test_skip_mode_gives_up_after_too_many_in_a_row(tmp_path):
    _nan_data(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", nonfinite="skip", num_steps=12, max_nonfinite_skips=0)
    with pytest.raises(loop.NonFiniteError, match=r"1 non-finite steps in a row \(train.max_nonfinite_skips=0\)"):
        loop.train(cfg, tmp_path / "run", progress=False)


def test_unknown_nonfinite_mode_is_a_config_error(runs, tmp_path):
    root, _ = runs
    cfg = _cfg(root / "data", nonfinite="ignore")
    with pytest.raises(loop.TrainConfigError, match="train.nonfinite='ignore'"):
        loop.train(cfg, tmp_path / "run", progress=False)


# ------------------------------------------------------------------------ data faults
def test_a_corrupt_record_mid_run_saves_the_last_step_then_resumes_after_repair(runs, tmp_path):
    """A shard damaged under a running job: one clear error naming shard and record, a
    checkpoint of the last completed step (checkpoint_every is far away), nothing after it;
    once the shard is repaired the same command continues the reference curve."""
    from test_data_faults import corrupt_record
    root, _ = runs
    data = tmp_path / "data"
    cfg = _cfg(data, checkpoint_every=100)
    shard = sorted(data.glob("train-*.array_record"))[1]
    good = shard.read_bytes()
    corrupt_record(shard, 3)
    run = tmp_path / "run"
    with pytest.raises(loop.DataFaultError, match=rf"{shard.name}: record 3 is corrupt .*re-create it with: "
                                                  rf"python -m data_prep.prepare .*training stopped before step (\d+)\)") as ei:
        loop.train(cfg, run, progress=False)
    stopped = int(__import__("re").search(r"before step (\d+)", str(ei.value)).group(1)) - 1
    assert 1 <= stopped < STEPS
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [stopped] and verify.verify_run_dir(run / "checkpoints", saved)[0].ok
    assert max(_losses(run)) == stopped

    shard.write_bytes(good)  # what `data_prep.prepare` does for this shard (tests/test_data_faults.py)
    res = loop.train(cfg, run, progress=False)
    assert res.step == STEPS
    ref, got = _losses(root / "reference"), _losses(run)
    np.testing.assert_allclose([got[s] for s in range(1, STEPS + 1)], [ref[s] for s in range(1, STEPS + 1)],
                               rtol=1e-6, atol=0)


# ------------------------------------------------------------- one line, exit 2, --verbose
def _cli(args: list[str]):
    import os
    import subprocess
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", *args], cwd=repo, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""))


def test_command_line_errors_about_user_files_are_one_line_and_exit_2(runs, tmp_path, capsys):
    from test_data_faults import corrupt_record

    from gesture_jax import generate
    root, _ = runs
    # train: a shard damaged mid-run (data built here, corrupt record 3 of the 2nd shard)
    data = tmp_path / "data"
    tf.make_prepared(data)
    corrupt_record(sorted(data.glob("train-*.array_record"))[1], 3)
    config = Path(__file__).resolve().parent / "tiny_train_config.py"
    argv = ["gesture_jax.train", f"--config={config}:{data}", f"--workdir={tmp_path / 'w'}",
            "--config.train.num_steps=9"]
    p = _cli(argv)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and lines[-1].startswith("error: ") and "record 3 is corrupt" in lines[-1], p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    v = _cli(argv + ["--verbose"])
    assert v.returncode == 2 and "Traceback" in v.stderr and "record 3 is corrupt" in v.stderr.strip().splitlines()[-1]

    # generate and evaluate: the newest step of a run damaged
    run = tmp_path / "run"
    shutil.copytree(root / "reference", run)
    _damage(_target(run / "checkpoints" / "9", "ema"), "flip")
    assert generate.main([f"--workdir={run}", f"--audio={tmp_path / 'x.wav'}", f"--out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "pass --step=6" in err[0], err
    p = _cli(["gesture_jax.evaluate", f"--workdir={run}", f"--out={tmp_path / 'e'}"])
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "is damaged" in lines[0] and "--step=6" in lines[0], p.stderr[-3000:]

    # prepare: a source folder that does not exist
    p = _cli(["data_prep.prepare", "--config=configs/demo.py", f"--config.data.root={tmp_path / 'none'}",
              f"--config.data.out={tmp_path / 'prep'}"])
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and lines[-1].startswith("error: ") and "none" in lines[-1] and "Traceback" not in p.stderr


def test_resume_rejects_a_step_with_nonfinite_weights_even_when_checksums_match(runs, tmp_path, capsys):
    root, cfg = runs
    run = tmp_path / "run"
    shutil.copytree(root / "six", run)
    import orbax.checkpoint as ocp
    step_dir = run / "checkpoints" / "6"
    ck = ocp.PyTreeCheckpointer()
    tree = ck.metadata(step_dir / "ema").item_metadata.tree
    ema = ck.restore(step_dir / "ema", restore_args=jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
    leaves, treedef = jax.tree_util.tree_flatten(ema)
    leaves[-1] = np.full_like(leaves[-1], np.inf)
    shutil.rmtree(step_dir / "ema")
    ck.save(step_dir / "ema", jax.tree_util.tree_unflatten(treedef, leaves))
    verify.write_checksums(step_dir)
    assert verify.verify_step(step_dir).ok
    res = loop.train(cfg, run, progress=False)
    err = capsys.readouterr().err
    assert res.step == STEPS and "checkpoint step 6 is damaged (non-finite values in ['ema']" in err, err
    assert "resuming from step 3" in err


def test_step_metadata_may_change_its_commit_time_but_nothing_else(tmp_path):
    """Orbax rewrites _CHECKPOINT_METADATA when it commits a step (after the checksums):
    its commit time may differ, which handler wrote each item may not."""
    step = tmp_path / "7"
    (step / "params").mkdir(parents=True)
    (step / "params" / "w").write_bytes(b"\x00" * 64)
    meta = {"item_handlers": {"params": "StandardCheckpointHandler"}, "commit_timestamp_nsecs": 1,
            "init_timestamp_nsecs": 0, "performance_metrics": {}}
    (step / "_CHECKPOINT_METADATA").write_text(json.dumps(meta))
    verify.write_checksums(step)
    (step / "_CHECKPOINT_METADATA").write_text(json.dumps(dict(meta, commit_timestamp_nsecs=99)))
    assert verify.verify_step(step).ok
    (step / "_CHECKPOINT_METADATA").write_text(json.dumps(dict(meta, item_handlers={"params": "Other"})))
    rep = verify.verify_step(step)
    assert not rep.ok and "_CHECKPOINT_METADATA" in rep.problems[0]
