"""Transformer blocks with per-token adaptive LayerNorm conditioning, and the final layer.

ReferenceBlock reproduces Persona-Gestor's ConformerBlock (AdaLN variant):
    shift1, scale1, gate1, shift2, scale2, gate2 = Linear(LayerNorm(SiLU(c)))        # c: [B,T,D]
    m = LN(x) * (1 + scale1) + shift1
    h = m + Dropout(RelMHSA(LN(m)))        # residual module 1
    h = h + ConformerConv(h)                # residual module 2
    x = x + gate1 * h                       # the gate multiplies the modulated input m too
    x = x + gate2 * MLP(LN(x) * (1 + scale2) + shift2)
No zero-initialization (the reference keeps PyTorch defaults everywhere).

DiTBlock is the clean adaLN-Zero block of DiT (Peebles & Xie): SiLU -> Linear(D->6D) zero-init,
plain attention, no conformer conv, so every block starts as the identity.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from gesture_jax.models.attention import MultiHeadSelfAttention, RelativeSelfAttentionModule
from gesture_jax.models.conformer import ConformerConvModule
from gesture_jax.models.initializers import (kaiming_normal_init, torch_bias_init, torch_weight_init,
                                             xavier_uniform_init, zeros_init)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale) + shift


def _plain_norm(dim: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32) -> nnx.LayerNorm:
    """LayerNorm without affine parameters, eps 1e-6 (DiT's norm1/norm2/norm_final)."""
    return nnx.LayerNorm(dim, epsilon=1e-6, use_bias=False, use_scale=False, dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)


class Mlp(nnx.Module):
    """Linear(D->hD) -> tanh-GELU -> Linear(hD->D) (timm Mlp with drop=0)."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, init: str = "torch", dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if init == "torch":
            self.fc1 = nnx.Linear(dim, hidden, kernel_init=torch_weight_init, bias_init=torch_bias_init(dim), **kw)
            self.fc2 = nnx.Linear(hidden, dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(hidden), **kw)
        else:  # DiT's initialize_weights: Xavier uniform, zero bias
            self.fc1 = nnx.Linear(dim, hidden, kernel_init=xavier_uniform_init, bias_init=zeros_init, **kw)
            self.fc2 = nnx.Linear(hidden, dim, kernel_init=xavier_uniform_init, bias_init=zeros_init, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


class ReferenceBlock(nnx.Module):
    """Persona-Gestor's AdaLN conformer block. x, c: [B,T,D] -> [B,T,D]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, max_len: int, conv_kernel: int, dropout: float, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = _plain_norm(dim, **kw)
        self.attn = RelativeSelfAttentionModule(dim, heads, max_len, dropout, **kw)
        self.conv = ConformerConvModule(dim, conv_kernel, dropout, **kw)
        self.norm2 = _plain_norm(dim, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), init="torch", **kw)
        self.ada_norm = nnx.LayerNorm(dim, epsilon=1e-5, **kw)
        self.ada_linear = nnx.Linear(dim, 6 * dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(dim), **kw)

    def __call__(self, x: jax.Array, c: jax.Array, mask: np.ndarray | None, *, deterministic: bool) -> jax.Array:
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(
            self.ada_linear(self.ada_norm(jax.nn.silu(c))), 6, axis=-1)
        m = modulate(self.norm1(x), shift1, scale1)
        h = m + self.attn(m, mask, deterministic=deterministic)
        h = h + self.conv(h, deterministic=deterministic)
        x = x + gate1 * h
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiTBlock(nnx.Module):
    """adaLN-Zero DiT block with plain attention. x, c: [B,T,D] -> [B,T,D]; identity at init."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = _plain_norm(dim, **kw)
        self.attn = MultiHeadSelfAttention(dim, heads, dropout, **kw)
        self.norm2 = _plain_norm(dim, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), init="xavier", **kw)
        self.ada_linear = nnx.Linear(dim, 6 * dim, kernel_init=zeros_init, bias_init=zeros_init, **kw)

    def __call__(self, x: jax.Array, c: jax.Array, mask: np.ndarray | None, *, deterministic: bool) -> jax.Array:
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.ada_linear(jax.nn.silu(c)), 6, axis=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), mask, deterministic=deterministic)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nnx.Module):
    """LN (no affine) modulated by SiLU->Linear(D->2D)(c), then the motion decoder Conv1d(D->F, k=1) as Linear."""

    def __init__(self, dim: int, out_dim: int, *, zero_init: bool, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = _plain_norm(dim, **kw)
        if zero_init:
            self.ada_linear = nnx.Linear(dim, 2 * dim, kernel_init=zeros_init, bias_init=zeros_init, **kw)
            self.out = nnx.Linear(dim, out_dim, kernel_init=zeros_init, bias_init=zeros_init, **kw)
        else:
            self.ada_linear = nnx.Linear(dim, 2 * dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(dim),
                                         **kw)
            # Reference motion decoder: Kaiming normal (fan_in, leaky_relu) weight, default bias.
            self.out = nnx.Linear(dim, out_dim, kernel_init=kaiming_normal_init, bias_init=torch_bias_init(dim), **kw)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.ada_linear(jax.nn.silu(c)), 2, axis=-1)
        return self.out(modulate(self.norm(x), shift, scale))
