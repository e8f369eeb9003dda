"""Persona-Gestor's "fuzzy feature extractor": audio features -> one conditioning token per motion frame.

Reference (WavLM Base+, 20 s windows): 999 WavLM frames at 50 Hz
    style  = LayerNorm(Conv1d(768->768, k=500, dilation 2, no padding)(audio))  -> 1 token
    tokens = LeakyReLU_0.2(LayerNorm(Conv1d(768->1280, k=201, stride 2, no padding)(audio + style)))
                                                                           -> 400 tokens (20 fps)
    dropout 0.1
The convolutions are designed for audio at ``audio_fps`` (model.fuzzy.audio_fps; reference 50 Hz).
For T output tokens (motion frames at ``fps``) that is N(T) = floor(T*audio_fps/fps - 1.25) + 1
frames, what a WavLM/wav2vec2-style front end (20 ms hop, 25 ms window, i.e. a window of 1.25
hops) yields for the same T/fps seconds (`resampled_frame_count`; T=400 -> 999), so the reference
geometry (999 -> 1 style token, 999 -> 400 tokens) and parameter count hold exactly. The input is
at ``input_fps``, the rate of the data's audio (manifest audio.rate, given by the model builder;
None: found per call from the input's length, which is T at the motion rate or N(T) at audio_fps):

* input at audio_fps (WavLM records at their native 50 Hz, audio.native_rate, the reference): the
  frames reach the convolutions unresampled, exactly as the reference feeds WavLM's 999 frames.
* any other rate (mel at the motion rate, older motion-rate WavLM records): the frames are
  linearly resampled to N(T) frames, frame j at time j/audio_fps (input frame i <-> time
  i/input_fps); with input_fps == audio_fps == fps (demo) nothing is resampled either.

The frames are then centred and edge-padded (or centre-cropped) to the (T-1)*stride + kernel
frames the down-sampler needs for exactly T tokens; for the reference shape this is a no-op.
If the style convolution's receptive field is longer than that, its input is edge-padded to
it; if it yields several outputs (short kernels, the demo), they are averaged into the single
global style token (exactly the reference when it yields one).

Speed: the two convolutions hold ~492M parameters and ~160 GFLOP per 20 s example. Because the
style token is constant over time, down(x + style) == down(x) + (sum_k W_k) style exactly (no
padding inside the conv), so it is computed that way (`conv_plus_constant`, custom gradient):
the backward pass never needs the gradient with respect to the down-sampler's input (a
transposed 158-GFLOP convolution), only one weight gradient, done as an im2col matmul for small
batches. The forward down-sampler is a plain lax convolution (faster on this CPU than an
unfolded einsum or a per-tap scan); the style convolution, which has one output for the
reference, is one matmul over its gathered taps. Measured on the shared 2-core CPU (CPU
seconds, B=1, fwd+bwd of the extractor alone): 13.1 -> 6.1-6.7.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from gesture_jax.audio.frames import audio_frames_for, motion_frames_covered
from gesture_jax.models.initializers import torch_bias_init, torch_weight_init


def resampled_frame_count(frames: int, fps: float, audio_fps: float) -> int:
    """Frames of a 1.25-hop-window front end at audio_fps over frames/fps seconds (400 @20 -> 999 @50);
    `frames` when audio_fps == fps (gesture_jax.audio.frames.audio_frames_for)."""
    return audio_frames_for(frames, fps, audio_fps)


def linear_resample(x: jax.Array, out_frames: int, fps: float, out_fps: float) -> jax.Array:
    """Linear interpolation over time of x [B,T,A] sampled at fps to out_frames frames at out_fps (edge-clamped)."""
    t = x.shape[1]
    pos = np.arange(out_frames, dtype=np.float64) * (fps / out_fps)  # source frame coordinate
    lo = np.clip(np.floor(pos).astype(np.int32), 0, t - 1)
    hi = np.clip(lo + 1, 0, t - 1)
    w = np.clip(pos - lo, 0.0, 1.0).astype(np.float32)[None, :, None]
    return x[:, lo] * (1.0 - w) + x[:, hi] * w


def _conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """VALID strided 1-D convolution, x [B,N,A], kernel [K,A,D] -> [B,(N-K)//stride+1,D]."""
    return jax.lax.conv_general_dilated(x, kernel, (stride,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))


def _tap_sum(kernel: jax.Array) -> jax.Array:
    """sum_k kernel[k] as a [K] x [K, A*D] product (an XLA CPU reduction over the leading axis of
    this 197M-entry array took seconds; the matrix-vector product takes milliseconds)."""
    k = kernel.shape[0]
    return jnp.dot(jnp.ones((k,), kernel.dtype), kernel.reshape(k, -1)).reshape(kernel.shape[1:])


_IM2COL_MAX_ELEMENTS = 2 ** 27  # 512 MB of float32 patches (B=1 reference: 62M)


def _weight_grad(x: jax.Array, g: jax.Array, kernel_size: int, stride: int) -> jax.Array:
    """dW[k,a,d] = sum_{b,t} x[b, stride*t + k, a] g[b,t,d] -> [K,A,D].

    Small batches: gather the input patches and do one [K*A, B*T] x [B*T, D] matmul, which writes
    the kernel's own layout (measured 2.6 vs 3.3 CPU-s for the reference at B=1: XLA's CPU
    convolution writes [A,K,D] and transposes 1 GB). Large batches (patch memory grows with B):
    the convolution form.
    """
    b, t, d = g.shape
    a = x.shape[2]
    if b * t * kernel_size * a <= _IM2COL_MAX_ELEMENTS:
        idx = stride * np.arange(t)[:, None] + np.arange(kernel_size)[None, :]  # [T, K]
        patches = x[:, idx].reshape(b * t, kernel_size * a)
        return jnp.dot(patches.T, g.reshape(b * t, d)).reshape(kernel_size, a, d)
    return jax.lax.conv_general_dilated(x, g, (1,), "VALID", rhs_dilation=(stride,),
                                        dimension_numbers=("CWN", "IWO", "WNC"))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv_plus_constant(x: jax.Array, const: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """conv(x + const) for a time-constant const [B,1,A], computed as conv(x) + const @ sum_k W_k.

    The custom gradient keeps the backward pass to one weight-gradient convolution over (x + const):
    autodiff of the forward formula would add a second 1 GB gradient for the tap sum. The input
    gradient is exact too; jit's dead-code elimination drops it when x (audio data) needs none.
    """
    return _conv(x, kernel, stride) + const @ _tap_sum(kernel)


def _cpc_fwd(x, const, kernel, stride):
    w_sum = _tap_sum(kernel)
    return _conv(x, kernel, stride) + const @ w_sum, (x, const, kernel, w_sum)


def _cpc_bwd(stride, res, g):
    x, const, kernel, w_sum = res
    _, conv_vjp = jax.vjp(lambda xx: _conv(xx, kernel, stride), x)
    (dx,) = conv_vjp(g)  # exact; removed by dead-code elimination when nothing consumes it
    dkernel = _weight_grad(x + const, g, kernel.shape[0], stride)
    dconst = jnp.sum(g, axis=1, keepdims=True) @ w_sum.T  # [B,1,A]
    return dx, dconst, dkernel


conv_plus_constant.defvjp(_cpc_fwd, _cpc_bwd)


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
    """audio [B,Ta,A] at input_fps -> conditioning tokens [B,T,D] (T motion frames at fps)."""

    def __init__(self, audio_dim: int, dim: int, *, style_kernel: int, style_dilation: int, down_kernel: int,
                 down_stride: int, audio_fps: float, fps: float, dropout: float, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32, input_fps: float | None = None):
        self.style_kernel, self.style_dilation = style_kernel, style_dilation
        self.down_kernel, self.down_stride = down_kernel, down_stride
        self.audio_fps, self.fps = float(audio_fps), float(fps)
        self.input_fps = None if input_fps is None else float(input_fps)
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

    def tokens_for(self, audio_frames: int) -> int:
        """Tokens (motion frames) of an input of `audio_frames` frames when no count is given:
        audio_frames at the motion rate, else the T with N(T) at input_fps == audio_frames."""
        if self.input_fps is None or self.input_fps == self.fps:
            return int(audio_frames)
        return motion_frames_covered(audio_frames, self.fps, self.input_fps)

    def input_frames(self, tokens: int) -> int:
        """Frames the down-sampler reads for `tokens` output tokens: (T-1)*stride + kernel (999 for T=400)."""
        return (tokens - 1) * self.down_stride + self.down_kernel

    def _style_conv(self, x: jax.Array) -> jax.Array:
        """The dilated style convolution as one matmul over gathered taps: [B,N,A] -> [B,L,A], L = N-field+1.

        It has few outputs by design (1 for the reference), so the gathered input is small, and
        XLA's CPU kernel for a dilated convolution's weight gradient was ~2x slower than this
        einsum (measured, CPU time).
        """
        field = (self.style_kernel - 1) * self.style_dilation + 1
        n_out = x.shape[1] - field + 1
        idx = np.arange(n_out)[:, None] + self.style_dilation * np.arange(self.style_kernel)[None, :]  # [L, K]
        kernel = self.style_conv.kernel[...].astype(x.dtype)  # [K, A, A]
        k, a, o = kernel.shape
        b = x.shape[0]
        # One [B*L, K*A] x [K*A, O] matmul: its weight gradient comes out in the kernel's own layout
        # (an einsum over (k, c) produced a transposed copy of the 295M-entry gradient).
        patches = x[:, idx].reshape(b * n_out, k * a)
        y = jnp.dot(patches, kernel.reshape(k * a, o)).reshape(b, n_out, o)
        return y + self.style_conv.bias[...].astype(x.dtype)

    def style_token(self, x: jax.Array) -> jax.Array:
        """Global style token of frames x [B,N,A] -> [B,1,A]."""
        field = (self.style_kernel - 1) * self.style_dilation + 1
        if x.shape[1] < field:
            x = fit_length(x, field)
        s = self.style_norm(self._style_conv(x))  # [B, N-field+1, A]
        return jnp.mean(s, axis=1, keepdims=True)

    def input_rate(self, audio_frames: int, frames: int) -> float:
        """The rate of an input of `audio_frames` frames for `frames` tokens: input_fps, checked;
        when unknown (None), the motion rate if audio_frames == frames, else audio_fps if
        audio_frames == N(frames). Raises ValueError naming both counts otherwise."""
        rates = [self.input_fps] if self.input_fps is not None else [self.fps, self.audio_fps]
        for r in rates:
            if resampled_frame_count(frames, self.fps, r) == audio_frames:
                return r
        want = " or ".join(f"{resampled_frame_count(frames, self.fps, r)} (at {r:g} frames/s)" for r in rates)
        raise ValueError(f"audio of {audio_frames} frames for {frames} motion frames at {self.fps:g} fps: expected "
                         f"{want}; is the audio at the rate the model was built for (manifest audio.rate)?")

    def __call__(self, audio: jax.Array, *, deterministic: bool, frames: int | None = None) -> jax.Array:
        """audio [B,Ta,A] -> tokens [B,T,D], T = `frames` (None: Ta, audio at the motion rate; or the
        T whose audio frames at input_fps are Ta)."""
        b, n_in, _ = audio.shape
        t = self.tokens_for(n_in) if frames is None else int(frames)
        rate = self.input_rate(n_in, t)
        x = audio.astype(self.dtype) if self.dtype is not None else audio
        if rate != self.audio_fps:  # only data at another rate is resampled (mel at the motion rate)
            x = linear_resample(x, resampled_frame_count(t, self.fps, self.audio_fps), rate, self.audio_fps)
        x = fit_length(x, self.input_frames(t))  # [B, N_in, A]
        style = self.style_token(x)  # [B, 1, A]
        # down(x + style) == down(x) + style @ sum_k W_k  (no padding inside the conv): see module docstring.
        kernel = self.down_conv.kernel[...].astype(x.dtype)  # [K, A, D]
        tokens = conv_plus_constant(x, style.astype(x.dtype), kernel, self.down_stride)
        tokens = tokens + self.down_conv.bias[...].astype(x.dtype)  # [B, T, D]
        tokens = jax.nn.leaky_relu(self.down_norm(tokens), negative_slope=0.2)
        return self.dropout(tokens, deterministic=deterministic)
