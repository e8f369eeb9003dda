"""Baselines, and the evaluate command end to end on a tiny synthetic corpus: baselines only, and
with a random-weight model (the generation branch)."""
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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(cfg, workdir, FGD AE dir) of _tiny_run, built once for this module; tests must not change it."""
    return _tiny_run(tmp_path_factory.mktemp("tiny_run"))


def _random_weight_bundle(cfg, run, step: int = 7):
    """An inference bundle for `run` with a random-weight, demo-shaped 1-block denoiser (no training)."""
    import copy
    import types

    from flax import nnx

    from gesture_jax.models.denoiser import build_denoiser
    from gesture_jax.motion.pipeline import MotionPipeline

    cfg = copy.deepcopy(cfg)
    with cfg.unlocked():
        cfg.model.depth, cfg.model.dim, cfg.model.heads = 1, 32, 2
        cfg.diffusion.num_steps = 20
    man = json.loads((run / "data" / "manifest.json").read_text())
    pipe = MotionPipeline.load(run / "data" / "motion_pipeline")
    window = int(cfg.data.window_s * cfg.data.fps)
    model = build_denoiser(cfg.model, pipe.feature_dim, man["audio"]["dim"], window, nnx.Rngs(0), fps=cfg.data.fps)
    return types.SimpleNamespace(config=cfg, model=model, pipeline=pipe, step=step, manifest={})


def test_evaluate_model_branch_generates_trims_saves_and_passes_seed_and_smoothing(tiny_run, tmp_path):
    """evaluate_run with a model (random weights, DDIM-2) on both 6 s test files, whose WAVs are
    cut to 5 s and padded to 7 s in a copy of the corpus (--data_root): generation gives 100 and
    140 frames against 120 of ground truth, so every set is scored on the shorter of the two
    per file (100, 120); --save_motion writes each file's generated BVH untrimmed, and it is
    exactly generate_motion's output with the requested seed and smooth_sigma (not seed 0, not
    the config's 0.75 frames), which metrics.json records."""
    import soundfile as sf

    from gesture_jax import evaluate
    from gesture_jax import generate as G
    from gesture_jax.audio.io import load_audio
    from gesture_jax.motion.bvh import read_bvh

    cfg, run, ae_dir = tiny_run
    bundle = _random_weight_bundle(cfg, run)
    src = tmp_path / "src"
    shutil.copytree(cfg.data.root, src)
    wavs = sorted(src.glob("demo_test_*.wav"))
    ids = [w.stem for w in wavs]
    for w, seconds in zip(wavs, (5.0, 7.0)):
        wave, sr = sf.read(str(w), dtype="float32")
        n = int(seconds * sr)
        sf.write(str(w), np.pad(wave, (0, max(0, n - len(wave))))[:n], sr)
    real = [len(evaluate.canonical_positions(bundle.pipeline, read_bvh(w.with_suffix(".bvh")))) for w in wavs]
    assert real == [120, 120]
    smooth = 2.0
    assert smooth != cfg.sample.smooth_sigma
    r = evaluate.evaluate_run(str(run), tmp_path / "o", bundle=bundle, fgd_ae=str(ae_dir), data_root=str(src),
                              sampler="ddim", steps=2, seed=3, smooth_sigma=smooth, save_motion=True)

    assert r["files"] == ids and r["checkpoint_step"] == 7
    assert {k: r["sampling"][k] for k in ("sampler", "steps", "seed", "smooth")} == \
        {"sampler": "ddim", "steps": 2, "seed": 3, "smooth": smooth}
    assert r["frames"] == [100, 120]  # min(generated, ground truth) per file
    for name, row in r["sets"].items():
        assert [row["per_file"][f]["frames"] for f in ids] == [100, 120], name
    for k in ("fgd", "fgd_raw", "bc", "l1div", "jerk", "acceleration"):
        assert r[k] == r["summary"]["model"][k]
    assert r["summary"]["model"]["fgd_raw"] > 1.0 and abs(r["summary"]["ground_truth"]["fgd_raw"]) < 1e-6

    saved = [read_bvh(tmp_path / "o" / "motion" / f"{f}.bvh") for f in ids]
    assert sorted(p.name for p in (tmp_path / "o" / "motion").iterdir()) == [f + ".bvh" for f in ids]
    assert [b.num_frames for b in saved] == [100, 140]
    waves = [load_audio(w) for w in wavs]

    def direct(**kw) -> list[np.ndarray]:
        return [per[0].frames for per in G.generate_motion(bundle, waves, sampler="ddim", steps=2, **kw)]

    want = direct(seed=3, smooth_sigma=smooth)
    for b, x in zip(saved, want):
        np.testing.assert_allclose(b.frames, x, atol=1e-3)  # BVH text precision
    for other in (direct(seed=0, smooth_sigma=smooth), direct(seed=3)):
        assert max(np.abs(b.frames - x).max() for b, x in zip(saved, other)) > 0.1


def test_evaluate_baselines_end_to_end_is_deterministic(tiny_run, tmp_path):
    """Synthetic corpus -> prepare -> FGD AE -> evaluate --baselines_only twice -> identical metrics.json."""
    from gesture_jax import evaluate

    cfg, run, ae_dir = tiny_run
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


def test_evaluate_cli_on_a_run_without_a_checkpoint_is_one_line(tiny_run, tmp_path):
    import subprocess
    import sys

    from conftest import REPO
    _, wd, ae = tiny_run  # config.json and data/, but never trained
    p = subprocess.run([sys.executable, "-m", "gesture_jax.evaluate", f"--workdir={wd}", f"--out={tmp_path / 'e'}",
                        f"--fgd_ae={ae}"], cwd=REPO, capture_output=True, text=True)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "no checkpoint" in lines[0] and str(wd) in lines[0], p.stderr[-2000:]
