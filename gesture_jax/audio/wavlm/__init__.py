"""Flax NNX WavLM: architecture config, model, weight conversion and Orbax checkpoints."""
from gesture_jax.audio.wavlm.config import WavLMConfig, base_plus, large
from gesture_jax.audio.wavlm.model import WavLM, WavLMOutput

__all__ = ["WavLMConfig", "WavLM", "WavLMOutput", "base_plus", "large"]
