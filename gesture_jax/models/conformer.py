"""The Conformer convolution module of the reference block.

LayerNorm -> pointwise D->2D -> GLU -> depthwise conv (k, replicate padding, no bias) ->
BatchNorm -> Swish -> pointwise D->D -> dropout. Pointwise (kernel 1) convolutions are Linear
layers here: same parameters (PyTorch (out, in, 1) == our (in, out)), one matmul instead of a conv.
BatchNorm keeps running statistics: batch statistics (and updates) when training, running
averages when deterministic (sampling). Note: PyTorch updates running_var with the *unbiased*
batch variance, Flax with the biased one; over B*T >= 400 samples the difference is < 0.3%.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gesture_jax.models.initializers import torch_bias_init, torch_weight_init


class DepthwiseConv1d(nnx.Module):
    """Per-channel 1-D convolution over time with replicate ("edge") padding, no bias. [B,T,C]->[B,T,C]."""

    def __init__(self, channels: int, kernel: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        if kernel % 2 == 0:
            raise ValueError(f"model.conv_kernel must be odd for same-length output, got {kernel}")
        self.kernel_size = kernel
        self.dtype = dtype
        # PyTorch depthwise weight (C, 1, k) has fan_in = k.
        self.kernel = nnx.Param(torch_weight_init(rngs.params(), (kernel, 1, channels), param_dtype).reshape(kernel, channels))

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        t = x.shape[1]
        xp = jnp.pad(x, ((0, 0), ((k - 1) // 2, (k - 1) // 2), (0, 0)), mode="edge")  # [B, T+k-1, C]
        w = self.kernel[...].astype(self.dtype or x.dtype)
        out = xp[:, 0:t] * w[0]
        for i in range(1, k):  # k is tiny (3): unrolled shifted multiply-adds beat a grouped conv on CPU
            out = out + xp[:, i:i + t] * w[i]
        return out


class ConformerConvModule(nnx.Module):
    """x [B,T,D] -> [B,T,D] (the caller adds the residual)."""

    def __init__(self, dim: int, kernel: int, dropout: float, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, **kw)
        self.pointwise_in = nnx.Linear(dim, 2 * dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(dim), **kw)
        self.depthwise = DepthwiseConv1d(dim, kernel, **kw)
        # PyTorch BatchNorm1d: momentum 0.1 (new = 0.9 old + 0.1 batch) == Flax momentum 0.9, eps 1e-5.
        self.batch_norm = nnx.BatchNorm(dim, momentum=0.9, epsilon=1e-5, **kw)
        self.pointwise_out = nnx.Linear(dim, dim, kernel_init=torch_weight_init, bias_init=torch_bias_init(dim), **kw)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        h = self.pointwise_in(self.norm(x))
        a, gate = jnp.split(h, 2, axis=-1)
        h = a * jax.nn.sigmoid(gate)  # GLU over channels
        h = self.batch_norm(self.depthwise(h), use_running_average=deterministic)
        h = jax.nn.silu(h)  # Swish
        return self.dropout(self.pointwise_out(h), deterministic=deterministic)
