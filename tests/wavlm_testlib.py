"""Shared pieces of the WavLM / audio tests: small configs, random PyTorch models, speech.

Real speech comes from ../shared/data when present; otherwise a synthetic voiced tone
(harmonics with vibrato, amplitude bursts and noise) stands in, so the parity tests
still run on a fresh clone.
"""
from __future__ import annotations

import numpy as np

from conftest import SHARED_DATA
from gesture_jax.audio.wavlm import WavLMConfig
from gesture_jax.audio.wavlm.checkpoint import model_from_params
from gesture_jax.audio.wavlm.convert import _to_numpy, transformers_to_flax

SPEECH_FILES = ("beat/2_scott_0_55_55.wav", "zeggs/067_Speech_2_x_1_0.wav")


def tiny_config(**kw) -> WavLMConfig:
    """Real conv geometry (400-sample frames, 320 hop), tiny widths: fast yet shape-faithful."""
    base = dict(conv_dim=(32,) * 7, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    base.update(kw)
    return WavLMConfig(**base)


def synthetic_speech(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 25 * np.sin(2 * np.pi * 3.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.1 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def speech(seconds: float, offset_s: float = 5.0) -> np.ndarray:
    """`seconds` of real 16 kHz speech (concatenating the shared files if needed), else synthetic."""
    from gesture_jax.audio.io import load_audio

    paths = [SHARED_DATA / f for f in SPEECH_FILES if (SHARED_DATA / f).exists()]
    if not paths:
        return synthetic_speech(seconds)
    wave = np.concatenate([load_audio(p) for p in paths])
    start = int(offset_s * 16000)
    need = int(seconds * 16000)
    while wave.size < start + need:
        wave = np.concatenate([wave, wave])
    return np.ascontiguousarray(wave[start:start + need])


def random_hf_model(cfg: WavLMConfig, seed: int = 0):
    """transformers WavLMModel with random weights, eval mode.

    transformers initializes norms to (1, 0), biases of linears to 0 and gru_rel_pos_const
    to 1; those are perturbed so a swapped or transposed tensor cannot go unnoticed, and
    the relative-position embedding is scaled up so the position bias matters.
    """
    import torch
    from transformers import WavLMConfig as HFConfig
    from transformers import WavLMModel

    torch.manual_seed(seed)
    hf = WavLMModel(HFConfig(**cfg.to_transformers_dict())).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "rel_attn_embed" in name:
                p.normal_(0.0, 1.0)
            elif "gru_rel_pos_const" in name:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
            elif name.endswith("bias") or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return hf


def flax_from_hf(hf, cfg: WavLMConfig):
    return model_from_params(cfg, transformers_to_flax(_to_numpy(hf.state_dict()), cfg))


def max_hidden_diff(hf, flax_model, wave: np.ndarray) -> list[float]:
    """Per hidden state max |torch - flax| (plus last_hidden_state last) on one waveform."""
    import torch

    from gesture_jax.audio.wavlm.model import jitted_forward

    with torch.no_grad():
        ref = hf(torch.from_numpy(wave)[None], output_hidden_states=True)
    got = jitted_forward(flax_model, output_hidden_states=True)(wave[None])
    assert len(ref.hidden_states) == len(got.hidden_states) == flax_model.config.num_hidden_layers + 1
    diffs = [float(np.abs(r.numpy() - np.asarray(g)).max()) for r, g in zip(ref.hidden_states, got.hidden_states)]
    diffs.append(float(np.abs(ref.last_hidden_state.numpy() - np.asarray(got.last_hidden_state)).max()))
    return diffs


def random_flax_model(cfg: WavLMConfig, seed: int = 0, *, attention_reach: int | None = None):
    """A Flax WavLM with numpy-random weights (no torch, no per-shape JAX RNG compiles).

    attention_reach: if given, relative offsets beyond this many frames get a -1e4 position
    bias, so attention is local (a model whose context is finite, for chunking tests).
    """
    import jax
    from flax import nnx

    from gesture_jax.audio.wavlm.checkpoint import abstract_model
    from gesture_jax.audio.wavlm.model import relative_position_buckets

    rng = np.random.default_rng(seed)
    shapes = nnx.to_pure_dict(nnx.state(abstract_model(cfg)))

    def init(path, leaf):
        name = str(path[-1].key)
        shape = leaf.shape
        if name == "scale":
            return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if name == "bias":
            return (0.1 * rng.standard_normal(shape)).astype(np.float32)
        if name == "gru_rel_pos_const":
            return (1.0 + 0.3 * rng.random(shape)).astype(np.float32)
        if name == "weight_g":
            return np.full(shape, 1.0, np.float32)
        if name == "rel_attn_embed":
            return rng.standard_normal(shape).astype(np.float32)
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(init, shapes)
    if attention_reach is not None:
        table = relative_position_buckets(attention_reach + 1, cfg.num_buckets, cfg.max_bucket_distance)
        near = np.zeros(cfg.num_buckets, bool)
        near[table] = True
        emb = params["encoder"]["layers"][0]["attention"]["rel_attn_embed"]
        emb[~near] = -1e4
    return model_from_params(cfg, params)
