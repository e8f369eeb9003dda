"""The training loop: set up the workdir, resume if it has checkpoints, step, log, save.

``train(cfg, workdir)`` is what ``python -m gesture_jax.train`` runs. The pieces it
composes are injectable (:func:`run_training`) so tests can drive the same loop with a tiny
model and in-memory batches.

Exact resumption: the step's randomness is ``fold_in(rng, step)`` and the checkpoint holds
the data iterator's position, so a run killed at any point and restarted with the same
command continues the loss curve step for step (``tests/test_checkpoint_resume.py``); it
prints ``resumed at step N from DIR`` with N the restored state's step.
Preemption: SIGTERM (what SLURM, Kubernetes and TPU maintenance send) sets a flag; the loop
finishes the current step, saves a checkpoint, waits for it to be written and returns.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gesture_jax import storage
from gesture_jax.errors import UserError
from gesture_jax.parallel import distributed
from gesture_jax.parallel import mesh as mesh_lib
from gesture_jax.parallel import sharding as shd
from gesture_jax.storage import Path
from gesture_jax.training import checkpoint as ckpt_lib
from gesture_jax.training import metrics as metrics_lib
from gesture_jax.training import state as state_lib
from gesture_jax.training import step as step_lib

log = logging.getLogger(__name__)

ModelFn = Callable[[nnx.Rngs], nnx.Module]
# (per-process batch size, seed) -> iterator of {"motion","audio"} numpy batches with get/set_state
TrainIterFn = Callable[[int, int], Iterator[dict[str, np.ndarray]]]
# per-process batch size -> finite iterable of batches (a fresh pass each call)
EvalIterFn = Callable[[int], Iterator[dict[str, np.ndarray]]]
# (ModelParts, mesh, compute shardings) -> loss(params, model_state, batch, key, deterministic)
LossFactory = Callable[[Any, Any, Any], Callable[..., Any]]

# Sections that define the model a checkpoint belongs to: a resumed run must not change them
# (a method names its own: Method.config_sections; this default is Persona-Gestor's).
_FROZEN_SECTIONS = ("model", "diffusion", "audio")


class TrainConfigError(UserError, ValueError):
    """The config cannot train on this mesh/data, or does not match the workdir's run."""


@dataclass
class TrainResult:
    step: int                                  # optimizer steps done when the loop ended
    preempted: bool                            # stopped by SIGTERM (checkpoint written)
    history: list[dict[str, float]] = field(default_factory=list)  # logged rows


class _Preemption:
    """SIGTERM -> flag; restores the previous handler on exit."""

    def __init__(self):
        self.requested = False
        self._prev = None

    def __enter__(self):
        try:
            self._prev = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._prev = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._prev is not None:
            signal.signal(signal.SIGTERM, self._prev)

    def any_process(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
        return bool(np.any(flags))


def check_batch_layout(train_cfg: Any, mesh: jax.sharding.Mesh) -> int:
    """Validate global batch vs mesh/processes/accumulation; returns the per-process batch."""
    b = int(train_cfg.batch_size)
    accum = int(train_cfg.grad_accum)
    ways = mesh_lib.batch_parallelism(mesh)
    pc = jax.process_count()
    if accum < 1:
        raise TrainConfigError(f"train.grad_accum must be >= 1, got {accum}")
    if b % accum:
        raise TrainConfigError(f"train.batch_size={b} is not divisible by train.grad_accum={accum}")
    if (b // accum) % ways:
        raise TrainConfigError(
            f"micro-batch {b // accum} (train.batch_size / grad_accum) is not divisible by the "
            f"data x fsdp mesh size {ways} (mesh {dict(mesh.shape)}); change train.batch_size or mesh.shape")
    if b % pc:
        raise TrainConfigError(f"train.batch_size={b} is not divisible by the {pc} processes")
    return b // pc


def _global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Per-process rows -> one global array per key, batch split over (data, fsdp)."""
    return {k: jax.make_array_from_process_local_data(shd.batch_sharding(mesh, v.ndim), np.asarray(v))
            for k, v in local.items()}


def _config_json(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(cfg.to_json_best_effort(sort_keys=True))


def _base_config() -> ml_collections.ConfigDict:
    from configs.base import get_base_config
    return get_base_config()


def _backfill_added_keys(old: dict, new: dict, default: dict) -> None:
    """Keys the code gained after a run wrote its config.json (absent there) count as unchanged
    when the new config leaves them at their default: the default is what the old code did (e.g.
    model.step_table_rows = 0, the step features by formula). Set to anything else, they are a change."""
    for k, v in new.items():
        if k not in default:
            continue
        if k not in old:
            if v == default[k]:
                old[k] = v
        elif isinstance(v, dict) and isinstance(old[k], dict) and isinstance(default[k], dict):
            _backfill_added_keys(old[k], v, default[k])


def prepare_workdir(cfg: ml_collections.ConfigDict, workdir: Path, resuming: bool,
                    sections: tuple[str, ...] = _FROZEN_SECTIONS) -> None:
    """config.json, checked against the workdir's when resuming (or training a later stage):
    the ``sections`` that define the model must not change."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.json"
    new = _config_json(cfg)
    if resuming and cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        from gesture_jax.methods import method_name
        old["method"], new["method"] = method_name(old), method_name(new)
        _backfill_added_keys(old, new, _config_json(_base_config()))
        changed = [s for s in ("method",) + tuple(sections) if old.get(s) != new.get(s)]
        if changed:
            diffs = []
            for s in changed:
                if not isinstance(new.get(s), dict) or not isinstance(old.get(s), dict):
                    diffs.append(f"{s}: {old.get(s)!r} -> {new.get(s)!r}")
                    continue
                for k in sorted(set(old.get(s, {})) | set(new.get(s, {}))):
                    if old.get(s, {}).get(k) != new.get(s, {}).get(k):
                        diffs.append(f"{s}.{k}: {old.get(s, {}).get(k)!r} -> {new.get(s, {}).get(k)!r}")
            raise TrainConfigError(
                f"{workdir} holds a run with a different model ({'; '.join(diffs)}); "
                f"use a new --workdir or the original config")
    if distributed.is_primary():
        storage.write_atomic(cfg_path, json.dumps(new, indent=2) + "\n")


def copy_data_description(data_out: Path, workdir: Path) -> None:
    """So that generation needs only the workdir: the manifest and the motion pipeline."""
    if not distributed.is_primary():
        return
    dst = workdir / "data"
    dst.mkdir(parents=True, exist_ok=True)
    src_manifest = data_out / "manifest.json"
    if not src_manifest.exists():
        raise FileNotFoundError(f"{src_manifest} not found: run `python -m data_prep.prepare` first")
    storage.copy_file(src_manifest, dst / "manifest.json")
    pipe = data_out / "motion_pipeline"
    if pipe.is_dir():
        storage.copy_tree(pipe, dst / "motion_pipeline")


def write_model_info(workdir: Path, state: state_lib.TrainState, mesh, extra: dict[str, Any]) -> None:
    if not distributed.is_primary():
        return
    by_module: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        p = shd.path_to_str(path)
        by_module[p.split("/")[0]] = by_module.get(p.split("/")[0], 0) + int(leaf.size)
        shapes[p] = list(leaf.shape)
    info = {"param_count": state_lib.count_params(state.params), "param_count_by_module": by_module,
            "mesh": {k: int(v) for k, v in mesh.shape.items()}, "num_devices": int(mesh.size),
            "num_processes": jax.process_count(), **extra, "param_shapes": shapes}
    storage.write_atomic(workdir / "model_info.json", json.dumps(info, indent=2) + "\n")


def run_training(cfg: ml_collections.ConfigDict, workdir: str | Path, *, model_fn: ModelFn,
                 loss_factory: LossFactory, train_iter_fn: TrainIterFn, eval_iter_fn: EvalIterFn | None = None,
                 model_info: dict[str, Any] | None = None, mesh=None, run_dir: str | Path | None = None,
                 frozen_sections: tuple[str, ...] = _FROZEN_SECTIONS, init_weights: Any = None,
                 stop_after: int | None = None, progress: bool = True) -> TrainResult:
    """The loop, for any method: ``model_fn`` builds the trainable module and
    ``loss_factory(parts, mesh, compute_shardings)`` its loss. Checkpoints, metrics and
    model_info go to ``run_dir`` (default: the workdir; a stage of a multi-stage method has its
    own), config.json to the workdir. ``stop_after`` ends early after that many steps in this
    call (tests). ``init_weights`` = (params, model_state) a fresh run starts from instead of
    the random initialization (a student starts as its teacher); EMA starts there too."""
    workdir = storage.path(workdir)
    run_dir = storage.path(run_dir) if run_dir is not None else workdir
    tc = cfg.train
    mesh = mesh or mesh_lib.make_mesh(cfg.mesh.shape)
    local_bs = check_batch_layout(tc, mesh)
    rules = shd.rules_from_config(cfg.mesh)
    min_size = int(cfg.mesh.get("min_shard_size", 0))

    ckpt = ckpt_lib.Checkpointer(run_dir / "checkpoints", keep=int(tc.keep_checkpoints),
                                 async_save=bool(tc.get("async_checkpoint", True)), writer=True)
    resume_step = ckpt.latest_step()
    prepare_workdir(cfg, workdir, resuming=resume_step is not None or run_dir != workdir,
                    sections=frozen_sections)
    run_dir.mkdir(parents=True, exist_ok=True)

    abstract, shardings, parts, tx, schedule, _ = state_lib.abstract_train_state(
        model_fn, tc, int(cfg.seed), mesh, rules, min_size)
    data_state = None
    restored = ckpt.restore_verified(abstract, say=_say) if resume_step is not None else None
    if restored is not None:
        state, data_state, resume_step = restored
        if state.opt_state is None:   # a weights-only checkpoint (an imported run): a fresh optimizer
            state = state.replace(opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(state.params))
            _say(f"{ckpt.directory / str(resume_step)} holds weights only (an imported run): training starts "
                 f"a fresh optimizer state")
    else:
        state, _, _, _, _ = state_lib.create_train_state(model_fn, tc, int(cfg.seed), mesh, rules, min_size)
        if init_weights is not None:
            state = _start_from(state, shardings, *init_weights)
    start = int(jax.device_get(state.step))
    if restored is not None and distributed.is_primary():
        # The step of the state actually restored (not the directory name): a resume that
        # silently started over would print 0, which the kill/resume test catches; an equal
        # loss curve alone cannot tell (a restart from step 0 replays the same curve).
        print(f"resumed at step {start} from {ckpt.directory / str(resume_step)}", flush=True)
    write_model_info(run_dir, state, mesh, model_info or {})

    loss_fn = loss_factory(parts, mesh,
                           step_lib.compute_shardings(shardings.params, bool(cfg.mesh.get("gather_fsdp", True))))
    train_it = train_iter_fn(local_bs, int(cfg.seed))
    if data_state is not None:
        train_it.set_state(data_state)
    first = _next_batch(train_it, start)
    batch_ndims = {k: np.ndim(v) for k, v in first.items()}
    train_step = step_lib.jit_train_step(step_lib.make_train_step(loss_fn, tx, schedule, tc, mesh),
                                         shardings, mesh, batch_ndims)
    eval_step = step_lib.make_eval_step(loss_fn, mesh, shardings, batch_ndims) if eval_iter_fn else None

    writer = metrics_lib.MetricsWriter(run_dir, enabled=distributed.is_primary())
    writer.truncate_after(start)
    num_steps = int(tc.num_steps)
    bar = metrics_lib.Progress(start, num_steps, enabled=progress and distributed.is_primary())
    history: list[dict[str, float]] = []
    log_every, ckpt_every = max(1, int(tc.log_every)), max(1, int(tc.checkpoint_every))
    eval_every = int(tc.eval_every)
    guard = NonFiniteGuard(str(tc.get("nonfinite", "stop")), int(tc.get("max_nonfinite_skips", 20)),
                           ckpt, run_dir)
    preempted = False
    t_last, s_last = time.perf_counter(), start
    loss_sum, loss_n = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
    local_batch = first
    saved_step = start if restored is not None else None
    data_snapshot = None
    end = num_steps if stop_after is None else min(num_steps, start + stop_after)
    try:
        with _Preemption() as pre:
            step = start
            while step < end:
                if local_batch is None:
                    try:
                        local_batch = _next_batch(train_it, step)
                    except DataFaultError:
                        if saved_step != step:  # keep the work done so far, then report the data
                            guard.check()
                            ckpt.save(state, data_snapshot)
                            ckpt.wait()
                            _say(f"checkpoint of step {step} (the last completed step) saved in {ckpt.directory}")
                        raise
                data_snapshot = train_it.get_state()  # position after this step's batch
                state, m = train_step(state, _global_batch(local_batch, mesh))
                local_batch = None
                guard.check()            # the previous step's flag: the device stays one step ahead
                step += 1
                guard.push(step, m)
                good = 1 - m["nonfinite"]
                loss_sum = loss_sum + jnp.where(good > 0, m["loss"], 0.0)
                loss_n = loss_n + good
                if step % log_every == 0 or step == 1 or step == end:
                    guard.check()
                    m = jax.device_get(m)
                    now = time.perf_counter()
                    sps = (step - s_last) / max(now - t_last, 1e-9)
                    n_good = int(loss_n)
                    row = {"loss": float(m["loss"]), "loss_avg": float(loss_sum) / n_good if n_good else math.nan,
                           "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]), "steps_per_s": sps}
                    if guard.skipped:
                        row["nonfinite_steps"] = guard.skipped
                    writer.write(step, row)
                    history.append({"step": step, **row})
                    bar.update(step - s_last, loss=row["loss_avg"], sps=sps)
                    t_last, s_last = now, step
                    loss_sum, loss_n = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
                if eval_step is not None and eval_every > 0 and (step % eval_every == 0 or step == end):
                    val = evaluate(eval_step, state, eval_iter_fn, local_bs, mesh)
                    if val is not None:
                        writer.write(step, {"val_loss": val})
                        history.append({"step": step, "val_loss": val})
                        bar.write(f"step {step}: val_loss {val:.5f}")
                preempted = pre.any_process()
                if step % ckpt_every == 0 or step == num_steps or preempted:
                    guard.check()        # never save after a non-finite step in "stop" mode
                    ckpt.save(state, data_snapshot)
                    saved_step = step
                if preempted:
                    bar.write(f"SIGTERM: checkpoint at step {step} saved; exiting")
                    break
            guard.check()
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    return TrainResult(step=step, preempted=preempted, history=history)


def _start_from(state: state_lib.TrainState, shardings: state_lib.TrainState, params: Any,
                model_state: Any) -> state_lib.TrainState:
    """``state`` with the given weights (and EMA) in place of the random ones, in its layout."""
    def placed(tree, like, sh):
        if jax.tree_util.tree_structure(tree) != jax.tree_util.tree_structure(like):
            raise TrainConfigError("the initial weights do not fit this model (another architecture)")
        for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(like)):
            if a.shape != b.shape:
                raise TrainConfigError(f"the initial weights do not fit this model (shape {a.shape} vs {b.shape})")
        # copies: the step donates the state, and these arrays may still be in use (a teacher)
        return jax.device_put(jax.tree_util.tree_map(lambda a, b: jnp.array(a, b.dtype, copy=True), tree, like), sh)
    params = placed(params, state.params, shardings.params)
    return state.replace(params=params, model_state=placed(model_state, state.model_state, shardings.model_state),
                         ema=None if state.ema is None else jax.tree_util.tree_map(jnp.copy, params))


def _say(msg: str) -> None:
    if distributed.is_primary():
        print(msg, file=sys.stderr, flush=True)


def _next_batch(it, step: int) -> dict[str, np.ndarray]:
    """The next batch; a data fault becomes a one-line UserError naming the shard and record
    (``pipeline.data_error``) and the step it stopped."""
    try:
        return next(it)
    except StopIteration:
        raise
    except Exception as e:
        from gesture_jax.data.pipeline import data_error
        err = data_error(e)
        if err is None:
            raise
        raise DataFaultError(f"{err} (training stopped before step {step + 1})") from e


class DataFaultError(UserError, RuntimeError):
    """A shard that could not be read in the middle of training."""


class NonFiniteError(UserError, FloatingPointError):
    """The loss or gradient norm became NaN/inf (train.nonfinite="stop", or too many skips)."""


class NonFiniteGuard:
    """Reads each step's ``nonfinite`` flag one step late (so the device is never idle waiting
    for the host) and at every log and save point; the step itself never applies a non-finite
    update, so the weights are finite whenever this is consulted."""

    def __init__(self, mode: str, max_skips: int, ckpt: ckpt_lib.Checkpointer, run_dir: Path):
        if mode not in ("stop", "skip"):
            raise TrainConfigError(f"train.nonfinite={mode!r}: use 'stop' or 'skip'")
        self.mode, self.max_skips, self.ckpt, self.run_dir = mode, max_skips, ckpt, run_dir
        self.skipped = 0
        self._streak = 0
        self._pending: tuple[int, dict] | None = None

    def push(self, step: int, metrics: dict) -> None:
        self._pending = (step, metrics)

    def check(self) -> None:
        if self._pending is None:
            return
        step, m = self._pending
        self._pending = None
        if not int(jax.device_get(m["nonfinite"])):
            self._streak = 0
            return
        self.skipped += 1
        self._streak += 1
        loss, gn = (float(jax.device_get(m[k])) for k in ("loss", "grad_norm"))
        if self.mode == "skip" and self._streak <= self.max_skips:
            _say(f"step {step}: loss {loss}, grad norm {gn}: not finite, step skipped "
                 f"({self.skipped} so far)")
            return
        self.ckpt.wait()
        last = self.ckpt.latest_step()
        where = (f"the newest checkpoint, step {last} in {self.ckpt.directory}, holds finite weights"
                 if last is not None else "no checkpoint was saved")
        why = (f"{self._streak} non-finite steps in a row (train.max_nonfinite_skips={self.max_skips})"
               if self.mode == "skip" else "stopping (train.nonfinite='stop'; 'skip' would go on)")
        raise NonFiniteError(f"step {step}: loss {loss}, grad norm {gn} is not finite: {why}; nothing "
                             f"after step {step - 1} was saved and {where}; lower train.lr or check the data")


def evaluate(eval_step, state: state_lib.TrainState, eval_iter_fn: EvalIterFn, local_bs: int,
             mesh) -> float | None:
    """Mean validation loss over a fixed set of batches with fixed noise (comparable across steps)."""
    total, n = 0.0, 0
    base = jax.random.PRNGKey(20_000_411)
    for i, b in enumerate(eval_iter_fn(local_bs)):
        total += float(eval_step(state.params, state.model_state, _global_batch(b, mesh),
                                 jax.random.fold_in(base, i)))
        n += 1
    return total / n if n else None


# ----------------------------------------------------------------- the real-data entry
def train(cfg: ml_collections.ConfigDict, workdir: str | Path, *, stop_after: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train one stage of the configured method (``cfg.method``, ``cfg.train.stage``) on the
    prepared shards of ``cfg.data.out``."""
    from gesture_jax.data import manifest as manifest_lib
    from gesture_jax.data import pipeline
    from gesture_jax.methods import DataDims, MethodError, get_method, method_name

    workdir = storage.path(workdir)
    try:
        method = get_method(method_name(cfg))
        stage = method.stage(cfg)
    except MethodError as e:
        raise TrainConfigError(str(e)) from None
    try:
        info = pipeline.dataset_info(cfg)
    except manifest_lib.ManifestError as e:  # prepared for another config: one line, not a traceback
        raise TrainConfigError(str(e)) from None
    dims = DataDims(motion_dim=int(info["motion_dim"]), audio_dim=int(info["audio_dim"]),
                    window=int(info["window_frames"]), fps=float(cfg.data.fps),
                    audio_fps=float(info.get("audio_fps", cfg.data.fps)))
    run_dir = method.stage_dir(workdir, stage)
    try:
        method.check_data(cfg, manifest_lib.read_manifest(cfg.data.out))
        frozen = method.load_frozen(cfg, workdir, stage, dims)
        stage_cfg = method.train_config(cfg, stage)
        init_weights = method.initial_weights(stage_cfg, stage, frozen)
    except MethodError as e:
        raise TrainConfigError(str(e)) from None
    model_fn: ModelFn = lambda rngs: method.build_model(stage_cfg, dims, stage, rngs)
    loss_factory: LossFactory = lambda parts, mesh, csh: method.loss_fn(stage_cfg, stage, parts, mesh, csh, frozen)
    copy_data_description(storage.path(cfg.data.out), workdir)

    def train_iter_fn(local_bs: int, seed: int):
        return pipeline.make_iterator(cfg, "train", batch_size=local_bs, seed=seed)

    counts = info["num_windows"]
    val_split = next((s for s in ("val", "test") if counts.get(s, 0) > 0), None)
    eval_iter_fn = None
    if val_split is not None and int(stage_cfg.train.eval_every) > 0:
        def eval_iter_fn(local_bs: int):
            it = pipeline.make_iterator(cfg, val_split, batch_size=local_bs, seed=0, shuffle=False,
                                        num_epochs=1)
            for i, b in enumerate(it):
                if i >= int(stage_cfg.train.eval_batches):
                    break
                yield b

    extra = {"method": method.name, "stage": stage, "motion_dim": dims.motion_dim, "audio_dim": dims.audio_dim,
             "seq_len": dims.window, "val_split": val_split, "train_windows": counts.get("train")}
    return run_training(stage_cfg, workdir, model_fn=model_fn, loss_factory=loss_factory,
                        train_iter_fn=train_iter_fn, eval_iter_fn=eval_iter_fn, model_info=extra,
                        run_dir=run_dir, frozen_sections=method.config_sections or _FROZEN_SECTIONS,
                        init_weights=init_weights, stop_after=stop_after, progress=progress)
