"""The Persona-Gestor denoiser: noisy motion + diffusion step + audio -> eps (or x0 / v).

    cond  = FuzzyFeatureExtractor(audio)              [B,T,D]   (once per sample; `condition`)
    c     = TimestepEmbedding(t)[:, None] + cond      [B,T,D]   (per-token AdaLN condition)
    x     = Conv1d(F->D, k=3, replicate pad)(x_t)     [B,T,D]
    x     = blocks(x, c)                               12 x ReferenceBlock (or DiTBlock)
    out   = FinalLayer(x, c)                          [B,T,F]

Classifier-free guidance: `cond_drop` [B] bool replaces an example's audio tokens with a learned
null embedding (`null_cond`, one D-vector broadcast over time). The reference has no such
parameter; `model.null_cond=False` leaves it out for an exact reference parameter set.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from gesture_jax.models.attention import MASK_KINDS, attention_mask
from gesture_jax.models.blocks import DiTBlock, FinalLayer, ReferenceBlock
from gesture_jax.models.embeddings import TimestepEmbedding, sinusoidal_positions
from gesture_jax.models.fuzzy import FuzzyFeatureExtractor, resampled_frame_count
from gesture_jax.models.initializers import kaiming_normal_init, torch_bias_init

BLOCK_KINDS = ("reference", "dit")


class MotionIn(nnx.Module):
    """Conv1d(F->D, kernel k, replicate padding): [B,T,F] -> [B,T,D] (reference motion encoder)."""

    def __init__(self, motion_dim: int, dim: int, kernel: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        if kernel % 2 == 0:
            raise ValueError(f"model.motion_in_kernel must be odd, got {kernel}")
        self.kernel_size = kernel
        self.conv = nnx.Conv(motion_dim, dim, kernel_size=(kernel,), padding="VALID", kernel_init=kaiming_normal_init,
                             bias_init=torch_bias_init(motion_dim * kernel), dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        p = (self.kernel_size - 1) // 2
        return self.conv(jnp.pad(x, ((0, 0), (p, p), (0, 0)), mode="edge"))


class Denoiser(nnx.Module):
    """See module docstring. Build with `build_denoiser(cfg.model, motion_dim, audio_dim, seq_len, rngs)`."""

    def __init__(self, *, motion_dim: int, audio_dim: int, seq_len: int, fps: float, dim: int, depth: int, heads: int,
                 mlp_ratio: float, dropout: float, block: str, attn_mask: str, max_len: int, time_embed_dim: int,
                 conv_kernel: int, motion_in_kernel: int, fuzzy: dict, null_cond: bool, rngs: nnx.Rngs,
                 step_table_rows: int = 0, dtype=None,
                 param_dtype=jnp.float32):
        if block not in BLOCK_KINDS:
            raise ValueError(f"model.block must be one of {BLOCK_KINDS}, got {block!r}")
        if attn_mask not in MASK_KINDS:
            raise ValueError(f"model.attn_mask must be one of {MASK_KINDS}, got {attn_mask!r}")
        if seq_len > max_len:
            raise ValueError(f"seq_len {seq_len} exceeds model.max_len={max_len}")
        self.motion_dim, self.audio_dim, self.seq_len, self.dim = motion_dim, audio_dim, seq_len, dim
        self.block_kind, self.attn_mask = block, attn_mask
        self.dtype = dtype
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fuzzy = FuzzyFeatureExtractor(audio_dim, dim, fps=fps, dropout=dropout, **fuzzy, **kw)
        self.time_embed = TimestepEmbedding(time_embed_dim, dim, table_rows=step_table_rows, **kw)
        self.motion_in = MotionIn(motion_dim, dim, motion_in_kernel, **kw)
        if block == "reference":
            self.blocks = nnx.List([ReferenceBlock(dim, heads, mlp_ratio, max_len, conv_kernel, dropout, **kw)
                                    for _ in range(depth)])
        else:
            self.blocks = nnx.List([DiTBlock(dim, heads, mlp_ratio, dropout, **kw) for _ in range(depth)])
        self.final = FinalLayer(dim, motion_dim, zero_init=(block == "dit"), **kw)
        self.null_cond = (nnx.Param(0.02 * jax.random.normal(rngs.params(), (dim,), param_dtype))
                          if null_cond else None)

    # -- conditioning ------------------------------------------------------------------------------
    def condition(self, audio: jax.Array, *, deterministic: bool, cond_drop: jax.Array | None = None,
                  frames: int | None = None) -> jax.Array:
        """audio [B,Ta,A] -> cond [B,T,D] for T = `frames` motion frames; cond_drop [B] bool swaps in
        the null embedding (CFG). Ta: the audio frames of those T frames at the data's audio rate
        (T at the motion rate; 999 for T=400 at 50 Hz). frames=None: the model window (seq_len)
        when Ta is its audio frame count, else the T that Ta frames at the known rate cover."""
        if audio.ndim != 3 or audio.shape[-1] != self.audio_dim:
            raise ValueError(f"audio must be [B,Ta,{self.audio_dim}], got {audio.shape}")
        if frames is None:
            fz, n_in = self.fuzzy, audio.shape[1]
            at_window = [fz.input_fps] if fz.input_fps is not None else [fz.fps, fz.audio_fps]
            frames = (self.seq_len if any(resampled_frame_count(self.seq_len, fz.fps, r) == n_in for r in at_window)
                      else fz.tokens_for(n_in))
        cond = self.fuzzy(audio, deterministic=deterministic, frames=frames)
        if cond_drop is not None:
            null = self.null_condition(cond.shape[0], cond.shape[1]).astype(cond.dtype)
            cond = jnp.where(cond_drop[:, None, None], null, cond)
        return cond

    def null_condition(self, batch: int, frames: int) -> jax.Array:
        """The learned 'no audio' conditioning [B,T,D] (unconditional branch of classifier-free guidance)."""
        if self.null_cond is None:
            raise ValueError("this model was built with model.null_cond=False: no null embedding for "
                             "classifier-free guidance / conditioning dropout")
        return jnp.broadcast_to(self.null_cond[...], (batch, frames, self.dim))

    # -- denoising ---------------------------------------------------------------------------------
    def denoise(self, x_t: jax.Array, t: jax.Array, cond: jax.Array, *, deterministic: bool) -> jax.Array:
        """x_t [B,T,F], t [B] int, cond [B,T,D] -> [B,T,F] (eps / x0 / v, per diffusion.prediction)."""
        if x_t.ndim != 3 or x_t.shape[-1] != self.motion_dim:
            raise ValueError(f"x_t must be [B,T,{self.motion_dim}], got {x_t.shape}")
        if cond.shape[:2] != x_t.shape[:2]:
            raise ValueError(f"cond {cond.shape} does not match x_t {x_t.shape} in batch/time")
        frames = x_t.shape[1]
        if self.dtype is not None:
            x_t, cond = x_t.astype(self.dtype), cond.astype(self.dtype)
        c = self.time_embed(t)[:, None, :].astype(cond.dtype) + cond  # [B,T,D]
        x = self.motion_in(x_t)
        if self.block_kind == "dit":  # plain attention needs absolute positions
            x = x + jnp.asarray(sinusoidal_positions(frames, self.dim), x.dtype)
        mask = attention_mask(self.attn_mask, frames)
        for blk in self.blocks:
            x = blk(x, c, mask, deterministic=deterministic)
        return self.final(x, c).astype(jnp.float32)

    def __call__(self, x_t: jax.Array, t: jax.Array, audio: jax.Array, *, deterministic: bool,
                 cond_drop: jax.Array | None = None) -> jax.Array:
        cond = self.condition(audio, deterministic=deterministic, cond_drop=cond_drop, frames=x_t.shape[1])
        return self.denoise(x_t, t, cond, deterministic=deterministic)


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(name: str | None):
    if name is None:
        return None
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def build_denoiser(cfg: ml_collections.ConfigDict, motion_dim: int, audio_dim: int, seq_len: int, rngs: nnx.Rngs, *,
                   fps: float = 20.0, dtype: str | None = None, audio_rate: float | None = None) -> Denoiser:
    """Build the denoiser from `cfg.model` (see configs/base.py). fps: data frame rate (cfg.data.fps);
    dtype: compute dtype ("float32"/"bfloat16"), None = param dtype; audio_rate: frames/s of the
    audio features it is fed (DataDims.audio_fps, the manifest's audio.rate), None = found from the
    audio's length per call (the motion rate or model.fuzzy.audio_fps; models/fuzzy.py)."""
    f = cfg.fuzzy
    return Denoiser(
        motion_dim=motion_dim, audio_dim=audio_dim, seq_len=seq_len, fps=fps, dim=cfg.dim, depth=cfg.depth,
        heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout, block=cfg.block, attn_mask=cfg.attn_mask,
        max_len=cfg.max_len, time_embed_dim=cfg.time_embed_dim, conv_kernel=cfg.conv_kernel,
        motion_in_kernel=cfg.motion_in_kernel,
        fuzzy=dict(style_kernel=f.style_kernel, style_dilation=f.style_dilation, down_kernel=f.down_kernel,
                   down_stride=f.down_stride, audio_fps=f.audio_fps, input_fps=audio_rate),
        null_cond=cfg.get("null_cond", True), rngs=rngs, step_table_rows=int(cfg.get("step_table_rows", 0)),
        dtype=_dtype(dtype),
        param_dtype=_dtype(cfg.param_dtype))
