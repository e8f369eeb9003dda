"""Options of the train step on one device: bf16 compute, gradient accumulation, EMA, schedule."""
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_fixtures as tf  # noqa: E402
from gesture_jax.parallel import mesh as mesh_lib, sharding as shd  # noqa: E402
from gesture_jax.training import optim, state as state_lib, step as step_lib  # noqa: E402
from gesture_jax.training.loop import _global_batch  # noqa: E402


def _one_step(**train):
    cfg = tf.tiny_config(**train)
    mesh = mesh_lib.make_mesh("data:1", jax.devices()[:1])
    state, sh, parts, tx, sched = state_lib.create_train_state(
        tf.tiny_model_fn(cfg), cfg.train, 0, mesh, shd.rules_from_config(cfg.mesh), 0)
    before = jax.tree_util.tree_map(np.asarray, state.params)
    loss_fn = step_lib.diffusion_loss_fn(cfg.diffusion, cfg.train, parts, mesh)
    step = step_lib.jit_train_step(step_lib.make_train_step(loss_fn, tx, sched, cfg.train, mesh), sh, mesh,
                                   {"motion": 3, "audio": 3})
    batch = tf.synthetic_batch(np.random.default_rng(0), 8)
    state, m = step(state, _global_batch(batch, mesh))
    return state, {k: float(v) for k, v in m.items()}, before


def test_bf16_accum_ema_cond_dropout_steps():
    s32, m32, p0 = _one_step()
    s16, m16, _ = _one_step(compute_dtype="bfloat16")
    assert abs(m16["loss"] - m32["loss"]) < 0.03 * m32["loss"], (m16, m32)
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(s16.params))  # fp32 master weights
    sa, ma, _ = _one_step(grad_accum=2, ema_decay=0.5, cond_dropout=0.5)
    assert np.isfinite(ma["loss"]) and int(sa.step) == 1
    # EMA after one step: 0.5 * init + 0.5 * updated params
    for e, p, p_init in zip(jax.tree_util.tree_leaves(sa.ema), jax.tree_util.tree_leaves(sa.params),
                            jax.tree_util.tree_leaves(p0)):
        np.testing.assert_allclose(np.asarray(e), 0.5 * p_init + 0.5 * np.asarray(p), rtol=1e-5, atol=1e-7)


def test_reference_warmup_schedule_and_clipping():
    cfg = tf.tiny_config(lr=2e-4, warmup_steps=1000, warmup_init_factor=8e-5, clip_norm=0.5)
    sched = optim.make_schedule(cfg.train)
    assert np.isclose(sched(0), 2e-4 * 8e-5) and np.isclose(sched(1000), 2e-4) and np.isclose(sched(5000), 2e-4)
    assert np.isclose(sched(500), 2e-4 * 8e-5 + 0.5 * (2e-4 - 2e-4 * 8e-5))
    tx, _ = optim.make_optimizer(cfg.train)
    g = {"w": np.full((4,), 10.0, np.float32)}
    clipped, _ = tx.update(g, tx.init(g), g)  # first AdamW update after clipping to norm 0.5
    assert np.all(np.isfinite(clipped["w"]))
    c = optax.clip_by_global_norm(0.5)
    out, _ = c.update(g, c.init(g))
    assert np.isclose(optax.global_norm(out), 0.5)


def test_cosine_decay_after_warmup_and_bad_decay_name():
    cfg = tf.tiny_config(lr=1e-3, warmup_steps=100, warmup_init_factor=0.0, num_steps=1100,
                         lr_decay="cosine", lr_final_factor=0.1)
    sched = optim.make_schedule(cfg.train)
    assert np.isclose(sched(50), 0.5e-3) and np.isclose(sched(100), 1e-3)
    assert np.isclose(sched(600), 1e-4 + 0.5 * (1e-3 - 1e-4))  # half way down the cosine
    assert np.isclose(sched(1100), 1e-4) and np.isclose(sched(5000), 1e-4)
    assert all(sched(i) >= sched(i + 50) for i in range(100, 1100, 50))
    with pytest.raises(ValueError, match="lr_decay"):
        optim.make_schedule(tf.tiny_config(lr_decay="linear").train)


def _loss_and_parts(key, batch, **train):
    """(loss from the train step's loss function, network output, target, x0 estimate, t), the
    last four recomputed outside it with the same draw of t and noise."""
    from flax import nnx
    from gesture_jax.models import diffusion

    mesh = mesh_lib.make_mesh("data:1", jax.devices()[:1])
    cfg = tf.tiny_config(**train)
    state, _, parts, _, _ = state_lib.create_train_state(
        tf.tiny_model_fn(cfg), cfg.train, 0, mesh, shd.rules_from_config(cfg.mesh), 0)
    loss_fn = step_lib.diffusion_loss_fn(cfg.diffusion, cfg.train, parts, mesh)
    loss = float(loss_fn(state.params, state.model_state, batch, key, deterministic=True)[0])
    sched = diffusion.make_schedule(cfg.diffusion)
    x0 = batch["motion"]
    k_t, k_noise, _, _ = jax.random.split(key, 4)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, int(cfg.diffusion.num_steps), jax.numpy.int32)
    noise = jax.random.normal(k_noise, x0.shape)
    x_t = diffusion.q_sample(sched, x0, t, noise)
    pred = str(cfg.diffusion.prediction)
    model = nnx.merge(parts.graphdef, state.params, parts.rng_state, state.model_state)
    out = model(x_t, t, batch["audio"], deterministic=True)
    target = diffusion.training_target(sched, x0, noise, t, pred)
    return loss, np.asarray(out), np.asarray(target), np.asarray(diffusion.to_x0_eps(sched, out, x_t, t, pred)[0]), \
        np.asarray(diffusion.loss_weights(sched, t, pred, "min_snr", float(cfg.train.min_snr_gamma)))


def test_velocity_loss_and_min_snr_weighting_are_the_documented_terms():
    batch = {k: jax.numpy.asarray(v) for k, v in tf.synthetic_batch(np.random.default_rng(0), 8).items()}
    key = jax.random.key(3)
    plain, out, target, x0_hat, w_snr = _loss_and_parts(key, batch)
    np.testing.assert_allclose(plain, np.mean(np.square(out - target)), rtol=1e-5)
    x0 = np.asarray(batch["motion"])
    vel = float(np.mean(np.square(np.diff(x0_hat, axis=1) - np.diff(x0, axis=1))))
    assert vel > 0
    np.testing.assert_allclose(_loss_and_parts(key, batch, loss_vel_weight=2.5)[0] - plain, 2.5 * vel, rtol=1e-4)
    assert not np.allclose(w_snr, 1.0)
    np.testing.assert_allclose(_loss_and_parts(key, batch, loss_weighting="min_snr")[0],
                               np.mean(w_snr[:, None, None] * np.square(out - target)), rtol=1e-5)
    with pytest.raises(ValueError, match="loss_weighting"):
        _loss_and_parts(key, batch, loss_weighting="p2")
