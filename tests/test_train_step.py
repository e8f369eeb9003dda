"""Options of the train step on one device, checked numerically: clipping and warm-up in the
project's optimizer, bf16 compute, gradient accumulation, conditioning dropout, EMA, schedule.

The step options are observed through the project's own builders (``diffusion_loss_fn`` ->
``make_train_step`` -> ``jit_train_step``, what ``train`` runs) with the optimizer swapped for
:func:`_grad_probe`, whose state is the gradient the step computed: a comparison of final
parameters after AdamW would hide most of it (Adam's first step is ~lr*sign(grad), whatever
the gradient's scale). The optimizer itself is checked separately, on small explicit trees.
Compiles dominate the cost on a shared 2-core CPU, so one train state and one fp32 step are
built per module and shared.
"""
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_fixtures as tf  # noqa: E402
from gesture_jax.parallel import mesh as mesh_lib, sharding as shd  # noqa: E402
from gesture_jax.training import optim, state as state_lib, step as step_lib  # noqa: E402
from gesture_jax.training.loop import _global_batch  # noqa: E402

NDIMS = {"motion": 3, "audio": 3}


def _grad_probe() -> optax.GradientTransformation:
    """SGD with rate 1 whose state is the step's gradient (exact, float32, unclipped): the
    gradient becomes observable and the parameters still move (so the EMA has work to do)."""
    def init(params):
        return jax.tree_util.tree_map(jnp.zeros_like, params)

    def update(grads, state, params=None):
        return jax.tree_util.tree_map(jnp.negative, grads), grads

    return optax.GradientTransformation(init, update)


def _leaves(tree) -> dict[str, np.ndarray]:
    return {shd.path_to_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Global relative difference |a - b| / |b| over all leaves."""
    num = sum(float(np.sum(np.square(a[k] - b[k]))) for k in b)
    den = sum(float(np.sum(np.square(b[k]))) for k in b)
    return (num / den) ** 0.5


@pytest.fixture(scope="module")
def tiny() -> SimpleNamespace:
    """The tiny model's train state (default tiny config: fp32, EMA kept), created once."""
    cfg = tf.tiny_config()
    mesh = mesh_lib.make_mesh("data:1", jax.devices()[:1])
    state, sh, parts, _, _ = state_lib.create_train_state(
        tf.tiny_model_fn(cfg), cfg.train, 0, mesh, shd.rules_from_config(cfg.mesh), 0)
    probe = _grad_probe()
    return SimpleNamespace(mesh=mesh, parts=parts, state=state,
                           probe_state=state.replace(opt_state=probe.init(state.params)),
                           probe_shardings=sh.replace(opt_state=sh.params),
                           batch=tf.synthetic_batch(np.random.default_rng(0), 8))  # [8,T,F], [8,T,A]


def _probe_step(tiny: SimpleNamespace, **train):
    """The jitted train step under the train options ``train``, optimizer = :func:`_grad_probe`.

    Returns run(batch, state) -> (new state, float metrics); ``state`` is copied first since
    the step donates it.
    """
    cfg = tf.tiny_config(**train)
    loss_fn = step_lib.diffusion_loss_fn(cfg.diffusion, cfg.train, tiny.parts, tiny.mesh)
    step = step_lib.jit_train_step(
        step_lib.make_train_step(loss_fn, _grad_probe(), optim.make_schedule(cfg.train), cfg.train, tiny.mesh),
        tiny.probe_shardings, tiny.mesh, NDIMS)

    def run(batch: dict[str, np.ndarray], state: state_lib.TrainState):
        new, m = step(jax.tree_util.tree_map(jnp.copy, state), _global_batch(batch, tiny.mesh))
        return new, {k: float(v) for k, v in m.items()}

    return run


def _micro(batch: dict[str, np.ndarray], i: int, accum: int) -> dict[str, np.ndarray]:
    """Micro-batch i of ``grad_accum=accum``: rows i, i+accum, ... (``step._split_micro``)."""
    return {k: v[i::accum] for k, v in batch.items()}


def _micro_state(tiny: SimpleNamespace, i: int, model_state=None) -> state_lib.TrainState:
    """A probe state whose one-batch step draws micro-batch i's randomness of an accumulated
    step 0: that uses ``fold_in(fold_in(rng, 0), i)``, a plain step ``fold_in(rng', step)``."""
    s = tiny.probe_state
    return s.replace(rng=jax.random.fold_in(s.rng, 0), step=jnp.asarray(i, jnp.int32),
                     model_state=s.model_state if model_state is None else model_state)


@pytest.fixture(scope="module")
def fp32_micro(tiny: SimpleNamespace) -> SimpleNamespace:
    """The fp32, no-dropout step on each of the two micro-batches of ``tiny.batch`` (one compile)."""
    run = _probe_step(tiny)
    s0, m0 = run(_micro(tiny.batch, 0, 2), _micro_state(tiny, 0))
    s1, m1 = run(_micro(tiny.batch, 1, 2), _micro_state(tiny, 1, s0.model_state))
    return SimpleNamespace(grads=[_leaves(s0.opt_state), _leaves(s1.opt_state)], losses=[m0["loss"], m1["loss"]],
                           gnorm0=m0["grad_norm"], model_state=_leaves(s1.model_state))


def test_bf16_step_differs_from_fp32_by_a_small_nonzero_amount(tiny, fp32_micro):
    s16, m16 = _probe_step(tiny, compute_dtype="bfloat16")(_micro(tiny.batch, 0, 2), _micro_state(tiny, 0))
    g16, g32 = _leaves(s16.opt_state), fp32_micro.grads[0]
    assert all(g.dtype == np.float32 for g in g16.values())  # gradients reach the fp32 master weights
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(s16.params))
    loss_rel = abs(m16["loss"] - fp32_micro.losses[0]) / fp32_micro.losses[0]
    grad_rel = _rel(g16, g32)
    # bf16 keeps 8 mantissa bits (~0.4% per rounding): visibly different, still the same step.
    assert 1e-5 < loss_rel < 0.03, (m16["loss"], fp32_micro.losses[0])
    assert 1e-4 < grad_rel < 0.1, grad_rel
    assert m16["grad_norm"] != fp32_micro.gnorm0


def test_grad_accum_2_is_the_mean_of_the_micro_batch_gradients(tiny, fp32_micro):
    sa, ma = _probe_step(tiny, grad_accum=2, ema_decay=0.5)(tiny.batch, tiny.probe_state)
    got = _leaves(sa.opt_state)
    g0, g1 = fp32_micro.grads
    assert _rel(g0, g1) > 0.1  # distinct micro-batch gradients: neither alone nor their sum passes
    want = {k: 0.5 * (g0[k] + g1[k]) for k in g0}
    # atol on the global scale: some true gradients are 0 (the attention key bias, which softmax
    # ignores) and hold only round-off, which the scan and the plain step produce differently.
    scale = max(float(np.max(np.abs(w))) for w in want.values())
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6 * scale, err_msg=k)
    np.testing.assert_allclose(ma["loss"], np.mean(fp32_micro.losses), rtol=1e-5)
    # BatchNorm statistics are threaded through the micro-batches in order.
    for k, want in fp32_micro.model_state.items():
        np.testing.assert_allclose(_leaves(sa.model_state)[k], want, rtol=1e-5, atol=1e-7, err_msg=k)
    assert int(sa.step) == 1
    # EMA after one step with decay 0.5: half the initial, half the updated parameters.
    p0 = _leaves(tiny.state.params)
    p1, ema = _leaves(sa.params), _leaves(sa.ema)
    for k in p0:
        np.testing.assert_allclose(ema[k], 0.5 * p0[k] + 0.5 * p1[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_cond_dropout_1_cuts_the_audio_path_but_trains_the_null_token(tiny, fp32_micro):
    s, _ = _probe_step(tiny, cond_dropout=1.0)(_micro(tiny.batch, 0, 2), _micro_state(tiny, 0))
    dropped, kept = _leaves(s.opt_state), fp32_micro.grads[0]
    audio = [k for k in kept if k.startswith("fuzzy/")]
    assert audio and "null_cond" in kept
    norm = lambda g, keys: float(np.sqrt(sum(np.sum(np.square(g[k])) for k in keys)))
    # Without dropout the audio path learns and the null token is unused ...
    assert norm(kept, audio) > 0 and norm(kept, ["null_cond"]) == 0
    # ... with every example dropped it is the other way round; the denoiser still learns.
    assert norm(dropped, audio) == 0, {k: float(np.abs(dropped[k]).max()) for k in audio}
    assert norm(dropped, ["null_cond"]) > 0
    rest = [k for k in kept if k not in audio and k != "null_cond"]
    assert norm(dropped, rest) > 0


def _adamw(train_cfg, schedule) -> optax.GradientTransformation:
    """optax's AdamW with the project's hyper-parameters (the reference's PyTorch AdamW)."""
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=float(train_cfg.adam_eps),
                       weight_decay=float(train_cfg.weight_decay))


def _two_updates(tx: optax.GradientTransformation, params, grads) -> list[np.ndarray]:
    state, out = tx.init(params), []
    for g in grads:
        u, state = tx.update(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(np.asarray(params["w"]))
    return out


def test_project_optimizer_clips_by_global_norm_before_adamw():
    cfg = tf.tiny_config(lr=1e-3, warmup_steps=0, clip_norm=0.5, weight_decay=0.01)
    tx, sched = optim.make_optimizer(cfg.train)
    rng = np.random.default_rng(1)
    params = {"w": rng.normal(size=(3, 4)).astype(np.float32)}
    d1, d2 = rng.normal(size=(2, 3, 4)).astype(np.float32)
    grads = [{"w": 20.0 * d1 / np.linalg.norm(d1)}, {"w": 0.1 * d2 / np.linalg.norm(d2)}]  # norms 20, 0.1
    got = _two_updates(tx, params, grads)
    want = _two_updates(optax.chain(optax.clip_by_global_norm(0.5), _adamw(cfg.train, sched)), params, grads)
    plain = _two_updates(_adamw(cfg.train, sched), params, grads)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=0)
    # Unclipped, the first gradient dominates Adam's moments 200:1 instead of 5:1.
    step2 = lambda run: run[1] - run[0]
    assert np.max(np.abs(step2(plain) - step2(want))) > 0.1 * np.max(np.abs(step2(want)))


def test_reference_warmup_starts_at_lr_times_init_factor():
    cfg = tf.tiny_config(lr=2e-4, warmup_steps=1000, warmup_init_factor=8e-5, clip_norm=0.5, weight_decay=0.01)
    sched = optim.make_schedule(cfg.train)
    np.testing.assert_allclose(float(sched(0)), 2e-4 * 8e-5, rtol=1e-6, atol=0)
    np.testing.assert_allclose(float(sched(500)), 2e-4 * 8e-5 + 0.5 * (2e-4 - 2e-4 * 8e-5), rtol=1e-6, atol=0)
    for s in (1000, 5000):
        np.testing.assert_allclose(float(sched(s)), 2e-4, rtol=1e-6, atol=0)
    # The optimizer's first update uses that rate: -lr0 * (g / (|g| + eps) + wd * p) for Adam's
    # bias-corrected first step (gradient norm 0.2, under the clip).
    tx, _ = optim.make_optimizer(cfg.train)
    p = {"w": np.array([1.0, -2.0, 0.5, 3.0], np.float32)}
    g = {"w": np.array([0.1, -0.1, 0.1, 0.1], np.float32)}
    u, _ = tx.update(g, tx.init(p), p)
    want = -2e-4 * 8e-5 * (g["w"] / (np.abs(g["w"]) + float(cfg.train.adam_eps)) + 0.01 * p["w"])
    np.testing.assert_allclose(np.asarray(u["w"]), want, rtol=1e-5, atol=0)


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


def _loss_and_parts(tiny: SimpleNamespace, key, batch, **train):
    """(loss from the train step's loss function, network output, target, x0 estimate, t), the
    last four recomputed outside it with the same draw of t and noise."""
    from flax import nnx
    from gesture_jax.models import diffusion

    cfg = tf.tiny_config(**train)
    state, parts = tiny.state, tiny.parts
    loss_fn = step_lib.diffusion_loss_fn(cfg.diffusion, cfg.train, parts, tiny.mesh)
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


def test_velocity_loss_and_min_snr_weighting_are_the_documented_terms(tiny):
    batch = {k: jax.numpy.asarray(v) for k, v in tiny.batch.items()}
    key = jax.random.key(3)
    plain, out, target, x0_hat, w_snr = _loss_and_parts(tiny, key, batch)
    np.testing.assert_allclose(plain, np.mean(np.square(out - target)), rtol=1e-5)
    x0 = np.asarray(batch["motion"])
    vel = float(np.mean(np.square(np.diff(x0_hat, axis=1) - np.diff(x0, axis=1))))
    assert vel > 0
    np.testing.assert_allclose(_loss_and_parts(tiny, key, batch, loss_vel_weight=2.5)[0] - plain, 2.5 * vel,
                               rtol=1e-4)
    assert not np.allclose(w_snr, 1.0)
    np.testing.assert_allclose(_loss_and_parts(tiny, key, batch, loss_weighting="min_snr")[0],
                               np.mean(w_snr[:, None, None] * np.square(out - target)), rtol=1e-5)
    with pytest.raises(ValueError, match="loss_weighting"):
        _loss_and_parts(tiny, key, batch, loss_weighting="p2")

