"""Self-attention: the reference's Transformer-XL relative attention, a plain one for DiT, masks.

Reference quirks reproduced on purpose (see DESIGN.md, "The reference, in figures"):
  * scores are divided by sqrt(model dim), not sqrt(head dim) -> softer attention;
  * the position table is the *absolute* sinusoid of positions 0..T-1 passed through
    Transformer-XL's "relative shift" (pad a zero column, reshape, drop a row); this is what
    the Conformer implementation the reference uses does, so it is kept bit-for-bit;
  * its "causal" mask hides each frame from itself and from the future; frame 0 then has
    nothing left, every score becomes -1e9 and softmax attends uniformly to all frames.
"""
from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from gesture_jax.models.embeddings import sinusoidal_positions
from gesture_jax.models.initializers import xavier_uniform_init, zeros_init

MASK_KINDS = ("reference", "causal", "none")
MASKED_SCORE = -1e9  # value the reference writes into masked scores (masked_fill_)


def attention_mask(kind: str, length: int) -> np.ndarray | None:
    """Boolean [T, T] mask, True = hidden. 'reference': j >= i hidden; 'causal': j > i; 'none': None."""
    if kind == "none":
        return None
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    if kind == "reference":
        return j >= i
    if kind == "causal":
        return j > i
    raise ValueError(f"model.attn_mask must be one of {MASK_KINDS}, got {kind!r}")


def relative_shift(scores: jax.Array) -> jax.Array:
    """Transformer-XL shift of position scores [..., T1, T2] (pad zero column, reshape, drop a row)."""
    *lead, t1, t2 = scores.shape
    padded = jnp.concatenate([jnp.zeros((*lead, t1, 1), scores.dtype), scores], axis=-1)  # [..., T1, T2+1]
    padded = padded.reshape(*lead, t2 + 1, t1)
    return padded[..., 1:, :].reshape(*lead, t1, t2)


def _masked_softmax(scores: jax.Array, mask: np.ndarray | None) -> jax.Array:
    if mask is not None:
        scores = jnp.where(jnp.asarray(mask), jnp.asarray(MASKED_SCORE, scores.dtype), scores)
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(scores.dtype)


class RelativeMultiHeadAttention(nnx.Module):
    """Multi-head attention with Transformer-XL relative positions (u/v biases), reference scaling."""

    def __init__(self, dim: int, heads: int, max_len: int, dropout: float, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        if dim % heads:
            raise ValueError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")
        self.dim, self.heads, self.head_dim, self.max_len = dim, heads, dim // heads, max_len

        def proj(use_bias: bool = True) -> nnx.Linear:
            return nnx.Linear(dim, dim, use_bias=use_bias, kernel_init=xavier_uniform_init, bias_init=zeros_init,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        self.query = proj()
        self.key = proj()
        self.value = proj()
        self.pos = proj(use_bias=False)
        self.out = proj()
        self.u_bias = nnx.Param(xavier_uniform_init(rngs.params(), (heads, self.head_dim), param_dtype))
        self.v_bias = nnx.Param(xavier_uniform_init(rngs.params(), (heads, self.head_dim), param_dtype))
        self.attn_dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: np.ndarray | None, *, deterministic: bool) -> jax.Array:
        """x: [B, T, D] -> [B, T, D]."""
        b, t, _ = x.shape
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds model.max_len={self.max_len} (relative position table)")
        h, dh = self.heads, self.head_dim
        q = self.query(x).reshape(b, t, h, dh)
        k = self.key(x).reshape(b, t, h, dh)
        v = self.value(x).reshape(b, t, h, dh)
        # The position projection does not depend on the batch: computed once, not per example.
        pe = jnp.asarray(sinusoidal_positions(t, self.dim), x.dtype)  # [T, D] constant
        p = self.pos(pe).reshape(t, h, dh)
        content = jnp.einsum("bihd,bjhd->bhij", q + self.u_bias[...].astype(q.dtype), k)
        position = relative_shift(jnp.einsum("bihd,jhd->bhij", q + self.v_bias[...].astype(q.dtype), p))
        scores = (content + position) / math.sqrt(self.dim)  # reference: sqrt(d_model), not sqrt(head_dim)
        attn = self.attn_dropout(_masked_softmax(scores, mask), deterministic=deterministic)
        ctx = jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(b, t, self.dim)
        return self.out(ctx)


class RelativeSelfAttentionModule(nnx.Module):
    """Conformer MHSA module: LayerNorm -> relative attention -> dropout (residual added by the caller)."""

    def __init__(self, dim: int, heads: int, max_len: int, dropout: float, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attention = RelativeMultiHeadAttention(dim, heads, max_len, dropout, rngs=rngs, dtype=dtype,
                                                    param_dtype=param_dtype)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: np.ndarray | None, *, deterministic: bool) -> jax.Array:
        return self.dropout(self.attention(self.norm(x), mask, deterministic=deterministic),
                            deterministic=deterministic)


class MultiHeadSelfAttention(nnx.Module):
    """Plain multi-head self-attention (fused qkv, 1/sqrt(head_dim) scaling) for the DiT block."""

    def __init__(self, dim: int, heads: int, dropout: float, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        if dim % heads:
            raise ValueError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.qkv = nnx.Linear(dim, 3 * dim, kernel_init=xavier_uniform_init, bias_init=zeros_init, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
        self.out = nnx.Linear(dim, dim, kernel_init=xavier_uniform_init, bias_init=zeros_init, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
        self.attn_dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: np.ndarray | None, *, deterministic: bool) -> jax.Array:
        b, t, _ = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3 * self.heads, self.head_dim), 3, axis=2)
        scores = jnp.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(self.head_dim)
        attn = self.attn_dropout(_masked_softmax(scores, mask), deterministic=deterministic)
        return self.out(jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(b, t, self.dim))
