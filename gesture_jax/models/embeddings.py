"""Diffusion-step embedding (DiffWave style) and the sinusoidal position table.

Both tables are computed on the fly from the step / position indices instead of being stored:
they are fixed functions, not parameters, and a 5000 x 2560 table baked into every compiled
program would cost 51 MB of constants for nothing.
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


class TimestepEmbedding(nnx.Module):
    """t -> sinusoid(width) -> Linear(width->D) -> SiLU -> Linear(D->D) -> SiLU (reference DiffusionEmbedding)."""

    def __init__(self, width: int, dim: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        self.width = width
        self.proj1 = nnx.Linear(width, dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(width),
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj2 = nnx.Linear(dim, dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(dim),
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        """t: [B] int -> [B, D]."""
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
