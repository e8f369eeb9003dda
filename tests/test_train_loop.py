"""The training loop end to end on a tiny prepared dataset (in-process, one CPU device)."""
import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_fixtures as tf  # noqa: E402
from gesture_jax.training import inference, loop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_tiny_run_learns_writes_workdir_and_loads_for_inference(tmp_path):
    cfg = tf.make_prepared(tmp_path / "data")
    with cfg.unlocked():
        cfg.train.num_steps, cfg.train.log_every = 30, 5
        cfg.train.checkpoint_every, cfg.train.eval_every = 15, 15
        cfg.train.lr, cfg.train.ema_decay, cfg.train.cond_dropout = 3e-3, 0.9, 0.1
    run = tmp_path / "run"
    res = loop.train(cfg, run, progress=False)
    assert res.step == 30 and not res.preempted

    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 5, 10, 15, 20, 25, 30]
    for r in train_rows:
        assert {"step", "loss", "lr", "grad_norm", "steps_per_s"} <= set(r)
    first, last = train_rows[0]["loss"], train_rows[-1]["loss_avg"]
    assert last < 0.6 * first, f"loss did not clearly decrease: {first} -> {last}"
    # warm-up: lr(0) = lr * 8e-5 (the logged rate is the one step 1 used), then lr after warmup_steps
    np.testing.assert_allclose(train_rows[0]["lr"], 3e-3 * 8e-5, rtol=1e-6, atol=0)
    np.testing.assert_allclose(train_rows[-1]["lr"], 3e-3, rtol=1e-6, atol=0)
    assert [r["step"] for r in rows if "val_loss" in r] == [15, 30]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    info = json.loads((run / "model_info.json").read_text())
    assert info["param_count"] == sum(int(np.prod(s)) for s in info["param_shapes"].values())
    assert (tf.F, tf.A, tf.T) == (info["motion_dim"], info["audio_dim"], info["seq_len"])
    assert json.loads((run / "config.json").read_text())["model"]["dim"] == cfg.model.dim
    assert (run / "data" / "manifest.json").exists() and (run / "data" / "motion_pipeline").is_dir()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["15", "30"]

    b = inference.load_for_inference(run)
    assert b.step == 30 and b.used_ema and b.manifest["motion"]["feature_dim"] == tf.F
    x = jnp.zeros((2, tf.T, tf.F))
    out = b.model(x, jnp.array([0, 10]), jnp.zeros((2, tf.T, tf.A)), deterministic=True)
    assert out.shape == (2, tf.T, tf.F) and bool(jnp.all(jnp.isfinite(out)))
    raw = inference.load_for_inference(run, step=15, use_ema=False)
    assert raw.step == 15 and not raw.used_ema


def test_config_typo_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "gesture_jax.train", "--config=configs/demo.py",
                        f"--workdir={tmp_path / 'w'}", "--config.model.dpeth=4"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "no key 'model.dpeth'" in p.stderr and "--config.model.depth" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "w").exists()


def test_resume_with_a_different_model_is_refused(tmp_path):
    cfg = tf.make_prepared(tmp_path / "data")
    with cfg.unlocked():
        cfg.train.num_steps, cfg.train.checkpoint_every = 2, 2
    loop.train(cfg, tmp_path / "run", progress=False)
    with cfg.unlocked():
        cfg.model.dim = 32
    try:
        loop.train(cfg, tmp_path / "run", progress=False)
    except loop.TrainConfigError as e:
        assert "model.dim: 16 -> 32" in str(e)
    else:
        raise AssertionError("a changed model resumed silently")


def test_keys_added_since_a_run_was_written_resume_at_their_defaults(tmp_path):
    """A run whose config.json predates a key (model.step_table_rows, audio.native_rate) resumes
    with the key at its default - what the old code did - and is refused with any other value."""
    from configs import demo
    cfg = demo.get_config()
    loop.prepare_workdir(cfg, tmp_path, resuming=False)
    old = json.loads((tmp_path / "config.json").read_text())
    del old["model"]["step_table_rows"], old["audio"]["native_rate"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    loop.prepare_workdir(cfg, tmp_path, resuming=True)          # defaults: the same model
    (tmp_path / "config.json").write_text(json.dumps(old))
    with cfg.unlocked():
        cfg.model.step_table_rows = 1000
    try:
        loop.prepare_workdir(cfg, tmp_path, resuming=True)
    except loop.TrainConfigError as e:
        assert "model.step_table_rows: None -> 1000" in str(e)
    else:
        raise AssertionError("a key set away from its default resumed silently")
