"""Persona-Gestor's "fuzzy feature extractor": audio features -> one conditioning token per motion frame.

Reference (WavLM Base+, 20 s windows): 999 WavLM frames at 50 Hz
    style  = LayerNorm(Conv1d(768->768, k=500, dilation 2, no padding)(audio))  -> 1 token
    tokens = LeakyReLU_0.2(LayerNorm(Conv1d(768->1280, k=201, stride 2, no padding)(audio + style)))
                                                                           -> 400 tokens (20 fps)
    dropout 0.1
Our records hold audio features already at the motion rate (T frames at data fps, see
CONTRACTS), so the extractor first brings them to the rate its convolutions were designed for:

* ``audio_fps != fps`` (reference: 50 vs 20): the T frames are linearly resampled to the number
  of frames a WavLM/wav2vec2-style front end (20 ms hop, 25 ms window, i.e. a window of 1.25
  hops) yields for the same T/fps seconds: floor(T*audio_fps/fps - 1.25) + 1. For T=400 that is
  999, so the reference geometry (999 -> 1 style token, 999 -> 400 tokens) and parameter count
  hold exactly. Resampled frame j sits at time j/audio_fps (frame k <-> time k/fps, CONTRACTS).
* ``audio_fps == fps`` (demo): no resampling.

The frames are then centred and edge-padded (or centre-cropped) to the (T-1)*stride + kernel
frames the down-sampler needs for exactly T tokens; for the reference shape this is a no-op.
If the style convolution's receptive field is longer than that, its input is edge-padded to
it; if it yields several outputs (short kernels, the demo), they are averaged into the single
global style token (exactly the reference when it yields one).

Speed: the two convolutions hold ~492M parameters and ~160 GFLOP per 20 s example. Because the
style token is constant over time, down(x + style) == down(x) + (sum_k W_k) style exactly (no
padding inside the conv), so it is computed that way: the backward pass then never needs the
gradient with respect to the down-sampler's input (a transposed 158-GFLOP convolution), only
the weight gradient. The convolutions are plain lax convolutions (measured faster on this CPU
than an unfolded einsum or a per-tap scan).
"""
from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from gesture_jax.models.initializers import torch_bias_init, torch_weight_init


def resampled_frame_count(frames: int, fps: float, audio_fps: float) -> int:
    """Frames of a 1.25-hop-window front end at audio_fps over frames/fps seconds (400 @20 -> 999 @50)."""
    if audio_fps == fps:
        return frames
    return int(math.floor(frames * audio_fps / fps - 1.25 + 1e-9)) + 1


def linear_resample(x: jax.Array, out_frames: int, fps: float, out_fps: float) -> jax.Array:
    """Linear interpolation over time of x [B,T,A] sampled at fps to out_frames frames at out_fps (edge-clamped)."""
    t = x.shape[1]
    pos = np.arange(out_frames, dtype=np.float64) * (fps / out_fps)  # source frame coordinate
    lo = np.clip(np.floor(pos).astype(np.int32), 0, t - 1)
    hi = np.clip(lo + 1, 0, t - 1)
    w = np.clip(pos - lo, 0.0, 1.0).astype(np.float32)[None, :, None]
    return x[:, lo] * (1.0 - w) + x[:, hi] * w


def fit_length(x: jax.Array, length: int) -> jax.Array:
    """Centre x [B,N,A] in `length` frames: edge-pad (replicate) if shorter, centre-crop if longer."""
    n = x.shape[1]
    if n < length:
        left = (length - n) // 2
        return jnp.pad(x, ((0, 0), (left, length - n - left), (0, 0)), mode="edge")
    if n > length:
        left = (n - length) // 2
        return x[:, left:left + length]
    return x


class FuzzyFeatureExtractor(nnx.Module):
    """audio [B,T,A] (at the motion fps) -> conditioning tokens [B,T,D]."""

    def __init__(self, audio_dim: int, dim: int, *, style_kernel: int, style_dilation: int, down_kernel: int,
                 down_stride: int, audio_fps: float, fps: float, dropout: float, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        self.style_kernel, self.style_dilation = style_kernel, style_dilation
        self.down_kernel, self.down_stride = down_kernel, down_stride
        self.audio_fps, self.fps = float(audio_fps), float(fps)
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.style_conv = nnx.Conv(audio_dim, audio_dim, kernel_size=(style_kernel,), kernel_dilation=(style_dilation,),
                                   padding="VALID", kernel_init=torch_weight_init,
                                   bias_init=torch_bias_init(audio_dim * style_kernel), **kw)
        self.style_norm = nnx.LayerNorm(audio_dim, epsilon=1e-5, **kw)
        self.down_conv = nnx.Conv(audio_dim, dim, kernel_size=(down_kernel,), strides=(down_stride,), padding="VALID",
                                  kernel_init=torch_weight_init, bias_init=torch_bias_init(audio_dim * down_kernel),
                                  **kw)
        self.down_norm = nnx.LayerNorm(dim, epsilon=1e-5, **kw)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def input_frames(self, tokens: int) -> int:
        """Frames the down-sampler reads for `tokens` output tokens: (T-1)*stride + kernel (999 for T=400)."""
        return (tokens - 1) * self.down_stride + self.down_kernel

    def style_token(self, x: jax.Array) -> jax.Array:
        """Global style token of frames x [B,N,A] -> [B,1,A]."""
        field = (self.style_kernel - 1) * self.style_dilation + 1
        if x.shape[1] < field:
            x = fit_length(x, field)
        s = self.style_norm(self.style_conv(x))  # [B, N-field+1, A]
        return jnp.mean(s, axis=1, keepdims=True)

    def __call__(self, audio: jax.Array, *, deterministic: bool) -> jax.Array:
        b, t, _ = audio.shape
        x = audio.astype(self.dtype) if self.dtype is not None else audio
        n_audio = resampled_frame_count(t, self.fps, self.audio_fps)
        if n_audio != t:
            x = linear_resample(x, n_audio, self.fps, self.audio_fps)
        x = fit_length(x, self.input_frames(t))  # [B, N_in, A]
        style = self.style_token(x)  # [B, 1, A]
        # down(x + style) == down(x) + style @ sum_k W_k  (no padding inside the conv): see module docstring.
        w_sum = jnp.sum(self.down_conv.kernel[...], axis=0).astype(style.dtype)  # [A, D]
        tokens = self.down_conv(x) + style @ w_sum  # [B, T, D]
        tokens = jax.nn.leaky_relu(self.down_norm(tokens), negative_slope=0.2)
        return self.dropout(tokens, deterministic=deterministic)
