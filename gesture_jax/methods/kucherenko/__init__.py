"""Kucherenko et al. 2019 (Aud2Repr2Pose): a denoising motion autoencoder, then a speech network
(MFCC contexts -> the autoencoder's code). Read top to bottom: model.py (the networks),
losses.py (normalization and objectives), method.py (stages, batches, generation).
Spec: /work/shared/methods/kucherenko.md; configs/kucherenko_*.py."""
