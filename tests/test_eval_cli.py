"""Baselines, and the evaluate command end to end on a tiny synthetic corpus (baselines only)."""
import json
import shutil

import numpy as np
import pytest

from gesture_jax.eval import baselines


def test_fit_length_plays_back_and_forth_without_jumps():
    clip = np.arange(5, dtype=np.float64)[:, None, None] * np.ones((1, 2, 3))
    out = baselines.fit_length(clip, 13)
    assert out.shape == (13, 2, 3)
    assert list(out[:, 0, 0]) == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert np.abs(np.diff(out[:, 0, 0])).max() == 1.0
    assert baselines.fit_length(clip, 3).shape[0] == 3


def test_mismatched_mean_pose_and_noise_baselines():
    rng = np.random.default_rng(0)
    real = [rng.normal(size=(n, 4, 3)) for n in (30, 50, 40)]
    mm = baselines.mismatched(real)
    assert [m.shape[0] for m in mm] == [30, 50, 40]
    np.testing.assert_array_equal(mm[0], real[1][:30])
    np.testing.assert_array_equal(baselines.mismatched(real[:1])[0], real[0][::-1])
    pool = [rng.normal(size=(n, 4, 3)) for n in (20, 60, 45, 35, 70, 25)]
    assert baselines.pick_others(3, 6) == [1, 3, 5] and baselines.pick_others(4, 2) == [0, 0, 1, 1]
    from_pool = baselines.mismatched(real, pool)
    np.testing.assert_array_equal(from_pool[1][:35], pool[3])  # 35 frames, played back and forth to 50
    np.testing.assert_array_equal(from_pool[1], baselines.fit_length(pool[3], 50))
    np.testing.assert_array_equal(from_pool[0], baselines.fit_length(pool[1], 30))
    assert [m.shape[0] for m in from_pool] == [30, 50, 40]
    pose = rng.normal(size=(4, 3))
    mp = baselines.mean_pose(real, pose)
    assert all(np.all(m == pose) for m in mp)
    to_pos = lambda f: np.repeat(f[:, :4, None], 3, axis=2)  # features -> [N, 4, 3]
    a = baselines.random_noise(real, 6, to_pos, seed=3)
    b = baselines.random_noise(real, 6, to_pos, seed=3)
    c = baselines.random_noise(real, 6, to_pos, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])


def _tiny_run(tmp_path):
    """Synthetic corpus -> prepare -> tiny FGD AE -> a workdir holding config.json and data/."""
    from configs import demo
    from data_prep.prepare import run_prepare
    from data_prep.synthetic import generate_corpus
    from gesture_jax import evaluate

    cfg = demo.get_config()
    cfg.data.root, cfg.data.out = str(tmp_path / "src"), str(tmp_path / "data")
    cfg.data.num_workers = 1
    cfg.eval.fgd_ae_steps, cfg.eval.fgd_ae_hidden, cfg.eval.fgd_ae_latent = 20, 8, 4
    cfg.eval.bc_mask_frames = 20
    generate_corpus(cfg.data.root, num_train=2, num_test=2, duration_s=6.0, seed=0)
    run_prepare(cfg, progress=False)
    ae_dir = evaluate.train_fgd_ae(cfg, None, None)
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    shutil.copy(tmp_path / "data" / "manifest.json", run / "data" / "manifest.json")
    shutil.copytree(tmp_path / "data" / "motion_pipeline", run / "data" / "motion_pipeline")
    (run / "config.json").write_text(cfg.to_json())
    return cfg, run, ae_dir


@pytest.mark.slow
def test_evaluate_model_path_with_random_weights_is_seed_deterministic(tmp_path):
    """The generation path of evaluate_run (random-weight denoiser: no training needed)."""
    import types

    from flax import nnx

    from gesture_jax import evaluate
    from gesture_jax.models.denoiser import build_denoiser
    from gesture_jax.motion.pipeline import MotionPipeline

    cfg, run, ae_dir = _tiny_run(tmp_path)
    with cfg.unlocked():
        cfg.model.depth, cfg.model.dim, cfg.model.heads = 1, 32, 2
        cfg.diffusion.num_steps = 20
    man = json.loads((run / "data" / "manifest.json").read_text())
    pipe = MotionPipeline.load(run / "data" / "motion_pipeline")
    window = int(cfg.data.window_s * cfg.data.fps)
    model = build_denoiser(cfg.model, pipe.feature_dim, man["audio"]["dim"], window, nnx.Rngs(0), fps=cfg.data.fps)
    bundle = types.SimpleNamespace(config=cfg, model=model, pipeline=pipe, step=7, manifest={})
    kw = dict(bundle=bundle, fgd_ae=str(ae_dir), sampler="ddim", steps=3)
    r1 = evaluate.evaluate_run(str(run), tmp_path / "o1", seed=1, save_motion=True, **kw)
    evaluate.evaluate_run(str(run), tmp_path / "o2", seed=1, **kw)
    r3 = evaluate.evaluate_run(str(run), tmp_path / "o3", seed=2, **kw)
    assert (tmp_path / "o1" / "metrics.json").read_bytes() == (tmp_path / "o2" / "metrics.json").read_bytes()
    assert r1["checkpoint_step"] == 7 and r1["sampling"]["sampler"] == "ddim" and r1["sampling"]["steps"] == 3
    for k in ("fgd", "fgd_raw", "bc", "l1div", "jerk", "acceleration"):
        assert k in r1 and k in r1["summary"]["model"]
    assert r1["jerk"] != r3["jerk"]  # the seed reaches the sampler
    r4 = evaluate.evaluate_run(str(run), tmp_path / "o4", seed=1, smooth_sigma=2.0, **kw)
    assert r1["sampling"]["smooth"] == cfg.sample.smooth_sigma and r4["sampling"]["smooth"] == 2.0
    assert r4["jerk"] < 0.5 * r1["jerk"]  # sigma 2 vs the config's: the flag reaches generation and is recorded
    assert sorted(p.name for p in (tmp_path / "o1" / "motion").iterdir()) == [f + ".bvh" for f in r1["files"]]


def test_evaluate_baselines_end_to_end_is_deterministic(tmp_path):
    """Synthetic corpus -> prepare -> FGD AE -> evaluate --baselines_only twice -> identical metrics.json."""
    from gesture_jax import evaluate

    cfg, run, ae_dir = _tiny_run(tmp_path)
    assert json.loads((ae_dir / "meta.json").read_text())["stride"] == 17
    reports = [evaluate.evaluate_run(str(run), tmp_path / f"out{i}", baselines_only=True, fgd_ae=str(ae_dir))
               for i in (1, 2)]
    a, b = ((tmp_path / f"out{i}" / "metrics.json").read_bytes() for i in (1, 2))
    assert a == b
    assert (tmp_path / "out1" / "metrics.png").stat().st_size > 10_000
    r = reports[0]
    assert set(r["baselines"]) == {"ground_truth", "mismatched", "mean_pose", "random_noise"}
    # mismatched motion comes from training recordings, so its FGD is not 0 by construction
    assert all(f.startswith("demo_train_") for f in r["mismatched_from"]) and r["baselines"]["mismatched"]["fgd"] > 0
    for row in r["baselines"].values():
        assert {"fgd", "fgd_raw", "bc", "l1div", "jerk", "acceleration", "hellinger_speed"} <= set(row)
    gt, mp, rn = (r["baselines"][k] for k in ("ground_truth", "mean_pose", "random_noise"))
    assert abs(gt["fgd"]) < 1e-6 and abs(gt["fgd_raw"]) < 1e-6 and gt["hellinger_speed"] < 1e-6
    assert mp["fgd"] > 0 and mp["l1div"] == 0 and mp["jerk"] == 0 and mp["bc"] == 0
    assert rn["jerk"] > gt["jerk"] and rn["fgd_raw"] > 0
    assert r["constants"]["bc_mask_frames"] == 20 and r["fgd_autoencoder"]["window"] == 34


def test_evaluate_set_suite_on_ground_truth_and_noise():
    """The whole suite without an autoencoder: GT against itself is 0 where it must be."""
    from gesture_jax.eval.metrics import MetricConstants, evaluate_set, make_reference

    rng = np.random.default_rng(0)
    t = np.arange(200)[:, None, None] / 20.0
    real = [np.sin(2 * np.pi * rng.uniform(0.2, 1.0, size=(1, 5, 3)) * t) * 10 for _ in range(3)]
    waves = [np.zeros(200 * 800, np.float32) for _ in real]  # silence: BC undefined
    k = MetricConstants(fgd_window=20, fgd_stride=10, bc_mask_frames=10)
    ref = make_reference(real, k, None, bc_joints=[1, 2, 3])
    gt = evaluate_set(real, waves, ref, k, mean_speed=1.0, bc_joints=[1, 2, 3], ae=None, file_ids=["a", "b", "c"])
    assert np.isnan(gt["fgd"]) and any("autoencoder" in n for n in gt["notes"])
    assert abs(gt["fgd_raw"]) < 1e-6 and gt["hellinger_speed"] < 1e-6 and np.isnan(gt["bc"])
    assert set(gt["per_file"]) == {"a", "b", "c"} and gt["per_file"]["a"]["frames"] == 200
    noisy = [c + rng.normal(size=c.shape) for c in real]
    nz = evaluate_set(noisy, waves, ref, k, mean_speed=1.0, bc_joints=[1, 2, 3], ae=None)
    assert nz["fgd_raw"] > 1.0 and nz["jerk"] > 10 * gt["jerk"] and nz["hellinger_speed"] > 0.3
