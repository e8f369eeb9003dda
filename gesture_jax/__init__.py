"""gesture_jax: speech-driven 3D full-body gesture generation in JAX/Flax.

Data flows through the subpackages in this order:
  motion/ (BVH <-> features) and audio/ (speech -> features) -> data/ (ArrayRecord + Grain)
  -> models/ (denoiser, diffusion) -> parallel/ + training/ -> sampling/ -> viz/, eval/
"""
__version__ = "0.1.0"
