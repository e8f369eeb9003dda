"""Runs whose weights come from elsewhere: a converted checkpoint written as the trainer would.

Importers of authors' released weights (methods/kucherenko/convert.py, methods/persona_gestor/
import_reference.py) build the trainer's own TrainState (step 0), put the converted arrays into
it and save it with the trainer's Checkpointer, weights only (the optimizer state would double
the checkpoint, 7.5 GB more at the 934M shape, and write nothing useful): generate, evaluate and
checksum verification treat the run like one we trained; train continues from it (step 0) with a
fresh optimizer state.
"""
from __future__ import annotations

from typing import Any, Callable

from gesture_jax.storage import Path


def write_stage(method: Any, cfg: Any, dims: Any, stage: str, workdir: Path,
                fill: Callable[[Any], None], extra: dict[str, Any], *, fills_everything: bool = False) -> None:
    """One stage's Orbax checkpoint (step 0, weights only) and model_info.json, built by the
    trainer's own state/checkpoint code; ``fill(model)`` writes the converted weights into a freshly
    built model (parameters and non-parameter state such as BatchNorm statistics).
    fills_everything: ``fill`` sets every parameter and statistic, so the model it fills is built
    abstractly (no random initialisation: one copy of the weights less at the 934M shape)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gesture_jax.parallel import mesh as mesh_lib
    from gesture_jax.parallel import sharding as shd
    from gesture_jax.training import checkpoint as ckpt_lib
    from gesture_jax.training import loop
    from gesture_jax.training import state as state_lib

    stage_cfg = method.train_config(cfg, stage)
    model_fn = lambda rngs: method.build_model(stage_cfg, dims, stage, rngs)
    mesh = mesh_lib.make_mesh(cfg.mesh.shape)
    rules = shd.rules_from_config(cfg.mesh)
    # The trainer's state layout without initialising it (a random 934M model and its AdamW moments
    # would take ~11 GB for nothing: the weights come from the file, the optimizer state is not kept).
    abstract, shardings, _, _, _, _ = state_lib.abstract_train_state(model_fn, stage_cfg.train, int(cfg.seed), mesh,
                                                                     rules, int(cfg.mesh.get("min_shard_size", 0)))
    model = (state_lib.abstract_model(model_fn, int(cfg.seed)) if fills_everything
             else model_fn(nnx.Rngs(int(cfg.seed))))
    fill(model)
    _, params, _, model_state = state_lib.split_model(model)

    def onto(converted: Any, target: Any, target_shardings: Any, what: str) -> Any:
        # the converted leaves, keyed by path, placed into the trainer's own tree (its Variable metadata and shardings)
        new = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(converted)[0]}
        old = {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(target)[0]}
        if set(new) != old:
            raise RuntimeError(f"stage {stage}: converted {what} {sorted(set(new) ^ old)} differ from the trainer's")
        return jax.tree_util.tree_map_with_path(
            lambda k, t, s: jax.device_put(jnp.asarray(new[jax.tree_util.keystr(k)], t.dtype), s),
            target, target_shardings)

    params = onto(params, abstract.params, shardings.params, "params")
    model_state = onto(model_state, abstract.model_state, shardings.model_state, "model_state")
    state = state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=None,
        ema=jax.tree_util.tree_map(lambda x: x.copy(), params) if abstract.ema is not None else None,
        model_state=model_state, rng=jax.random.PRNGKey(int(cfg.seed) + 1))   # as state._make_init
    run_dir = method.stage_dir(workdir, stage)
    ck = ckpt_lib.Checkpointer(run_dir / "checkpoints", keep=int(stage_cfg.train.keep_checkpoints), async_save=False,
                               writer=True)   # as the trainer: the step gets checksums.json under a checksum policy
    try:
        ck.save(state, weights_only=True)   # no optimizer state: ~2x the weights, created afresh by train
        ck.wait()
    finally:
        ck.close()
    loop.write_model_info(run_dir, state, mesh, extra)


# ----------------------------------------------------------------------------- importers' command lines
def run_cli(argv: list[str], convert: Callable[[], Any], verbose: bool) -> Any:
    """An importer's main body: no stray arguments, quiet Orbax/absl logging, user errors (bad
    files, bad settings) as one line and exit status 2; bugs keep their traceback."""
    import logging
    import sys

    from gesture_jax.errors import is_user_error, one_line

    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("absl").setLevel(logging.WARNING)           # Orbax logs every step of a save at INFO
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    try:
        return convert()
    except Exception as e:  # noqa: BLE001 - user errors become one line, bugs keep their traceback
        if not is_user_error(e):
            raise
        if verbose:
            import traceback
            traceback.print_exception(e, file=sys.stderr)
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing for importers: an unknown key in the locked --config or a bad flag is one
    line and exit status 2."""
    import sys

    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:   # an unknown key in the locked config
        print(f"error: in --config overrides: {str(e).strip(chr(39))}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
