"""Kucherenko et al. 2019 (Aud2Repr2Pose): a denoising motion autoencoder, then a speech network
(MFCC contexts -> the autoencoder's code). Read top to bottom: model.py (the networks),
losses.py (normalization and objectives), method.py (stages, batches, generation), then the import
of the authors' checkpoints: reference.py (their tensors onto our model) and convert.py (the
workdir and its command line; the files are read by gesture_jax.foreign).
Spec: ../shared/methods/kucherenko.md; configs/kucherenko_*.py."""
