"""Persona-Gestor's denoiser called exactly as the reference calls its network, for parity checks
from outside (a PyTorch script holding the reference's code and weights can compare outputs):

    from gesture_jax.methods.persona_gestor.api import ReferenceNetwork
    net = ReferenceNetwork.from_workdir("runs/pg_beat")   # e.g. written by import_reference
    eps = net(noisy, step, wavlm)
        noisy  [B, T, F] float32  noisy standardized motion features x_t (T = 400 for 20 s)
        step   [B] int            diffusion step t in [0, diffusion.num_steps)
        wavlm  [B, Ta, A] float32 WavLM layer features (layer 12 of Base+, A = 768) at their own
                                  50 Hz, Ta = (T - 1) * stride + kernel (999 for T = 400): what the
                                  reference's down-sampler reads, unresampled
        eps    [B, T, F] float32  the network output (eps for the reference's prediction type)

As the reference at inference: dropout off (its modules in eval mode), BatchNorm on its running
statistics, the run's attention mask (the reference's own "causalMask" for imported runs), the
audio conditioning recomputed on every call (the reference caches it across the steps of one
sample; the numbers are the same). ``condition`` and ``denoise`` are exposed for callers that
cache it as the reference's sampler does.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from gesture_jax.errors import UserError
from gesture_jax.storage import Path


class ReferenceCallError(UserError, ValueError):
    """Inputs that the reference's network would not accept (shapes, step range)."""


class ReferenceNetwork:
    """A loaded Persona-Gestor denoiser with the reference's call signature (module docstring)."""

    def __init__(self, model: Any, num_steps: int):
        import jax
        from flax import nnx

        self.model, self.num_steps = model, int(num_steps)
        fz = model.fuzzy
        self.kernel, self.stride = int(fz.down_kernel), int(fz.down_stride)
        graphdef, state = nnx.split(model)

        @jax.jit
        def cond_fn(state, wavlm, frames_like):
            m = nnx.merge(graphdef, state)
            return m.condition(wavlm, frames=frames_like.shape[0], deterministic=True)

        @jax.jit
        def denoise_fn(state, noisy, step, cond):
            return nnx.merge(graphdef, state).denoise(noisy, step, cond, deterministic=True)

        self._state, self._cond_fn, self._denoise_fn = state, cond_fn, denoise_fn

    @classmethod
    def from_workdir(cls, workdir: str | Path, step: int | None = None) -> "ReferenceNetwork":
        from gesture_jax.training.inference import load_for_inference

        bundle = load_for_inference(workdir, step=step, use_ema=True)
        if not hasattr(bundle.model, "denoise"):
            raise ReferenceCallError(f"{workdir}: not a Persona-Gestor run (method {bundle.config.get('method')!r})")
        return cls(bundle.model, int(bundle.config.diffusion.num_steps))

    def audio_frames(self, frames: int) -> int:
        """Ta the down-sampler reads for T motion frames: (T - 1) * stride + kernel."""
        return (int(frames) - 1) * self.stride + self.kernel

    def condition(self, wavlm: np.ndarray, frames: int) -> np.ndarray:
        """[B, Ta, A] -> the per-token conditioning [B, T, D] (computed once per sample by the reference)."""
        import jax.numpy as jnp

        wavlm = np.asarray(wavlm, np.float32)
        a = int(self.model.audio_dim)
        if wavlm.ndim != 3 or wavlm.shape[-1] != a:
            raise ReferenceCallError(f"wavlm must be [B, Ta, {a}], got {wavlm.shape}")
        if wavlm.shape[1] != self.audio_frames(frames):
            raise ReferenceCallError(f"wavlm has {wavlm.shape[1]} frames; the down-sampler (kernel {self.kernel}, "
                                     f"stride {self.stride}) makes {frames} tokens from exactly "
                                     f"{self.audio_frames(frames)} (the reference would fail to add them)")
        return np.asarray(self._cond_fn(self._state, jnp.asarray(wavlm), jnp.zeros((int(frames),))))

    def denoise(self, noisy: np.ndarray, step: np.ndarray, cond: np.ndarray) -> np.ndarray:
        import jax.numpy as jnp

        noisy = np.asarray(noisy, np.float32)
        step = np.asarray(step)
        f = int(self.model.motion_dim)
        if noisy.ndim != 3 or noisy.shape[-1] != f:
            raise ReferenceCallError(f"noisy motion must be [B, T, {f}], got {noisy.shape}")
        if step.shape != (noisy.shape[0],) or not np.issubdtype(step.dtype, np.integer):
            raise ReferenceCallError(f"step must be [B={noisy.shape[0]}] integers, got {step.dtype} {step.shape}")
        if step.min() < 0 or step.max() >= self.num_steps:
            raise ReferenceCallError(f"step must lie in [0, {self.num_steps}), got {step.min()}..{step.max()}")
        return np.asarray(self._denoise_fn(self._state, jnp.asarray(noisy), jnp.asarray(step, jnp.int32),
                                           jnp.asarray(cond)))

    def __call__(self, noisy: np.ndarray, step: np.ndarray, wavlm: np.ndarray) -> np.ndarray:
        """(x_t [B,T,F], t [B], WavLM features [B,Ta,A] at 50 Hz) -> network output [B,T,F]."""
        noisy = np.asarray(noisy, np.float32)
        if noisy.ndim != 3:
            raise ReferenceCallError(f"noisy motion must be [B, T, F], got {noisy.shape}")
        wavlm = np.asarray(wavlm, np.float32)
        if wavlm.ndim == 3 and wavlm.shape[0] != noisy.shape[0]:
            raise ReferenceCallError(f"batch sizes differ: noisy {noisy.shape[0]}, wavlm {wavlm.shape[0]}")
        return self.denoise(noisy, step, self.condition(wavlm, noisy.shape[1]))
