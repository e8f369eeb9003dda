"""Optimizer of the reference: AdamW, linear warm-up from ``8e-5 * lr``, grad-norm clipping.

Persona-Gestor trains with AdamW (lr 2e-4, weight decay 0.01 on every parameter, as
PyTorch's AdamW does), a learning rate that rises linearly from ``lr * warmup_init_factor``
to ``lr`` over ``warmup_steps`` optimizer steps and then stays constant, and gradients
clipped to global norm 0.5 before the update. The learning rate is also returned by
:func:`make_schedule` so it can be logged.

``train.lr_decay="cosine"`` (not the reference's) lets the rate fall after warm-up along a
half cosine to ``lr * lr_final_factor`` at ``num_steps``. Short runs need it: with a
constant rate the last weights are one noisy point of the walk, and a small model sampled
from them carries per-channel offsets (the demo model's slow leg and hip channels came out
0.5-1 standard deviation off their data mean at a constant 1e-3).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax


LR_DECAYS = ("constant", "cosine")


def linear_warmup(init: float, peak: float, steps: int) -> optax.Schedule:
    """``init + (peak - init) * min(step / steps, 1)``.

    Not ``optax.linear_schedule``: that computes ``(init - peak) * (1 - frac) + peak``, which in
    float32 cancels at step 0 and starts the reference's warm-up (``init = 8e-5 * peak``) about
    0.05% off its start value; this form returns ``init`` itself at step 0.
    """
    def schedule(count: jnp.ndarray) -> jnp.ndarray:
        frac = jnp.clip(jnp.asarray(count, jnp.float32) / steps, 0.0, 1.0)   # []
        return init + (peak - init) * frac
    return schedule


def make_schedule(train_cfg: Any) -> optax.Schedule:
    """lr(step): linear from lr*warmup_init_factor to lr over warmup_steps, then constant
    (the reference) or a half cosine down to lr*lr_final_factor at num_steps."""
    lr = float(train_cfg.lr)
    warmup = max(0, int(train_cfg.warmup_steps))
    init = lr * float(train_cfg.warmup_init_factor)
    decay = str(train_cfg.get("lr_decay", "constant"))
    if decay not in LR_DECAYS:
        raise ValueError(f"train.lr_decay must be one of {LR_DECAYS}, got {decay!r}")
    if decay == "cosine":
        rest = max(1, int(train_cfg.num_steps) - warmup)
        after = optax.cosine_decay_schedule(lr, rest, alpha=float(train_cfg.get("lr_final_factor", 0.0)))
    else:
        after = optax.constant_schedule(lr)
    if warmup == 0:
        return after
    return optax.join_schedules([linear_warmup(init, lr, warmup), after], [warmup])


def make_optimizer(train_cfg: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(clip -> AdamW) and its learning-rate schedule."""
    schedule = make_schedule(train_cfg)
    parts = []
    if float(train_cfg.clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(train_cfg.clip_norm)))
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.999, eps=float(train_cfg.get("adam_eps", 1e-8)),
                             weight_decay=float(train_cfg.weight_decay)))
    return optax.chain(*parts), schedule


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """Exponential moving average of the fp32 master weights (sampling uses it when kept)."""
    return optax.incremental_update(params, ema, step_size=1.0 - decay)


def compute_dtype(name: str) -> jnp.dtype:
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"train.compute_dtype must be 'float32' or 'bfloat16', got {name!r}")
    return jnp.dtype(name)
