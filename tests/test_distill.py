"""Few-step students (training/distill.py, methods/students.py, the "student" sampler).

Unit level: the student's sampler update and grid, the teacher's per-example ODE solve against
the shared sampler loop, the loss's target. Training level (the tiny prepared dataset of
training_fixtures, in-process): the distill stage starts from the teacher's EMA weights, keeps
its checkpoints apart from the teacher's and resumes like every stage. Behaviour on a trained
model (the session's demo_run fixture, copied): after a short distillation the student's one
step lands nearer the teacher's ODE result than the teacher's own one step does; generate
--sampler=student and streaming use it; the errors name what is wrong.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from training_fixtures import F, T, make_prepared, tiny_model_fn

from gesture_jax.models import diffusion
from gesture_jax.sampling import samplers
from gesture_jax.training import distill


# The tiny-data tests train the same model several times (resuming is what they check): jax's
# persistent compilation cache (conftest.compile_cache) loads the compiled step after the first.
pytestmark = pytest.mark.usefixtures("compile_cache")


def _cosine_ab(n=1000):
    return np.cumprod(1.0 - diffusion.make_betas("cosine", n))


# ------------------------------------------------------------------ grids and coefficients
def test_student_grid_and_update():
    ab = _cosine_ab()
    assert samplers.student_timesteps(1000, 1, 0.5).tolist() == [999]
    assert samplers.student_timesteps(1000, 2, 0.5).tolist() == [999, 500]
    assert samplers.student_timesteps(1000, 3, 0.5).tolist() == [999, 750, 500]
    co = samplers.sampler_coefficients(ab, samplers.STUDENT, 2, ts=np.array([999, 500]))
    # step 1: x0 of the student, noised afresh to t=500; step 2: the student's x0 is the sample
    np.testing.assert_allclose(co.a, [0.0, 0.0])
    np.testing.assert_allclose(co.b, [np.sqrt(ab[500]), 1.0], rtol=1e-6)
    np.testing.assert_allclose(co.s, [np.sqrt(1 - ab[500]), 0.0], rtol=1e-6)
    np.testing.assert_allclose(co.c, [0.0, 0.0])
    with pytest.raises(samplers.SamplerError, match="student"):
        samplers.sampler_coefficients(ab, samplers.STUDENT, 2)  # no grid
    with pytest.raises(samplers.SamplerError, match="do not fit"):
        samplers.student_timesteps(1000, 600, 0.5)


def test_training_levels_and_teacher_tables_match_the_samplers():
    ab = _cosine_ab()
    lv = distill.training_levels(1000, 5, 0.3)
    assert lv[0] == 999 and len(lv) == 5 and np.all(np.diff(lv) < 0) and lv[-1] == round(0.3 * 999)
    tab = distill.teacher_tables(ab, lv, "dpm-solver++", 10)
    # from T-1 the targets come from exactly the teacher's own 10-step ODE sampler
    own = samplers.sampler_coefficients(ab, "dpm-solver++", 10, eta=0.0)
    np.testing.assert_array_equal(tab.ts[0], own.ts)
    for k in "abc":
        np.testing.assert_allclose(getattr(tab, k)[0], getattr(own, k), rtol=1e-6)
    # every level's grid starts at that level and ends on clean data (b = 1, a = 0)
    np.testing.assert_array_equal(tab.ts[:, 0], lv)
    np.testing.assert_allclose(tab.b[:, -1], 1.0)
    np.testing.assert_allclose(tab.a[:, -1], 0.0)
    with pytest.raises(distill.DistillError, match="deterministic"):
        distill.teacher_tables(ab, lv, "ddpm", 10)


def test_solve_follows_each_examples_own_grid():
    """The per-example scan equals the shared sample_loop run separately from each level."""
    ab = _cosine_ab()
    lv = distill.training_levels(1000, 4, 0.3)
    tab = distill.teacher_tables(ab, lv, "dpm-solver++", 6)
    abj = jnp.asarray(ab, jnp.float32)

    def x0_fn(x, t):  # any smooth function of (x, t), per example
        t = jnp.broadcast_to(t, x.shape[:1]).astype(jnp.float32)
        return jnp.tanh(0.7 * x) * (1.0 + t[:, None, None] / 1000.0) + 0.1 * jnp.sqrt(abj[t.astype(jnp.int32)])[:, None, None]

    x = jax.random.normal(jax.random.key(0), (4, 5, 3))
    level = jnp.array([0, 3, 1, 2])
    got = distill.solve(x0_fn, tab, level, x)
    for i, l in enumerate(np.asarray(level)):
        co = samplers.SamplerCoefficients(ts=tab.ts[l], a=tab.a[l], b=tab.b[l], c=tab.c[l],
                                          s=np.zeros_like(tab.a[l]))
        want = samplers.sample_loop(x0_fn, co, x[i:i + 1], jax.random.key(1))
        np.testing.assert_allclose(np.asarray(got[i:i + 1]), np.asarray(want), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ the distill stage on tiny data
@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A tiny teacher run (6 steps) on the synthetic prepared windows of training_fixtures."""
    from gesture_jax.training import loop

    root = tmp_path_factory.mktemp("distill_tiny")
    cfg = make_prepared(root / "data")
    loop.train(cfg, root / "teacher", progress=False)
    return cfg, root / "teacher"


def _distill_cfg(cfg, **stage):
    import ml_collections
    c = ml_collections.ConfigDict(cfg.to_dict())
    c.train.stage = "distill"
    c.seed = int(cfg.seed) + 1  # a random start of the student then differs from the teacher's start
    c.distill.teacher_steps = 3
    c.distill.levels = 4
    for k, v in {**dict(num_steps=4, checkpoint_every=2, warmup_steps=1, ema_decay=0.9), **stage}.items():
        c.stages.distill[k] = v
    return c


def test_distill_stage_starts_from_the_teacher_and_resumes(tiny_teacher, tmp_path):
    from flax import nnx

    from gesture_jax.training import loop
    from gesture_jax.training.inference import restore_model

    cfg, teacher = tiny_teacher
    # resumable: 2 steps, stop, 2 more == 4 steps in one go (the restored student is not
    # replaced by the teacher again)
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(teacher, one)
    shutil.copytree(teacher, two)
    full = loop.train(_distill_cfg(cfg), one, progress=False)
    loop.train(_distill_cfg(cfg), two, stop_after=2, progress=False)
    rest = loop.train(_distill_cfg(cfg), two, progress=False)
    want = {h["step"]: h["loss"] for h in full.history if "loss" in h}
    got = {h["step"]: h["loss"] for h in rest.history if "loss" in h}
    assert set(got) == {3, 4}
    for s in got:
        assert got[s] == pytest.approx(want[s], rel=1e-5), (s, got[s], want[s])

    # its own checkpoints, the teacher's untouched
    assert (one / "stages" / "distill" / "checkpoints" / "4").is_dir()
    assert sorted(p.name for p in (one / "checkpoints").iterdir() if p.name.isdigit()) == \
        sorted(p.name for p in (teacher / "checkpoints").iterdir() if p.name.isdigit())
    # started as the teacher: 4 Adam steps of lr 1e-3 move no weight by more than ~4e-3, and
    # the EMA stays nearer still (a random start is ~0.1 away)
    mf = tiny_model_fn(cfg)
    t_model, _, used = restore_model(teacher, mf, use_ema=True)
    s_model, step, s_ema = restore_model(one / "stages" / "distill", mf, use_ema=True)
    assert used and s_ema and step == 4
    gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree_util.tree_leaves(nnx.state(t_model, nnx.Param)),
        jax.tree_util.tree_leaves(nnx.state(s_model, nnx.Param))))
    assert gap < 5e-3, gap


def test_distill_loss_is_the_distance_to_the_teachers_ode_solution(tiny_teacher):
    """The loss equals mean (student x0 - the teacher's K-step DPM-Solver++ result)^2 (+ the
    weighted mean squared frame-to-frame difference of that error), with the teacher's own
    coefficients from the shared sampler code (computed independently here)."""
    from flax import nnx

    from gesture_jax.training import state as state_lib
    from gesture_jax.training.inference import restore_model

    cfg, teacher = tiny_teacher
    c = _distill_cfg(cfg)
    c.distill.p_top = 0.5  # some examples at T-1 (the one-step map), the others at lower levels
    mf = tiny_model_fn(c)
    t_model, _, _ = restore_model(teacher, mf, use_ema=True)
    gd, st = nnx.split(t_model)
    tea = distill.Teacher(graphdef=gd, state=st, workdir=teacher, step=0)
    graphdef, params, rng_state, ms = state_lib.split_model(t_model)
    parts = state_lib.ModelParts(graphdef=graphdef, rng_state=rng_state, rng_tags=state_lib.rng_stream_tags(rng_state))
    loss_fn = distill.distill_loss_fn(c, parts, None, None, tea)
    B = 8
    rng = np.random.default_rng(0)
    batch = {"motion": rng.normal(size=(B, T, F)).astype(np.float32),
             "audio": rng.normal(size=(B, T, 5)).astype(np.float32)}
    key = jax.random.key(3)
    # a student 0.1 off the teacher in its output bias
    shifted = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.1 if "final" in jax.tree_util.keystr(p) and "bias" in jax.tree_util.keystr(p) else x, params)
    loss, _ = loss_fn(shifted, ms, batch, key, True)

    # the same draws, by hand: which level, its time, its noise; then the teacher's own sampler
    # (timestep grid from that time, DPM-Solver++ coefficients, sample_loop) per example
    sched = diffusion.make_schedule(c.diffusion)
    ab = np.asarray(sched.alphas_cumprod)
    Tn, K = int(c.diffusion.num_steps), int(c.distill.teacher_steps)
    levels = distill.training_levels(Tn, int(c.distill.levels), float(c.distill.t_min_frac))
    k_top, k_lvl, k_noise, _ = jax.random.split(key, 4)
    lvl = np.where(np.asarray(jax.random.bernoulli(k_top, 0.5, (B,))), 0,
                   np.asarray(jax.random.randint(k_lvl, (B,), 1, len(levels))))
    assert 0 < np.count_nonzero(lvl) < B  # both kinds drawn
    t = jnp.asarray(levels[lvl])
    x_t = diffusion.q_sample(sched, jnp.asarray(batch["motion"]), t, jax.random.normal(k_noise, (B, T, F)))
    cond = t_model.condition(jnp.asarray(batch["audio"]), deterministic=True)
    targets = []
    for i in range(B):
        t0 = int(levels[lvl[i]])
        grid = samplers.timestep_grid(t0 + 1, min(K, t0 + 1), "quadratic")
        co = samplers.sampler_coefficients(ab, "dpm-solver++", len(grid), eta=0.0, ts=grid)
        x0_fn = samplers.model_x0_fn(
            lambda x, tt, i=i: t_model.denoise(x, jnp.full((1,), tt, jnp.int32), cond[i:i + 1], deterministic=True),
            ab, c.diffusion.prediction, clip=c.sample.clip_x0)
        targets.append(samplers.sample_loop(x0_fn, co, x_t[i:i + 1], jax.random.key(0)))
    target = jnp.concatenate(targets)
    student = nnx.merge(graphdef, shifted, rng_state, ms)
    pred = student(x_t, t, jnp.asarray(batch["audio"]), deterministic=True)
    err = pred - target
    mse = float(jnp.mean(jnp.square(err)))
    want = mse + float(c.distill.vel_weight) * float(jnp.mean(jnp.square(jnp.diff(err, axis=1))))
    assert float(c.distill.vel_weight) > 0  # the default weighs frame-to-frame error too
    assert float(loss) == pytest.approx(want, rel=1e-4)
    assert mse > 1e-3  # the teacher's one step is not its ODE result: there is something to learn


def test_teacher_of_another_method_or_shape_is_a_clear_error(tiny_teacher, tmp_path):
    from gesture_jax.training import loop

    cfg, teacher = tiny_teacher
    other = tmp_path / "ka"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"method": "kucherenko", "model": {}}))
    c = _distill_cfg(cfg)
    c.distill.teacher_workdir = str(other)
    with pytest.raises(loop.TrainConfigError, match=r"'kucherenko' run, but this student is 'persona_gestor'"):
        loop.train(c, tmp_path / "s1", progress=False)

    wide = tmp_path / "wide"
    shutil.copytree(teacher, wide)
    conf = json.loads((wide / "config.json").read_text())
    conf["model"]["dim"] = 32
    (wide / "config.json").write_text(json.dumps(conf))
    c.distill.teacher_workdir = str(wide)
    with pytest.raises(loop.TrainConfigError, match=r"another shape.*model\.dim: teacher 32, student 16"):
        loop.train(c, tmp_path / "s2", progress=False)

    c.distill.teacher_workdir = str(tmp_path / "nothing")
    with pytest.raises(loop.TrainConfigError, match="no config.json"):
        loop.train(c, tmp_path / "s3", progress=False)


# ------------------------------------------------------------------ on a trained model
def _run(args):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    return p


@pytest.fixture(scope="module")
def distilled(demo_run, tmp_path_factory):
    """The session's trained demo run, copied, with a short distill stage (the CLI)."""
    wd = tmp_path_factory.mktemp("distilled") / "run"
    shutil.copytree(demo_run["workdir"], wd)
    conf = json.loads((wd / "config.json").read_text())
    p = _run(["-m", "gesture_jax.train", "--config=configs/demo.py", f"--config.data.root={conf['data']['root']}",
              f"--config.data.out={conf['data']['out']}", f"--workdir={wd}", "--config.train.stage=distill",
              "--config.stages.distill.num_steps=60", "--config.stages.distill.lr=1e-3",
              "--config.stages.distill.warmup_steps=5", "--config.stages.distill.ema_decay=0",
              "--config.stages.distill.checkpoint_every=60", "--config.train.eval_every=0"])
    assert p.returncode == 0, p.stderr[-3000:]
    return {"workdir": wd, "src": demo_run["src"]}


def test_student_one_step_lands_nearer_the_teachers_ode_than_the_teacher(distilled):
    """What distillation is for: from the same noise, the student's one evaluation is closer to
    the teacher's 10-step ODE result than the teacher's one evaluation (on a file of the corpus
    it was distilled on: the CI fixture's 6 short training files do not generalise, while the
    full demo student does, 0.45 against 0.73 RMS on a held-out file)."""
    from gesture_jax import generate as G
    from gesture_jax.audio.io import load_audio
    from gesture_jax.sampling import windowed
    from gesture_jax.sampling.options import SamplingOptions

    wd = distilled["workdir"]
    teacher, student = G.load_bundle(wd), G.load_bundle(wd, student=True)
    assert student.student and not teacher.student
    wav = sorted(Path(distilled["src"]).glob("demo_train_*.wav"))[0]
    feats = [G.audio_features(teacher, load_audio(wav, 16000))[0]]

    def run(bundle, **kw):
        o = SamplingOptions(seed=5, snap_s=0.0, smooth_sigma=0.0, **kw)
        return windowed.sample_timelines(bundle, feats, o, progress=False)[0]

    ode = run(teacher, sampler="dpm-solver++", steps=10, eta=0.0)
    gap_student = np.sqrt(np.mean((run(student, steps=1) - ode) ** 2))
    gap_teacher = np.sqrt(np.mean((run(teacher, sampler="ddim", steps=1, eta=0.0) - ode) ** 2))
    assert gap_student < 0.8 * gap_teacher, (gap_student, gap_teacher)


def test_generate_and_stream_with_the_student(distilled, tmp_path):
    from gesture_jax import generate as G
    from gesture_jax.audio.io import load_audio
    from gesture_jax.motion.bvh import read_bvh

    wd = distilled["workdir"]
    wav = sorted(Path(distilled["src"]).glob("demo_test_*.wav"))[0]
    for steps in (1, 2):
        p = _run(["-m", "gesture_jax.generate", f"--workdir={wd}", "--audio", wav, f"--out={tmp_path / str(steps)}",
                  "--sampler=student", f"--steps={steps}"])
        assert p.returncode == 0, p.stderr[-2000:]
        assert f"student {steps} steps" in p.stderr
        bvh = read_bvh(tmp_path / str(steps) / f"{wav.stem}.bvh")
        assert np.isfinite(bvh.frames).all() and bvh.frames.shape[0] > 100

    bundle = G.load_bundle(wd, student=True)
    wave = load_audio(wav, 16000)
    blocks = list(G.stream(bundle, (wave[i:i + 8000] for i in range(0, len(wave), 8000)), lookahead_s=0.5))
    fps = float(bundle.config.data.fps)
    assert sum(b.shape[0] for b in blocks) == int(len(wave) / 16000 * fps)
    assert all(np.isfinite(b).all() for b in blocks)


def test_student_errors_name_the_problem(distilled, demo_run, tmp_path):
    from gesture_jax import generate as G

    wd = distilled["workdir"]
    wav = sorted(Path(distilled["src"]).glob("demo_test_*.wav"))[0]
    # a run without a student
    p = _run(["-m", "gesture_jax.generate", f"--workdir={demo_run['workdir']}", "--audio", wav,
              f"--out={tmp_path}", "--sampler=student"])
    assert p.returncode == 2 and "stages/distill" in p.stderr and "--config.train.stage=distill" in p.stderr
    # the student sampled with a teacher's sampler, the teacher with the student's
    with pytest.raises(G.GenerateError, match="only with --sampler=student"):
        G.resolve_options(G.load_bundle(wd, student=True), G.SamplingOptions(sampler="ddpm"))
    with pytest.raises(G.GenerateError, match="student=True"):
        G.resolve_options(G.load_bundle(wd), G.SamplingOptions(sampler="student"))
    with pytest.raises(G.GenerateError, match="do not fit"):
        G.resolve_options(G.load_bundle(wd, student=True), G.SamplingOptions(steps=900))
