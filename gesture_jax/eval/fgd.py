"""Fréchet Gesture Distance: the Fréchet distance between Gaussians fitted to two sets of clips.

Ported from the implementation used by Yoon et al. (2020, "Speech gesture generation from the
trimodal context", `EmbeddingSpaceEvaluator`) and the GENEA challenges, which itself is the
TTUR / pytorch-fid `calculate_frechet_distance` ("stable version by Dougal J. Sutherland"):

    d² = |mu1 - mu2|² + Tr(S1 + S2 - 2 sqrtm(S1 S2))

with `scipy.linalg.sqrtm`; only when the matrix square root is not finite is `eps` added to the
diagonals of both covariances and the root taken again; a small imaginary part from round-off is
dropped, a large one is an error. The same function serves both spaces we report:

- feature space (`fgd`): windows of joint positions encoded by the motion autoencoder
  (`gesture_jax.eval.fgd_ae`), one latent vector per window;
- raw space (`fgd_raw`): the same windows flattened, no network involved.

Windows follow the GENEA protocol: `n` frames, stride `n // 2`, taken from each file in turn.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
from scipy import linalg

from gesture_jax.errors import UserError


class FGDError(UserError, ValueError):
    """A Fréchet distance that cannot be computed (too few samples, complex square root)."""


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (float64).

    N >= 2 is required: one sample has no covariance, and silently returning NaN would make
    every later number meaningless.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise FGDError(f"features must be [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise FGDError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, imag_atol: float = 1e-3) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Yoon / GENEA / TTUR port).

    Args:
      mu1, mu2: means [D].  sigma1, sigma2: covariances [D, D].
      eps: offset added to both covariance diagonals when sqrtm(sigma1 sigma2) is not finite
        (reference: 1e-6).
      imag_atol: largest tolerated imaginary part on the diagonal of the square root
        (reference: 1e-3); larger means the product is far from PSD and is an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FGDError(f"mismatched shapes: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected (a still pose); handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=imag_atol):
            raise FGDError(f"matrix square root has imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(d)


def frechet_distance_svd(real: np.ndarray, generated: np.ndarray) -> float:
    """The same Fréchet distance from samples, exact and fast when D exceeds the sample counts.

    With centred samples A = (X1 - mu1)/sqrt(N1-1) [N1, D] and B likewise, S1 = AᵀA and
    S2 = BᵀB, and the non-zero eigenvalues of S1 S2 are the squared singular values of
    A Bᵀ [N1, N2]; hence Tr sqrtm(S1 S2) = nuclear norm of A Bᵀ. No D x D matrix is formed, so
    raw-space FGD on long flattened windows (34 frames x 75 joints x 3 = 7650 dims) takes
    milliseconds instead of minutes and a set against itself gives 0 to round-off (sqrtm of
    a rank-deficient product leaves ~1e-8 per null direction).
    """
    x1 = np.asarray(real, np.float64)
    x2 = np.asarray(generated, np.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise FGDError(f"feature sets must be [N, D] with equal D, got {x1.shape} and {x2.shape}")
    if min(x1.shape[0], x2.shape[0]) < 2:
        raise FGDError(f"need at least 2 samples per set, got {x1.shape[0]} and {x2.shape[0]}")
    mu1, mu2 = x1.mean(0), x2.mean(0)
    a = (x1 - mu1) / np.sqrt(x1.shape[0] - 1)
    b = (x2 - mu2) / np.sqrt(x2.shape[0] - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a * a) + np.sum(b * b) - 2.0 * nuclear)


FGD_METHODS = ("sqrtm", "svd", "auto")


def fgd_from_features(real: np.ndarray, generated: np.ndarray, eps: float = 1e-6,
                      method: str = "sqrtm", auto_max_dim: int = 1024) -> float:
    """FGD between two feature sets [N1, D] and [N2, D] (real first, as in the reference).

    method: "sqrtm" = the reference computation (scipy sqrtm of S1 S2, eps retry);
      "svd" = `frechet_distance_svd` (same quantity, no D x D square root);
      "auto" = "sqrtm" when the covariances can be full rank (D < min(N1, N2) - 1) and
        D <= auto_max_dim, else "svd": sqrtm of a singular product is inaccurate (a set against
        itself then measures ~1e-2, not 0, on 18 windows of 510 dims).
    """
    if method not in FGD_METHODS:
        raise ValueError(f"unknown FGD method {method!r}; expected one of {FGD_METHODS}")
    real, generated = np.asarray(real), np.asarray(generated)
    dim = real.shape[-1]
    full_rank = dim < min(real.shape[0], generated.shape[0]) - 1
    if method == "svd" or (method == "auto" and (dim > auto_max_dim or not full_rank)):
        return frechet_distance_svd(real, generated)
    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(generated)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """Start frames of the full windows of `window` frames every `stride` frames (no padding)."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    if num_frames < window:
        return np.zeros((0,), np.int64)
    return np.arange(0, num_frames - window + 1, stride, dtype=np.int64)


def make_windows(clips: Iterable[np.ndarray], window: int, stride: int | None = None) -> np.ndarray:
    """Cut every clip [N_i, ...] into windows of `window` frames, stride `stride` (default n//2).

    Returns [W, window, ...] float32 in clip order, start order; clips shorter than one
    window contribute nothing (GENEA protocol: no padding).
    """
    stride = max(1, window // 2) if stride is None else stride
    out: list[np.ndarray] = []
    trailing: tuple[int, ...] | None = None
    for clip in clips:
        clip = np.asarray(clip, np.float32)
        if trailing is None:
            trailing = clip.shape[1:]
        elif clip.shape[1:] != trailing:
            raise ValueError(f"clips differ in per-frame shape: {trailing} vs {clip.shape[1:]}")
        for s in window_starts(clip.shape[0], window, stride):
            out.append(clip[s:s + window])
    if not out:
        return np.zeros((0, window) + (trailing or ()), np.float32)
    return np.stack(out)


def fgd_raw(real_clips: Sequence[np.ndarray], generated_clips: Sequence[np.ndarray], window: int,
            stride: int | None = None, eps: float = 1e-6, method: str = "auto",
            auto_max_dim: int = 1024) -> float:
    """Raw-space FGD: Fréchet distance between flattened position windows [W, window*J*3]."""
    a = make_windows(real_clips, window, stride)
    b = make_windows(generated_clips, window, stride)
    return fgd_from_features(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), eps=eps, method=method,
                             auto_max_dim=auto_max_dim)
