"""Models: the Persona-Gestor denoiser (fuzzy feature extractor + AdaLN blocks) and the diffusion process."""
from gesture_jax.models.denoiser import Denoiser, build_denoiser
from gesture_jax.models import diffusion

__all__ = ["Denoiser", "build_denoiser", "diffusion"]
