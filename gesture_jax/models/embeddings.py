"""Diffusion-step embedding (DiffWave style) and the sinusoidal position table.

Both tables are computed on the fly from the step / position indices instead of being stored:
they are fixed functions, not parameters, and a 5000 x 2560 table baked into every compiled
program would cost 51 MB of constants for nothing.

One exception: a model imported from the reference's weights must see the reference's step
features bit for bit, and those come from torch's float32 power and sine, which differ from
numpy's / XLA's in the last unit of 260 of the 1280 frequencies - up to 0.96 in a feature at
large t, 0.7 % of the network's output at t = 999. Such a run stores the table the importer
computed with torch (`model.step_table_rows` > 0): a `StepTable` variable, carried in the
checkpoint beside the BatchNorm statistics, never trained, looked up instead of the formula.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from gesture_jax.models.initializers import torch_bias_init, torch_weight_init


def diffwave_step_features(t: jax.Array, width: int) -> jax.Array:
    """Sinusoidal features of integer diffusion steps, as the reference's DiffWave table.

    The reference builds table[t, k] = t * 10 ** (4k / H) for k < H = width/2 and concatenates
    [sin, cos] (frequencies from 1 up to 10^4 rad/step, *not* the Transformer 1/10000^(2k/d)).
    t: [B] int -> [B, width] float32. Steps beyond the reference's 5000-row table are simply
    evaluated by the same formula.
    """
    if width % 2:
        raise ValueError(f"time_embed_dim must be even, got {width}")
    half = width // 2
    freqs = jnp.asarray(10.0 ** (np.arange(half, dtype=np.float32) * 4.0 / half), jnp.float32)  # [H]
    angles = t.astype(jnp.float32)[:, None] * freqs[None, :]  # [B, H]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [B, 2H]


class StepTable(nnx.Variable):
    """A fixed [rows, width] float32 table of step features: saved and restored with the model's
    other non-parameter state (model_state), never given to the optimizer."""


class TimestepEmbedding(nnx.Module):
    """t -> sinusoid(width) -> Linear(width->D) -> SiLU -> Linear(D->D) -> SiLU (reference DiffusionEmbedding).

    table_rows > 0: the sinusoid is looked up in a stored `StepTable` of that many steps (filled by
    an importer with the reference's exact values; initialised here with our formula)."""

    def __init__(self, width: int, dim: int, *, rngs: nnx.Rngs, table_rows: int = 0, dtype=None,
                 param_dtype=jnp.float32):
        self.width = width
        self.table = (StepTable(diffwave_step_features(jnp.arange(table_rows), width))
                      if table_rows > 0 else None)
        self.proj1 = nnx.Linear(width, dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(width),
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj2 = nnx.Linear(dim, dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(dim),
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        """t: [B] int -> [B, D]."""
        if self.table is not None:
            h = jnp.take(self.table[...], t.astype(jnp.int32), axis=0)  # [B, width]; t < rows (sampler contract)
        else:
            h = diffwave_step_features(t, self.width)
        h = jax.nn.silu(self.proj1(h))
        return jax.nn.silu(self.proj2(h))


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """Transformer sinusoidal table [length, dim]: even channels sin, odd channels cos (numpy constant)."""
    if dim % 2:
        raise ValueError(f"model dim must be even for sinusoidal positions, got {dim}")
    position = np.arange(length, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, dim, 2, dtype=np.float32) * -(np.log(10000.0) / dim))
    pe = np.zeros((length, dim), np.float32)
    pe[:, 0::2] = np.sin(position * div_term)
    pe[:, 1::2] = np.cos(position * div_term)
    return pe
