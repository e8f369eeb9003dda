"""The training state as one pytree, created directly in its sharded layout.

``TrainState`` holds everything a resumed run needs besides the data iterator:
fp32 master ``params``, ``opt_state``, optional ``ema``, ``model_state`` (non-parameter
variables such as BatchNorm running statistics), ``step`` and the base ``rng``. The model's
own RNG streams (dropout) are not kept: each step reseeds them from ``fold_in(rng, step)``,
so a restarted run draws exactly the random numbers an uninterrupted one would.

The model is split once into a static ``graphdef`` plus state (``nnx.split``); the train
step is a plain function of the state under ``jax.jit`` (measured ~2x faster than
``nnx.jit`` for a small step, DESIGN.md). Initialization runs under ``jax.jit`` with
``out_shardings`` so parameters are born sharded and never materialize whole on one device.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from gesture_jax.parallel import sharding as shd
from gesture_jax.training import optim


@flax.struct.dataclass
class TrainState:
    step: jax.Array                 # [] int32, optimizer steps taken
    params: Any                     # nnx.State of nnx.Param, float32 master weights
    opt_state: Any                  # optax state (mirrors params)
    ema: Any                        # nnx.State like params, or None when train.ema_decay == 0
    model_state: Any                # nnx.State of other variables (BatchStat ...), maybe empty
    rng: jax.Array                  # [2] uint32 base key; step keys are fold_in(rng, step)


@dataclasses.dataclass
class ModelParts:
    """The static half of the split model plus what the step needs to rebuild it."""
    graphdef: Any
    rng_state: Any                  # nnx.State of RNG streams (template; reseeded every step)
    rng_tags: tuple[str, ...]       # names of the model's RNG streams, e.g. ("dropout",)


def split_model(model: nnx.Module) -> tuple[Any, Any, Any, Any]:
    """graphdef, params, rng_state, model_state."""
    return nnx.split(model, nnx.Param, nnx.RngState, ...)


def rng_stream_tags(rng_state: Any) -> tuple[str, ...]:
    tags = set()
    for leaf in jax.tree_util.tree_leaves(rng_state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        tag = getattr(leaf, "tag", None)
        if tag is not None:
            tags.add(tag)
    return tuple(sorted(tags))


def count_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def abstract_model(model_fn: Callable[[nnx.Rngs], nnx.Module], seed: int = 0) -> nnx.Module:
    """The model with ShapeDtypeStruct leaves (no memory, no compute)."""
    with nnx.use_eager_sharding(False):
        return nnx.eval_shape(lambda: model_fn(nnx.Rngs(seed)))


def state_shardings(abstract_state: TrainState, mesh: Mesh, rules, min_size: int) -> TrainState:
    """NamedShardings for every leaf (params, moments and EMA share the same rules)."""
    return shd.tree_shardings(abstract_state, mesh, rules, min_size)


def _make_init(model_fn: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
               use_ema: bool) -> Callable[[jax.Array], tuple[TrainState, Any]]:
    def init(seed_arr: jax.Array) -> tuple[TrainState, Any]:
        with nnx.use_eager_sharding(False):
            model = model_fn(nnx.Rngs(jax.random.key(seed_arr)))
        _, params, rng_state, model_state = split_model(model)
        state = TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
            ema=jax.tree_util.tree_map(jnp.copy, params) if use_ema else None,
            model_state=model_state,
            rng=jax.random.PRNGKey(seed_arr + 1))  # [2] uint32, distinct from the init key
        return state, rng_state
    return init


def abstract_train_state(model_fn: Callable[[nnx.Rngs], nnx.Module], train_cfg: Any, seed: int,
                         mesh: Mesh, rules, min_size: int = 0):
    """Shapes, dtypes and shardings of the train state, allocating nothing.

    Returns (abstract state whose ShapeDtypeStructs carry their sharding, shardings,
    ModelParts, optimizer, schedule, init function). Used for ahead-of-time compilation
    (bench, memory checks) and as the restore target of checkpoints.
    """
    tx, schedule = optim.make_optimizer(train_cfg)
    init = _make_init(model_fn, tx, float(train_cfg.ema_decay) > 0)
    abstract_state, abstract_rngs = jax.eval_shape(init, jnp.int32(seed))
    shardings = state_shardings(abstract_state, mesh, rules, min_size)
    abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
    graphdef = split_model(abstract_model(model_fn, seed))[0]
    # The RNG-stream template is tiny; XLA drops the unused parameter initializers.
    rng_state = jax.jit(lambda s: init(s)[1])(jnp.int32(seed))
    parts = ModelParts(graphdef=graphdef, rng_state=rng_state, rng_tags=rng_stream_tags(rng_state))
    return abstract_state, shardings, parts, tx, schedule, init


def create_train_state(model_fn: Callable[[nnx.Rngs], nnx.Module], train_cfg: Any, seed: int,
                       mesh: Mesh, rules, min_size: int = 0
                       ) -> tuple[TrainState, TrainState, ModelParts, optax.GradientTransformation, optax.Schedule]:
    """Initialize model and optimizer directly into their shardings (jit with out_shardings).

    Returns (state, shardings, model parts, optimizer, lr schedule).
    """
    _, shardings, parts, tx, schedule, init = abstract_train_state(
        model_fn, train_cfg, seed, mesh, rules, min_size)
    state = jax.jit(lambda s: init(s)[0], out_shardings=shardings)(jnp.int32(seed))
    return state, shardings, parts, tx, schedule
