"""Kucherenko et al. 2019: frame normalization, the denoising-autoencoder loss and the SpeechE
loss, as pure functions (spec ../shared/methods/kucherenko.md §3, §4).

Everything random takes an explicit key, so a train step stays a pure function of
(params, model_state, batch, key) under ``jax.jit``. ``functional_loss`` adapts a loss
written on a module to the trainer's split form (``nnx.merge`` of params and model state,
BatchNorm statistics returned as the new model state), the same way
``gesture_jax/training/step.py`` does for the diffusion loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gesture_jax.methods.kucherenko.model import MotionAutoencoder

NORMALIZE_EPS = 1e-8      # x = (y − μ)/(M + 1e-8)       (utils.py prepare_motion_data)
DENORMALIZE_EPS = 1e-15   # y = x·(M + 1e-15) + μ         (decode.py; also the loss's scale)
NOISE_FRACTION = 0.05     # denoising noise std = 0.05 × global std of the normalized train matrix
WEIGHT_DECAY = 0.5        # times l2_loss(W) = ½Σw² for each of the two AE weight matrices


# ---------------------------------------------------------------------------- normalization
def _like(stat: np.ndarray, y: Any) -> Any:
    """The statistic as an array that combines with y without changing y's float dtype."""
    if isinstance(y, jax.Array):
        return jnp.asarray(stat, y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else jnp.float32)
    y = np.asarray(y)
    return stat.astype(y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64)


@dataclass(frozen=True)
class KANormalizer:
    """Per-dimension mean μ and M = max|Y| over the *raw, uncentred* training frames.

    normalize: x = (y − μ)/(M + 1e-8); denormalize: y = x·(M + 1e-15) + μ. The two epsilons
    differ as in the authors' code: for a dimension that is constant 0 in training (M = 0,
    e.g. the velocity of the fixed hips) normalize divides by 1e-8 and denormalize multiplies
    by 1e-15, so a non-zero test value there does not round-trip (it shrinks by 1e-7); for
    M > 0 the round trip scales y − μ by (M + 1e-15)/(M + 1e-8) ≈ 1 − 1e-8/M, below float32
    resolution for M ≳ 1 (cm data). Because M is taken before centring,
    x is not confined to [−1, 1].
    mean, max_abs: [F] float64.
    """

    mean: np.ndarray
    max_abs: np.ndarray

    def __post_init__(self):
        mean = np.asarray(self.mean, np.float64)
        max_abs = np.asarray(self.max_abs, np.float64)
        if mean.ndim != 1 or mean.shape != max_abs.shape:
            raise ValueError(f"KANormalizer: mean and max_abs must be 1-D of equal length, got {mean.shape} "
                             f"and {max_abs.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(max_abs))):
            raise ValueError("KANormalizer: mean and max_abs must be finite")
        if np.any(max_abs < 0):
            raise ValueError("KANormalizer: max_abs must be non-negative")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "max_abs", max_abs)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, frames: np.ndarray, source: str = "training frames") -> "KANormalizer":
        """Statistics of [N, F] raw training frames (N ≥ 1, all finite)."""
        y = np.asarray(frames, np.float64)
        if y.ndim != 2 or y.shape[0] == 0:
            raise ValueError(f"KANormalizer.fit: {source} must be a non-empty [N, F] matrix, got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"KANormalizer.fit: {source} contain NaN or inf values")
        return cls(mean=y.mean(axis=0), max_abs=np.abs(y).max(axis=0))

    def _check(self, y: Any, what: str) -> None:
        if y.shape[-1] != self.dim:
            raise ValueError(f"KANormalizer.{what}: last axis has {y.shape[-1]} features, the normalizer {self.dim}")

    def normalize(self, y: Any) -> Any:
        """[..., F] raw → normalized (numpy or jax, dtype kept)."""
        self._check(y, "normalize")
        return (y - _like(self.mean, y)) / _like(self.max_abs + NORMALIZE_EPS, y)

    def denormalize(self, x: Any) -> Any:
        """[..., F] normalized → raw units (the inverse of decode.py, with M + 1e-15)."""
        self._check(x, "denormalize")
        return x * _like(self.max_abs + DENORMALIZE_EPS, x) + _like(self.mean, x)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays for ``np.savez`` (no pickles)."""
        return {"mean": self.mean.copy(), "max_abs": self.max_abs.copy()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "normalizer") -> "KANormalizer":
        """Inverse of ``to_dict`` (also accepts an ``np.load`` NpzFile); ``source`` names the file in errors."""
        missing = [k for k in ("mean", "max_abs") if k not in d]
        if missing:
            raise ValueError(f"{source}: missing array(s) {missing}; a KA normalizer holds 'mean' and 'max_abs'")
        try:
            return cls(mean=np.asarray(d["mean"]), max_abs=np.asarray(d["max_abs"]))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


def global_noise_std(x_norm: np.ndarray, fraction: float = NOISE_FRACTION) -> float:
    """fraction × σ, σ = the single std of the whole normalized training matrix (np.std over all
    axes, as learn_dataset_encoding.py): the std of the AE's input noise. fraction=1 gives σ."""
    x = np.asarray(x_norm, np.float64)
    if x.size == 0:
        raise ValueError("global_noise_std: the normalized training matrix is empty")
    return float(fraction * np.std(x))


# ---------------------------------------------------------------------------- losses
def l2_loss(w: jax.Array) -> jax.Array:
    """TensorFlow's tf.nn.l2_loss: ½ Σ w²."""
    return 0.5 * jnp.sum(jnp.square(w))


def noisy_input(x_norm: jax.Array, key: jax.Array, noise_std: float | jax.Array) -> jax.Array:
    """x + N(0, noise_std²) elementwise: the denoising autoencoder's corrupted input."""
    return x_norm + noise_std * jax.random.normal(key, x_norm.shape, x_norm.dtype)


def autoencoder_loss(model: MotionAutoencoder, x_norm: jax.Array, key: jax.Array, noise_std: float | jax.Array,
                     max_abs: jax.Array, weight_decay: float = WEIGHT_DECAY, deterministic: bool = False
                     ) -> jax.Array:
    """The DAE objective (spec §3), a scalar.

    mean over batch and dims of ((x̂ − x)·(M + 1e-15))²  — MSE in original units —
    + weight_decay·l2_loss(W_enc) + weight_decay·l2_loss(W_dec)  (kernels only, no biases),
    where x̂ = AE(x + noise) with dropout on both layer inputs, and the target is the clean x.
    key → (noise key, dropout key) by ``jax.random.split(key)``. ``deterministic=True``
    (validation) turns dropout off; the noise stays (set noise_std=0 for a clean pass).
    x_norm: [B, F] normalized frames; max_abs: [F] the normalizer's M.
    """
    k_noise, k_drop = jax.random.split(key)
    x_hat = model(noisy_input(x_norm, k_noise, noise_std), deterministic,
                  None if deterministic else k_drop)                            # [B, F]
    scale = jnp.asarray(max_abs, x_hat.dtype) + DENORMALIZE_EPS                 # [F]
    recon = jnp.mean(jnp.square((x_hat - x_norm) * scale))
    decay = weight_decay * (l2_loss(model.encoder.kernel[...]) + l2_loss(model.decoder.kernel[...]))
    return recon + decay


def speech_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """SpeechE's Keras loss 'mse': mean of (pred − target)² over batch and dims."""
    if pred.shape != target.shape:
        raise ValueError(f"speech_loss: prediction {pred.shape} and target {target.shape} differ in shape")
    return jnp.mean(jnp.square(pred - target))


def speech_model_loss(model: nnx.Module, x: jax.Array, target: jax.Array, key: jax.Array,
                      deterministic: bool = False) -> jax.Array:
    """MSE of SpeechE(x) against its target (AE codes or raw frames). x: [B, C, D]; target: [B, N]."""
    return speech_loss(model(x, deterministic, None if deterministic else key), target)


# ---------------------------------------------------------------------------- trainer adapter
def functional_loss(graphdef: Any, model_loss: Callable[..., jax.Array]) -> Callable[..., tuple[jax.Array, Any]]:
    """Turn ``model_loss(model, *args, key=..., deterministic=...)`` into the split form
    ``f(params, model_state, *args, key, deterministic=False) -> (loss, new_model_state)``.

    The model is rebuilt from ``graphdef`` with fresh Variable objects (nnx only lets a trace
    mutate Variables created at its own level, e.g. inside ``value_and_grad``), the loss runs
    (BatchNorm updates its running statistics in training mode), and everything that is not a
    Param is split off again as the new model state, cast back to the incoming dtypes.
    ``graphdef`` comes from ``nnx.split(model, nnx.Param, ...)`` (or the trainer's 3-way split:
    these modules hold no RNG streams, so that part is empty).
    """
    fresh = lambda tree: jax.tree_util.tree_map(lambda x: x, tree)

    def f(params: Any, model_state: Any, *args: Any, key: jax.Array, deterministic: bool = False):
        model = nnx.merge(graphdef, params, fresh(model_state))
        loss = model_loss(model, *args, key=key, deterministic=deterministic)
        new_state = nnx.split(model, nnx.Param, ...)[2]
        new_state = jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype), new_state, model_state)
        return loss, new_state

    return f
