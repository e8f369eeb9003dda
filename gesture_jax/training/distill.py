"""Few-step students: distil a trained diffusion teacher into a model that samples in 1-2 steps.

What the student learns (trajectory distillation at the student's grid times): for x_t drawn
from the forward process at a time t the student will be asked about, the clean motion that
the teacher's probability-flow ODE reaches from x_t,

    f_student(x_t, t)  ~=  Solve_teacher(x_t, t -> 0),   Solve = DPM-Solver++(2M), eta = 0, K steps,

with the target computed on the fly (no gradient) inside the jitted train step. Sampling is
then multistep consistency sampling (samplers.STUDENT): x0 = f(x_T, T-1) from pure noise,
and for a second step x0 is noised to t_mid with fresh noise and mapped again.

Why this form, among the few-step methods of the field (README "Few-step students"):
  * the teacher is a window denoiser conditioned on audio, whose targets are cheap at the
    demo shape and affordable at the reference one (K forward passes per step, no backward);
    solving the whole rest of the ODE gives an exact target for the teacher, so unlike
    consistency distillation (one teacher step + the student's own EMA as target) nothing is
    bootstrapped and no target network is needed, and unlike progressive distillation there
    is one training stage instead of log2(steps) rounds;
  * the student is the teacher's own network, initialised from its (EMA) weights, with its
    output read as x0: every sampler wrapper (long-audio window fusion, snapping, streaming
    with x0 fusion) works on it unchanged, because they all act on an x0 estimate.
Training times: t = T-1 with probability ``distill.p_top`` (the one-step map), otherwise one
of ``distill.levels - 1`` times evenly spread over [t_min_frac (T-1), T-1) (what a second or
third step starts from); the teacher's solver grid from each level is tabulated once in numpy.

The teacher weights are closed over by the loss (frozen, cast to the compute dtype), like a
multi-stage method's earlier stage: on a multi-device mesh they are replicated, which at the
reference shape costs one more copy of the weights per device.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from gesture_jax.errors import UserError
from gesture_jax.models import diffusion
from gesture_jax.parallel import sharding as shd
from gesture_jax.sampling import samplers
from gesture_jax.storage import Path
from gesture_jax.training import optim
from gesture_jax.training import step as step_lib


class DistillError(UserError, ValueError):
    """A distillation request that cannot work (wrong teacher, settings out of range)."""


# ------------------------------------------------------------------ training times and targets
def training_levels(num_train_steps: int, levels: int, t_min_frac: float) -> np.ndarray:
    """int32 [levels]: level 0 is T-1 (the one-step map); the others spread over [t_min, T-1)."""
    T = int(num_train_steps)
    if levels < 1:
        raise DistillError(f"distill.levels must be >= 1, got {levels}")
    if not 0.0 < float(t_min_frac) < 1.0:
        raise DistillError(f"distill.t_min_frac must be in (0, 1), got {t_min_frac}")
    if levels == 1:
        return np.array([T - 1], np.int32)
    lo = int(round(float(t_min_frac) * (T - 1)))
    rest = np.unique(np.round(np.linspace(lo, T - 1, levels)[:-1]).astype(np.int64))
    return np.concatenate([[T - 1], rest[::-1]]).astype(np.int32)


@dataclass(frozen=True)
class TeacherTables:
    """The teacher's deterministic solver from each training level down to 0: arrays [L, K]
    (ts int32; a, b, c float32: x <- a x + b ((1 + c) x0 - c x0_prev), see samplers.py)."""
    levels: np.ndarray
    ts: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray


def teacher_tables(alphas_cumprod: np.ndarray, levels: np.ndarray, sampler: str, steps: int) -> TeacherTables:
    """Solver coefficients from every level (quadratic spacing, as the few-step samplers use)."""
    if sampler not in ("ddim", "dpm-solver++"):
        raise DistillError(f"distill.teacher_sampler={sampler!r}: the targets need a deterministic solver "
                           f"(ddim or dpm-solver++, eta = 0)")
    rows = []
    for t0 in levels:
        k = min(int(steps), int(t0) + 1)
        grid = samplers.timestep_grid(int(t0) + 1, k, "quadratic")
        co = samplers.sampler_coefficients(alphas_cumprod, sampler, k, eta=0.0, ts=grid)
        pad = int(steps) - k  # short grids are padded with identity steps at the front (a=1, b=0)
        rows.append((np.concatenate([np.full(pad, grid[0]), co.ts]), np.concatenate([np.ones(pad), co.a]),
                     np.concatenate([np.zeros(pad), co.b]), np.concatenate([np.zeros(pad), co.c])))
    ts, a, b, c = (np.stack([r[i] for r in rows]) for i in range(4))
    return TeacherTables(levels=np.asarray(levels, np.int32), ts=ts.astype(np.int32), a=a.astype(np.float32),
                         b=b.astype(np.float32), c=c.astype(np.float32))


def solve(x0_fn, tables: TeacherTables, level: jax.Array, x_t: jax.Array) -> jax.Array:
    """The teacher's ODE solution from x_t [B, ...] at per-example levels [B] down to x0.

    x0_fn(x [B, ...], t [B]) -> x0 estimate. One lax.scan over the K steps; each example
    follows the grid of its own level."""
    cols = lambda arr: jnp.asarray(arr)[level].T  # [K, B]  # noqa: E731
    xs = (cols(tables.ts), cols(tables.a), cols(tables.b), cols(tables.c))
    bshape = lambda v: v.reshape(v.shape + (1,) * (x_t.ndim - 1))  # noqa: E731

    def step(carry, inp):
        x, prev = carry
        t, a, b, c = inp
        x0 = x0_fn(x, t).astype(x.dtype)
        d = (1.0 + bshape(c)) * x0 - bshape(c) * prev
        return (bshape(a) * x + bshape(b) * d, x0), None

    (x, _), _ = jax.lax.scan(step, (x_t, jnp.zeros_like(x_t)), xs)
    return x


# ------------------------------------------------------------------ the teacher
@dataclass
class Teacher:
    """The frozen teacher: (graphdef, state) of its denoiser, where it came from, its checkpoint step."""
    graphdef: Any
    state: Any
    workdir: Path
    step: int


def teacher_workdir(cfg: ml_collections.ConfigDict, workdir: Path) -> Path:
    """distill.teacher_workdir, or (empty) the student's own workdir."""
    t = str(cfg.distill.get("teacher_workdir", "") or "")
    return Path(t) if t else Path(workdir)


def check_teacher(cfg: ml_collections.ConfigDict, teacher_dir: Path, method_name: str,
                  shape_sections: tuple[str, ...]) -> ml_collections.ConfigDict:
    """The teacher run's config, after checking it is a run of this method with the same shape.

    The student starts from the teacher's weights, so its network must be the teacher's:
    another method or any change in `shape_sections` is an error naming both."""
    from gesture_jax.methods import method_name as name_of

    path = teacher_dir / "config.json"
    if not path.is_file():
        raise DistillError(f"distillation teacher {teacher_dir}: no config.json (not a training run; train the "
                           f"teacher first or set distill.teacher_workdir)")
    tcfg = ml_collections.ConfigDict(json.loads(path.read_text()))
    theirs = name_of(tcfg)
    if theirs != method_name:
        raise DistillError(f"distillation teacher {teacher_dir} is a {theirs!r} run, but this student is "
                           f"{method_name!r}: a student learns from a teacher of its own method")
    diffs = []
    for sec in shape_sections:
        mine = cfg.get(sec).to_dict() if sec in cfg else {}
        other = tcfg.get(sec).to_dict() if sec in tcfg else {}
        for k in sorted(set(mine) | set(other)):
            if mine.get(k) != other.get(k):
                diffs.append(f"{sec}.{k}: teacher {other.get(k)!r}, student {mine.get(k)!r}")
    if diffs:
        raise DistillError(f"distillation teacher {teacher_dir} has another shape than this student "
                           f"({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}): the student starts "
                           f"from the teacher's weights, so use the teacher's config")
    return tcfg


# ------------------------------------------------------------------ the loss
def distill_loss_fn(cfg: ml_collections.ConfigDict, parts: Any, mesh: Any, compute_shardings: Any,
                    teacher: Teacher):
    """loss(params, model_state, batch, key, deterministic) -> (loss, model_state): the mean
    squared distance between the student's x0 and the teacher's ODE solution from the same x_t."""
    dc = cfg.distill
    schedule = diffusion.make_schedule(cfg.diffusion)
    T = int(cfg.diffusion.num_steps)
    ab = np.asarray(schedule.alphas_cumprod, np.float64)
    tables = teacher_tables(ab, training_levels(T, int(dc.levels), float(dc.t_min_frac)),
                            str(dc.teacher_sampler), int(dc.teacher_steps))
    n_levels = int(tables.levels.shape[0])
    p_top = float(dc.p_top)
    t_pred, s_pred = str(cfg.diffusion.prediction), str(dc.prediction)
    guidance = float(cfg.sample.guidance if float(dc.guidance) <= 0 else dc.guidance)
    clip = float(cfg.sample.get("clip_x0", 20.0)) or None
    cdtype = optim.compute_dtype(str(cfg.train.compute_dtype))
    t_graph = teacher.graphdef
    t_state = jax.tree_util.tree_map(lambda x: x.astype(cdtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                     teacher.state)
    levels_arr = jnp.asarray(tables.levels)
    vel_w = float(dc.get("vel_weight", 0.0))

    ab_j = jnp.asarray(ab, jnp.float32)

    def loss_fn(params, model_state, batch, key, deterministic: bool = False):
        x0 = shd.constrain_batch(batch["motion"].astype(jnp.float32), mesh)   # [B,T,F]
        audio = shd.constrain_batch(batch["audio"], mesh)                      # [B,Ta,A]
        b = x0.shape[0]
        k_top, k_lvl, k_noise, k_model = jax.random.split(key, 4)
        level = jnp.where(jax.random.bernoulli(k_top, p_top, (b,)), 0,
                          jax.random.randint(k_lvl, (b,), min(1, n_levels - 1), n_levels))
        level = shd.constrain_batch(level.astype(jnp.int32), mesh)           # [B]
        t = levels_arr[level]
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t = shd.constrain_batch(diffusion.q_sample(schedule, x0, t, noise), mesh)

        teach = nnx.merge(t_graph, t_state)
        cond = teach.condition(audio.astype(cdtype), deterministic=True, frames=x0.shape[1])  # [B,T,D], once per batch
        null = teach.null_condition(1, cond.shape[1]) if guidance != 1.0 else None

        def teacher_x0(x, tt):  # x [B,T,F], tt [B]
            out = samplers.guided_denoise(teach, x.astype(cdtype), tt, cond, null, guidance)
            return samplers.output_to_x0(out.astype(jnp.float32), x, tt, ab_j, t_pred, clip)

        target = jax.lax.stop_gradient(solve(teacher_x0, tables, level, x_t))   # [B,T,F]
        model = step_lib.bind_model(parts, params, model_state, k_model, deterministic, cdtype, compute_shardings)
        out = model(x_t.astype(cdtype), t, audio.astype(cdtype), deterministic=deterministic)
        pred = shd.constrain_batch(samplers.output_to_x0(out.astype(jnp.float32), x_t, t, ab_j, s_pred, clip), mesh)
        err = pred - shd.constrain_batch(target, mesh)                        # [B,T,F]
        loss = jnp.mean(jnp.square(err))
        if vel_w > 0:  # frame-to-frame error: what shows as jitter weighs more than a slow offset
            loss = loss + vel_w * jnp.mean(jnp.square(jnp.diff(err, axis=1)))
        return loss, step_lib.model_state_after(model, model_state)

    return loss_fn
