"""The pure, jitted train step: ``(state, batch) -> (state, metrics)`` with donated state.

One step: draw diffusion times and noise from ``fold_in(state.rng, state.step)``, noise the
motion (``q_sample``), run the denoiser, MSE against the prediction target (per-example
weights with ``train.loss_weighting="min_snr"``; plus, with
``train.loss_vel_weight`` > 0, the MSE of the frame-to-frame differences of the implied
clean motion, MDM's velocity loss: it weights the temporal detail that a plain MSE
dilutes), gradients
(averaged over ``grad_accum`` micro-batches by ``lax.scan``), clip, AdamW, optional EMA.
A step whose loss or gradient norm is not finite changes nothing but the step counter
(metrics ``nonfinite`` = 1): weights that once hold NaN never recover and would be saved,
so the loop decides (``train.nonfinite``) whether to stop or go on from the same weights.

Sharding: the state keeps the layout chosen by the rules (``in_shardings`` =
``out_shardings``, so nothing moves between steps); the batch is split over
``(data, fsdp)``; the model's inputs, the per-micro-batch slices and its output are pinned
with ``with_sharding_constraint``. Without such pins a (2,2,2) mesh produced silently wrong
numbers (DESIGN.md), which ``tests/test_parallel_step.py`` guards against.

Mixed precision: ``train.compute_dtype="bfloat16"`` casts the fp32 master weights and the
inputs to bf16 inside the loss; gradients flow back through the cast into fp32, and the
loss is reduced in fp32.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from gesture_jax.parallel import sharding as shd
from gesture_jax.training import optim
from gesture_jax.training.state import ModelParts, TrainState

Batch = dict[str, jax.Array]  # {"motion": [B,T,F] f32, "audio": [B,Ta,A] f32}
LossFn = Callable[..., tuple[jax.Array, Any]]


def _cast_floats(tree: Any, dtype: jnp.dtype) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _per_module_key(path: tuple, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A distinct key per RNG-stream location: the model's dropout layers may all share one
    stream name, and one key for all would give every layer the same dropout mask."""
    sub = jax.random.fold_in(key, zlib.crc32("/".join(map(str, path)).encode()) & 0x7FFFFFFF)
    return jax.random.split(sub, shape) if shape else sub


def bind_model(parts: ModelParts, params: Any, model_state: Any, key: jax.Array | None,
               deterministic: bool, cdtype: jnp.dtype = jnp.float32, compute_shardings: Any = None) -> nnx.Module:
    """The module for one loss evaluation: weights cast to ``cdtype`` (and laid out as
    ``compute_shardings``), dropout streams reseeded from ``key`` unless deterministic.

    Every method's loss starts here, so mixed precision, FSDP gathering and per-step dropout
    randomness behave the same for all of them. Fresh Variable objects (tree_map rebuilds them
    in this trace): the model may mutate its RNG streams and BatchNorm statistics, which nnx
    only allows for Variables created at the current trace level (inside value_and_grad).
    """
    fresh = lambda tree: jax.tree_util.tree_map(lambda x: x, tree)
    used = _cast_floats(params, cdtype)
    if compute_shardings is not None:
        used = jax.lax.with_sharding_constraint(used, compute_shardings)
    model = nnx.merge(parts.graphdef, used, fresh(parts.rng_state), fresh(model_state))
    if parts.rng_tags and not deterministic:
        nnx.reseed(model, policy=_per_module_key,
                   **{tag: jax.random.fold_in(key, i) for i, tag in enumerate(parts.rng_tags)})
    return model


def model_state_after(model: nnx.Module, model_state: Any) -> Any:
    """The model's non-parameter state (BatchNorm statistics) after a call, in the stored dtypes."""
    new = nnx.split(model, nnx.Param, nnx.RngState, ...)[3]
    return jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype), new, model_state)


def diffusion_loss_fn(diffusion_cfg: Any, train_cfg: Any, parts: ModelParts,
                      mesh: Mesh | None, compute_shardings: Any = None) -> LossFn:
    """loss(params, model_state, batch, key, deterministic) -> (loss, new model_state).

    Deterministic given ``key``: times, noise, conditioning dropout and the model's dropout
    streams are all derived from it. ``compute_shardings`` (a tree like ``params``) is the
    layout the weights are used in: FSDP gathers the ``fsdp`` axis for the forward and
    backward computation (ZeRO-3) while the stored weights, gradients and Adam moments stay
    split; see :func:`compute_shardings`.
    """
    from gesture_jax.models import diffusion  # the model worker's module (CONTRACTS.md)

    schedule = diffusion.make_schedule(diffusion_cfg)
    num_t = int(diffusion_cfg.num_steps)
    prediction = str(diffusion_cfg.prediction)
    cdtype = optim.compute_dtype(str(train_cfg.compute_dtype))
    cond_p = float(train_cfg.cond_dropout)
    vel_w = float(train_cfg.get("loss_vel_weight", 0.0))
    weighting = str(train_cfg.get("loss_weighting", "none"))
    snr_gamma = float(train_cfg.get("min_snr_gamma", 5.0))
    diffusion.loss_weights(schedule, jnp.zeros((1,), jnp.int32), prediction, weighting, snr_gamma)  # config errors now

    def loss_fn(params, model_state, batch: Batch, key: jax.Array, deterministic: bool = False):
        x0 = shd.constrain_batch(batch["motion"].astype(jnp.float32), mesh)     # [B,T,F]
        audio = shd.constrain_batch(batch["audio"], mesh)                       # [B,Ta,A]
        b = x0.shape[0]
        k_t, k_noise, k_drop, k_model = jax.random.split(key, 4)
        t = shd.constrain_batch(jax.random.randint(k_t, (b,), 0, num_t, jnp.int32), mesh)  # [B]
        noise = shd.constrain_batch(jax.random.normal(k_noise, x0.shape, jnp.float32), mesh)
        x_t = shd.constrain_batch(diffusion.q_sample(schedule, x0, t, noise), mesh)
        target = shd.constrain_batch(diffusion.training_target(schedule, x0, noise, t, prediction), mesh)
        cond_drop = None
        if cond_p > 0 and not deterministic:
            cond_drop = shd.constrain_batch(jax.random.bernoulli(k_drop, cond_p, (b,)), mesh)

        model = bind_model(parts, params, model_state, k_model, deterministic, cdtype, compute_shardings)
        out = model(x_t.astype(cdtype), t, audio.astype(cdtype), deterministic=deterministic,
                    cond_drop=cond_drop)                                        # [B,T,F]
        out = shd.constrain_batch(out.astype(jnp.float32), mesh)
        w_t = diffusion.loss_weights(schedule, t, prediction, weighting, snr_gamma)             # [B]
        loss = jnp.mean(w_t[:, None, None] * jnp.square(out - target))
        if vel_w > 0:  # MDM-style velocity term on the clean-motion estimate
            x0_hat = diffusion.to_x0_eps(schedule, out, x_t, t, prediction)[0]
            dv = jnp.diff(x0_hat, axis=1) - jnp.diff(x0, axis=1)                # [B,T-1,F]
            loss = loss + vel_w * jnp.mean(jnp.square(dv))
        return loss, model_state_after(model, model_state)

    return loss_fn


def compute_shardings(param_shardings: Any, gather_fsdp: bool) -> Any:
    """Layout of the weights inside the step: the stored layout minus ``fsdp`` when gathering.

    Gathering matters for correctness, not only speed: letting XLA propagate a weight split
    over ``fsdp`` (and ``tensor``) into the matmuls of a batch also split over ``fsdp``
    produced wrong gradients (loss right, gradients up to 75% off) on a (2,2,2) CPU mesh in
    jax 0.10.2 (tests/test_parallel_step.py guards this).
    """
    return shd.without_axis(param_shardings, "fsdp") if gather_fsdp else None


def _split_micro(x: jax.Array, accum: int, mesh: Mesh | None) -> jax.Array:
    """[B, ...] -> [accum, B/accum, ...] keeping each micro-batch evenly sharded.

    Row r goes to micro-batch r % accum: a device holding a contiguous block of rows then
    holds an equal share of every micro-batch.
    """
    b = x.shape[0]
    if b % accum:
        raise ValueError(f"batch {b} is not divisible by train.grad_accum={accum}")
    x = x.reshape(b // accum, accum, *x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    if mesh is not None:
        spec = jax.sharding.PartitionSpec(None, shd.BATCH_AXES, *([None] * (x.ndim - 2)))
        x = jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))
    return x


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    train_cfg: Any, mesh: Mesh | None) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The un-jitted step; :func:`jit_train_step` adds shardings and donation."""
    accum = int(train_cfg.grad_accum)
    ema_decay = float(train_cfg.ema_decay)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.rng, state.step)
        if accum == 1:
            (loss, model_state), grads = grad_fn(state.params, state.model_state, batch, key)
        else:
            micro = jax.tree_util.tree_map(lambda x: _split_micro(x, accum, mesh), batch)

            def body(carry, xs):
                g_sum, l_sum, ms = carry
                i, mb = xs
                (l, ms), g = grad_fn(state.params, ms, mb, jax.random.fold_in(key, i))
                return (jax.tree_util.tree_map(jnp.add, g_sum, g), l_sum + l, ms), None

            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            (g_sum, l_sum, model_state), _ = jax.lax.scan(
                body, (zeros, jnp.zeros((), jnp.float32), state.model_state),
                (jnp.arange(accum), micro))
            grads = jax.tree_util.tree_map(lambda g: g / accum, g_sum)
            loss = l_sum / accum
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema
        if ema is not None:
            ema = optim.ema_update(ema, params, ema_decay)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                                  opt_state=keep(opt_state, state.opt_state),
                                  ema=None if ema is None else keep(ema, state.ema),
                                  model_state=keep(model_state, state.model_state))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step),
                   "nonfinite": (~finite).astype(jnp.int32)}
        return new_state, metrics

    return train_step


def jit_train_step(step_fn, state_shardings: TrainState, mesh: Mesh, batch_ndims: dict[str, int]):
    """jax.jit with explicit in/out shardings and the state donated (updated in place)."""
    batch_sh = {k: shd.batch_sharding(mesh, n) for k, n in batch_ndims.items()}
    rep = shd.replicated(mesh)
    return jax.jit(step_fn, in_shardings=(state_shardings, batch_sh),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,))


def make_eval_step(loss_fn: LossFn, mesh: Mesh, state_shardings: TrainState, batch_ndims: dict[str, int]):
    """Validation loss: deterministic model, fixed key per batch index (comparable over time)."""
    def eval_step(params, model_state, batch, key):
        loss, _ = loss_fn(params, model_state, batch, key, True)
        return loss
    batch_sh = {k: shd.batch_sharding(mesh, n) for k, n in batch_ndims.items()}
    rep = shd.replicated(mesh)
    return jax.jit(eval_step, in_shardings=(state_shardings.params, state_shardings.model_state, batch_sh, rep),
                   out_shardings=rep)
