"""What a user asks of generation, shared by every method: `SamplingOptions`, `GenerateError`.

Kept apart from generate.py so that a method's own sampler (methods/*/) can read the options
and raise the error without importing the command-line module.
"""
from __future__ import annotations

from dataclasses import dataclass

from gesture_jax.errors import UserError


class GenerateError(UserError, RuntimeError):
    """A generation request that cannot be served (message names the file or workdir)."""


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample; None fields fall back to the run's config (cfg.sample) or the method's defaults.

    The diffusion fields (sampler, steps, eta, guidance, overlap_s, snap_s, batch_windows) mean
    nothing to a regression method; such a method rejects them when set (methods/base.py).
    """
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    guidance: float | None = None
    seed: int = 0
    num_samples: int = 1
    overlap_s: float | None = None
    snap_s: float | None = None
    smooth_sigma: float | None = None
    batch_windows: int | None = None
    # Persona-Gestor: the reference's own procedure (DDPM over all steps, windows concatenated;
    # methods/persona_gestor/reference_sampling.py), to reproduce its outputs next to ours.
    reference_sampling: bool = False
