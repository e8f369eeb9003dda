"""Persona-Gestor (Zhang et al. 2024): WavLM features -> fuzzy feature extractor -> AdaLN
transformer denoiser, DDPM eps-prediction, T = 1000; the reference of this project.

Its modules live in gesture_jax/models/ (shared layers: attention, conformer, AdaLN blocks,
the denoiser), its loss in training/step.py (`diffusion_loss_fn`, shared with the other
diffusion methods), its long-audio sampler in sampling/windowed.py; method.py binds them.
"""
