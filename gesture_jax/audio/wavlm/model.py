"""WavLM encoder as a Flax NNX module, numerically equal to transformers' `WavLMModel`.

transformers 5 ships no Flax models, so this is a port of
`transformers/models/wavlm/modeling_wavlm.py` (v5.23), inference only (no dropout,
masking, layer drop or adapter). Module and parameter names follow transformers so the
weight conversion (`convert.py`) reads as a table; kernels are stored in JAX layout
(Linear [in, out], Conv [kernel, in, out]).

Layout everywhere: channels last, [batch, time, channels].

Hidden states follow transformers 5.23 exactly: `hidden_states[0]` is the input of the
first transformer layer and `hidden_states[i]` the output of layer i (i = 1..N). For the
layer-norm-first (Large) variant the encoder's final LayerNorm is applied only to
`last_hidden_state`, not to `hidden_states[N]` (transformers 5 stopped tying them).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gesture_jax.audio.wavlm.config import WavLMConfig

Array = jax.Array


def activation(name: str):
    """The activation functions transformers' ACT2FN maps these names to."""
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)  # torch's exact erf GELU
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    if name in ("silu", "swish"):
        return jax.nn.silu
    raise ValueError(f"unsupported activation {name!r}")


def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
    """LayerNorm over the last axis with the two-pass variance torch uses (no E[x^2]-E[x]^2)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = jnp.mean(xc * xc, axis=-1, keepdims=True)
    return xc * jax.lax.rsqrt(var + eps) * scale + bias


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        return layer_norm(x, self.scale[...], self.bias[...], self.eps)


class Linear(nnx.Module):
    """y = x @ kernel + bias, kernel [in, out] (transformers' weight transposed)."""

    def __init__(self, din: int, dout: int, rngs: nnx.Rngs, use_bias: bool = True):
        bound = 1.0 / math.sqrt(din)
        self.kernel = nnx.Param(jax.random.uniform(rngs.params(), (din, dout), jnp.float32, -bound, bound))
        self.bias = nnx.Param(jnp.zeros((dout,), jnp.float32)) if use_bias else None

    def __call__(self, x: Array) -> Array:
        y = x @ self.kernel[...]
        return y + self.bias[...] if self.bias is not None else y


class FeatureConvLayer(nnx.Module):
    """Conv1d (no padding) -> optional norm -> activation, one stage of the feature encoder.

    norm: "none", "group" (GroupNorm with one group per channel: each channel normalized
    over time, the Base+ first layer) or "layer" (LayerNorm over channels per frame).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, *, bias: bool, norm: str,
                 act: str, rngs: nnx.Rngs):
        std = math.sqrt(2.0 / (cin * kernel))  # kaiming normal, as transformers initializes
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (kernel, cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if bias else None
        self.norm = norm
        if norm in ("group", "layer"):
            self.layer_norm = LayerNorm(cout, 1e-5)  # scale/bias named like transformers' layer_norm
        else:
            self.layer_norm = None
        self.ksize, self.stride, self.act = kernel, stride, act

    def conv(self, x: Array) -> Array:
        """[B, T, Cin] -> [B, T', Cout], T' = (T - kernel) // stride + 1, without norm or activation.

        XLA's CPU convolution beat an explicit im2col + matmul by 1.2-1.8x on these shapes
        (and PyTorch's Conv1d on the largest one).
        """
        y = jax.lax.conv_general_dilated(x, self.kernel[...], window_strides=(self.stride,), padding="VALID",
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        return y + self.bias[...] if self.bias is not None else y

    def __call__(self, x: Array, group_stats: tuple[Array, Array] | None = None) -> Array:
        y = self.conv(x)
        if self.norm == "group":
            # GroupNorm(num_groups=C): per (batch, channel) statistics over time. Long files
            # are encoded in chunks; passing the whole file's (mean, var) [B, C] keeps every
            # chunk identical to encoding the file at once.
            if group_stats is None:
                mean = jnp.mean(y, axis=1, keepdims=True)
                yc = y - mean
                var = jnp.mean(yc * yc, axis=1, keepdims=True)
            else:
                mean, var = group_stats[0][:, None, :], group_stats[1][:, None, :]
                yc = y - mean
            y = yc * jax.lax.rsqrt(var + 1e-5) * self.layer_norm.scale[...] + self.layer_norm.bias[...]
        elif self.norm == "layer":
            y = self.layer_norm(y)
        return activation(self.act)(y)


class FeatureEncoder(nnx.Module):
    """The strided conv stack: waveform [B, S] -> frames [B, T, conv_dim[-1]] at 50 Hz."""

    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs):
        layers = []
        cin = 1
        for i, (d, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            if cfg.feat_extract_norm == "group":
                norm = "group" if i == 0 else "none"
            else:
                norm = "layer"
            layers.append(FeatureConvLayer(cin, d, k, s, bias=cfg.conv_bias, norm=norm,
                                           act=cfg.feat_extract_activation, rngs=rngs))
            cin = d
        self.conv_layers = nnx.List(layers)

    def __call__(self, wave: Array, group_stats: tuple[Array, Array] | None = None) -> Array:
        x = wave[:, :, None]
        for i, layer in enumerate(self.conv_layers):
            x = layer(x, group_stats if i == 0 else None)
        return x


class FeatureProjection(nnx.Module):
    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs):
        self.layer_norm = LayerNorm(cfg.conv_dim[-1], cfg.layer_norm_eps)
        self.projection = Linear(cfg.conv_dim[-1], cfg.hidden_size, rngs)

    def __call__(self, x: Array) -> tuple[Array, Array]:
        normed = self.layer_norm(x)
        return self.projection(normed), normed


class PositionalConvEmbedding(nnx.Module):
    """Weight-normed grouped Conv1d, 'same' padding (one frame dropped for even kernels), GELU.

    Weight norm over torch's dim=2 (the kernel axis): weight[k] = g[k] * v[k] / ||v[k]||,
    the norm taken over all (in, out) entries of tap k.
    """

    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs):
        c, k, g = cfg.hidden_size, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
        v = math.sqrt(1.0 / (k * c)) * jax.random.normal(rngs.params(), (k, c // g, c), jnp.float32)
        self.weight_v = nnx.Param(v)                                   # [K, C/G, C]
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(v * v, axis=(1, 2))))  # [K]
        self.bias = nnx.Param(jnp.zeros((c,), jnp.float32))
        self.ksize, self.groups, self.act = k, g, cfg.feat_extract_activation

    def weight(self) -> Array:
        v = self.weight_v[...]
        norm = jnp.sqrt(jnp.sum(v * v, axis=(1, 2), keepdims=True))
        return v * (self.weight_g[...][:, None, None] / norm)

    def __call__(self, x: Array) -> Array:
        pad = self.ksize // 2
        y = jax.lax.conv_general_dilated(
            x, self.weight(), window_strides=(1,), padding=[(pad, pad)],
            dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups)
        y = y + self.bias[...]
        if self.ksize % 2 == 0:
            y = y[:, :-1]
        return activation(self.act)(y)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every relative offset (key - query) in [-(length-1), length-1] -> int32 [2*length-1].

    Computed in numpy float32 exactly as transformers' `_relative_positions_bucket` does in
    torch float32 (tested to agree), once per sequence length at trace time: buckets are
    shape-static, and a 1-D table keeps the jitted program small.
    """
    rel = np.arange(-(length - 1), length, dtype=np.int64)
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    is_small = rel < max_exact
    with np.errstate(divide="ignore"):
        large = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact))
    large = large * np.float32(half - max_exact)
    large = np.where(is_small, 0, (np.float32(max_exact) + large)).astype(np.int64)
    large = np.minimum(large, half - 1)
    buckets += np.where(is_small, rel, large)
    return buckets.astype(np.int32)


class Attention(nnx.Module):
    """Multi-head self-attention with WavLM's gated relative position bias."""

    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs, has_relative_position_bias: bool):
        c, h = cfg.hidden_size, cfg.num_attention_heads
        self.num_heads, self.head_dim = h, c // h
        self.k_proj = Linear(c, c, rngs)
        self.v_proj = Linear(c, c, rngs)
        self.q_proj = Linear(c, c, rngs)
        self.out_proj = Linear(c, c, rngs)
        self.gru_rel_pos_const = nnx.Param(jnp.ones((h,), jnp.float32))  # torch [1, H, 1, 1]
        self.gru_rel_pos_linear = Linear(self.head_dim, 8, rngs)
        if has_relative_position_bias:
            self.rel_attn_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.num_buckets, h)))
        else:
            self.rel_attn_embed = None
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_bucket_distance

    def compute_bias(self, length: int) -> Array:
        """Ungated position bias [H, T, T] from this layer's bucket embedding (layer 0 only)."""
        table = jnp.asarray(relative_position_buckets(length, self.num_buckets, self.max_distance))
        per_offset = jnp.take(self.rel_attn_embed[...], table, axis=0)  # [2T-1, H]
        idx = jnp.arange(length)[None, :] - jnp.arange(length)[:, None] + (length - 1)  # key - query
        return jnp.transpose(per_offset[idx], (2, 0, 1))

    def __call__(self, x: Array, position_bias: Array | None, key_mask: Array | None = None) -> tuple[Array, Array]:
        """x [B, T, C]; key_mask [B, T] bool (False = padding, never attended to) or None."""
        b, t, c = x.shape
        h, d = self.num_heads, self.head_dim
        if position_bias is None:
            position_bias = self.compute_bias(t)
        # Gate per (batch, head, query) from the layer input split into heads.
        heads = x.reshape(b, t, h, d).transpose(0, 2, 1, 3)                   # [B, H, T, d]
        proj = self.gru_rel_pos_linear(heads).reshape(b, h, t, 2, 4).sum(-1)  # [B, H, T, 2]
        gates = jax.nn.sigmoid(proj)
        gate_a, gate_b = gates[..., 0], gates[..., 1]
        gate = gate_a * (gate_b * self.gru_rel_pos_const[...][None, :, None] - 1.0) + 2.0  # [B, H, T]

        q = self.q_proj(x).reshape(b, t, h, d) * (d ** -0.5)
        k = self.k_proj(x).reshape(b, t, h, d)
        v = self.v_proj(x).reshape(b, t, h, d)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) + gate[..., None] * position_bias[None]
        if key_mask is not None:
            scores = jnp.where(key_mask[:, None, None, :], scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, c)
        return self.out_proj(out), position_bias


class FeedForward(nnx.Module):
    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs):
        self.intermediate_dense = Linear(cfg.hidden_size, cfg.intermediate_size, rngs)
        self.output_dense = Linear(cfg.intermediate_size, cfg.hidden_size, rngs)
        self.act = cfg.hidden_act

    def __call__(self, x: Array) -> Array:
        return self.output_dense(activation(self.act)(self.intermediate_dense(x)))


class EncoderLayer(nnx.Module):
    """One transformer layer; `stable` selects layer-norm-first (Large) over post-norm (Base+)."""

    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs, has_relative_position_bias: bool):
        self.attention = Attention(cfg, rngs, has_relative_position_bias)
        self.layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg, rngs)
        self.final_layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: Array, position_bias: Array | None, key_mask: Array | None = None) -> tuple[Array, Array]:
        if self.stable:
            a, position_bias = self.attention(self.layer_norm(x), position_bias, key_mask)
            x = x + a
            x = x + self.feed_forward(self.final_layer_norm(x))
        else:
            a, position_bias = self.attention(x, position_bias, key_mask)
            x = self.layer_norm(x + a)
            x = self.final_layer_norm(x + self.feed_forward(x))
        return x, position_bias


class Encoder(nnx.Module):
    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs):
        self.pos_conv_embed = PositionalConvEmbedding(cfg, rngs)
        self.layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.layers = nnx.List([EncoderLayer(cfg, rngs, has_relative_position_bias=(i == 0))
                                for i in range(cfg.num_hidden_layers)])
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: Array, num_layers: int, mask: Array | None = None) -> tuple[Array, list[Array]]:
        """Run the first `num_layers` layers; returns (last hidden state, hidden states 0..num_layers).

        mask [B, T] bool marks valid frames of right-padded inputs: padded frames are
        zeroed before the positional conv (so valid frames see the zero padding an
        unpadded input gets) and never attended to, as transformers does with an
        attention_mask; valid frames then equal those of the unpadded input.
        """
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0.0)
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        hidden = [x]
        position_bias = None
        for layer in self.layers[:num_layers]:
            x, position_bias = layer(x, position_bias, mask)
            hidden.append(x)
        last = self.layer_norm(x) if self.stable and num_layers == len(self.layers) else x
        return last, hidden


class WavLMOutput(NamedTuple):
    last_hidden_state: Array          # [B, T, hidden]
    extract_features: Array           # [B, T, conv_dim[-1]] (LayerNormed conv features)
    hidden_states: tuple[Array, ...] | None  # num_layers+1 x [B, T, hidden]


class WavLM(nnx.Module):
    """WavLM encoder: waveform [B, S] at 16 kHz -> hidden states [B, T, hidden] at 50 Hz."""

    def __init__(self, cfg: WavLMConfig, rngs: nnx.Rngs):
        self.config = cfg
        self.feature_extractor = FeatureEncoder(cfg, rngs)
        self.feature_projection = FeatureProjection(cfg, rngs)
        self.encoder = Encoder(cfg, rngs)

    def __call__(self, wave: Array, *, output_hidden_states: bool = False, num_layers: int | None = None,
                 group_stats: tuple[Array, Array] | None = None, num_valid_frames: Array | None = None) -> WavLMOutput:
        """Encode a batch of waveforms.

        Args:
            wave: [B, S] float32 at 16 kHz (already normalized if the checkpoint expects it).
            output_hidden_states: also return every hidden state (transformers' indexing).
            num_layers: stop after this many transformer layers (feature extraction of layer
                L needs only L layers: half of Large for the reference layer 12). With fewer
                than all layers, `last_hidden_state` is `hidden_states[num_layers]`.
            group_stats: whole-file (mean, var) [B, conv_dim[0]] for the first conv's
                GroupNorm (group mode only), so chunks of a long file match the whole file.
            num_valid_frames: [B] int, for right-padded waveforms: encoder frames computed from
                real samples. Frames beyond are masked (see `Encoder`), so one compiled shape
                serves clips of many lengths. In group mode pass `group_stats` too (the
                GroupNorm would otherwise average over the padding).
        """
        n = self.config.num_hidden_layers if num_layers is None else int(num_layers)
        if not 0 <= n <= self.config.num_hidden_layers:
            raise ValueError(f"num_layers must be in [0, {self.config.num_hidden_layers}], got {n}")
        if wave.shape[-1] < self.config.receptive_field:
            raise ValueError(f"waveform of {wave.shape[-1]} samples is shorter than one encoder frame "
                             f"({self.config.receptive_field} samples)")
        feats = self.feature_extractor(wave, group_stats)
        hidden, normed = self.feature_projection(feats)
        mask = None
        if num_valid_frames is not None:
            mask = jnp.arange(hidden.shape[1])[None, :] < jnp.asarray(num_valid_frames)[:, None]
        last, states = self.encoder(hidden, n, mask)
        return WavLMOutput(last, normed, tuple(states) if output_hidden_states else None)


@functools.partial(jax.jit, static_argnames=("graphdef", "output_hidden_states", "num_layers"))
def _apply(graphdef, state, wave, group_stats=None, *, output_hidden_states=False, num_layers=None):
    return nnx.merge(graphdef, state)(wave, output_hidden_states=output_hidden_states, num_layers=num_layers,
                                      group_stats=group_stats)


def jitted_forward(model: WavLM, *, output_hidden_states: bool = False, num_layers: int | None = None):
    """`(wave [B, S], group_stats=None) -> WavLMOutput`, jitted with the weights as arguments.

    Closing over the module instead would bake ~100M weights into the program as
    constants (slow XLA constant folding, a copy per compiled shape). The graph
    definition is a static argument, so models of one architecture share compilations.
    """
    graphdef, state = nnx.split(model)

    def run(wave, group_stats=None):
        return _apply(graphdef, state, jnp.asarray(wave, jnp.float32), group_stats,
                      output_hidden_states=output_hidden_states, num_layers=num_layers)

    return run


@functools.partial(jax.jit, static_argnames=("graphdef", "layer"))
def _hidden_state(graphdef, state, wave, group_stats, num_valid_frames, *, layer):
    out = nnx.merge(graphdef, state)(wave, output_hidden_states=True, num_layers=layer, group_stats=group_stats,
                                     num_valid_frames=num_valid_frames)
    return out.hidden_states[layer]


def jitted_hidden_state(model: WavLM, layer: int):
    """`(wave [B, S], group_stats=None, num_valid_frames=None) -> hidden_states[layer] [B, T, hidden]`,
    running only `layer` transformer layers; jitted like `jitted_forward`."""
    graphdef, state = nnx.split(model)

    def run(wave, group_stats=None, num_valid_frames=None):
        return _hidden_state(graphdef, state, jnp.asarray(wave, jnp.float32), group_stats, num_valid_frames,
                             layer=int(layer))

    return run
