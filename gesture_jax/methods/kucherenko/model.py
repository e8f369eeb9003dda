"""Kucherenko et al. 2019 (Aud2Repr2Pose) networks as Flax NNX modules: the motion
denoising autoencoder (MotionE/MotionD) and the speech-to-motion regressor SpeechE.

Spec: ../shared/methods/kucherenko.md §3 (autoencoder), §4 (SpeechE), §11 (quirks).

Randomness is explicit. No module stores an RNG stream: training-mode calls take a
``key`` (one per call, split here per dropout layer), inference calls
(``deterministic=True``) need none and are exact. The loss functions in ``losses.py``
derive these keys from the trainer's per-step key, so a step is a pure function of
(params, model_state, batch, key).

Keras parity is deliberate: the authors' SpeechE is a Keras 2.3.1 ``Sequential`` and their
released models are ``.hdf5`` files. Parameter layouts therefore follow Keras (Dense kernel
[in, out]; GRU kernel [in, 3u] and recurrent kernel [u, 3u] with gates concatenated in the
order z, r, h; one bias [3u]), so imported tensors drop in without reshuffling.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn import initializers

from gesture_jax.models.initializers import xavier_uniform_init, zeros_init

# Keras BatchNormalization defaults (momentum 0.99: running = 0.99 running + 0.01 batch).
KERAS_BN_MOMENTUM = 0.99
KERAS_BN_EPSILON = 1e-3

RECURRENT_ACTIVATIONS = ("sigmoid", "hard_sigmoid")


# ---------------------------------------------------------------------------- initializers
def doubled_glorot_uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """U(±2·sqrt(6/(fan_in+fan_out))): the DAE's weight init, twice Glorot's bound (spec §3).

    Written out rather than as ``variance_scaling(4, "fan_avg", "uniform")`` (the same law)
    so the bound the spec states is visible here. shape = (fan_in, fan_out).
    """
    if len(shape) != 2:
        raise ValueError(f"doubled_glorot_uniform expects a 2-D kernel (fan_in, fan_out), got shape {shape}")
    bound = 2.0 * math.sqrt(6.0 / (shape[0] + shape[1]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _split_or_none(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


def _check_key(key: jax.Array | None, deterministic: bool, where: str) -> None:
    if not deterministic and key is None:
        raise ValueError(f"{where}: training mode (deterministic=False) needs a PRNG key for dropout; "
                         f"pass key=... (or deterministic=True for inference)")


# ---------------------------------------------------------------------------- autoencoder
class MotionAutoencoder(nnx.Module):
    """The 1-hidden-layer denoising autoencoder of motion frames: 384 → 325 (tanh) → 384 (tanh).

    The code is the hidden tanh activation. Dropout (keep ``keep_prob``) hits the *input* of
    each layer in training: the data before the encoder and the code before the decoder
    (spec §3, §11); at inference both layers are plain affine+tanh. Input noise for the
    denoising objective is added by the loss (``losses.autoencoder_loss``), not here, so
    ``encode`` of clean frames is what the speech network learns to predict.
    x: [..., dim_in] normalized frames → code [..., dim_code] → reconstruction [..., dim_in].
    """

    def __init__(self, dim_in: int = 384, dim_code: int = 325, keep_prob: float = 0.9, *, rngs: nnx.Rngs):
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"MotionAutoencoder: keep_prob must lie in (0, 1], got {keep_prob}")
        self.dim_in, self.dim_code, self.keep_prob = int(dim_in), int(dim_code), float(keep_prob)
        kw = dict(kernel_init=doubled_glorot_uniform, bias_init=zeros_init, rngs=rngs)
        self.encoder = nnx.Linear(self.dim_in, self.dim_code, **kw)      # W_enc [dim_in, dim_code]
        self.decoder = nnx.Linear(self.dim_code, self.dim_in, **kw)      # W_dec [dim_code, dim_in]
        self.dropout = nnx.Dropout(1.0 - self.keep_prob)

    def encode(self, x: jax.Array, deterministic: bool, key: jax.Array | None = None) -> jax.Array:
        """[..., dim_in] → [..., dim_code]; dropout on x when training."""
        _check_key(key, deterministic, "MotionAutoencoder.encode")
        x = self.dropout(x, deterministic=deterministic, rngs=key)
        return jnp.tanh(self.encoder(x))

    def decode(self, code: jax.Array, deterministic: bool, key: jax.Array | None = None) -> jax.Array:
        """[..., dim_code] → [..., dim_in]; dropout on the code when training."""
        _check_key(key, deterministic, "MotionAutoencoder.decode")
        code = self.dropout(code, deterministic=deterministic, rngs=key)
        return jnp.tanh(self.decoder(code))

    def __call__(self, x: jax.Array, deterministic: bool, key: jax.Array | None = None) -> jax.Array:
        """Reconstruction [..., dim_in]; ``key`` splits into (encoder-input, code) dropout keys."""
        _check_key(key, deterministic, "MotionAutoencoder")
        k_enc, k_dec = _split_or_none(key, 2)
        return self.decode(self.encode(x, deterministic, k_enc), deterministic, k_dec)


# ---------------------------------------------------------------------------- Keras-style layers
def keras_hard_sigmoid(x: jax.Array) -> jax.Array:
    """Keras 2.x ``hard_sigmoid``: clip(0.2·x + 0.5, 0, 1) (Keras 3 changed the slope to 1/6)."""
    return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


def recurrent_activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    if name == "sigmoid":
        return jax.nn.sigmoid
    if name == "hard_sigmoid":
        return keras_hard_sigmoid
    raise ValueError(f"recurrent_activation must be one of {RECURRENT_ACTIVATIONS}, got {name!r}")


class KerasBatchNorm(nnx.Module):
    """Keras 2 ``BatchNormalization`` over the last axis, statistics over all other axes.

    Why not ``nnx.BatchNorm``: the forward pass is the same (biased batch variance, eps 1e-3)
    and so is the momentum convention, but Keras feeds its running variance the *unbiased*
    batch variance, var·n/(n − 1 − eps) with n = the number of reduced elements (batch×time
    for the time-distributed layers), which nnx does not. Matching it keeps a model trained
    here interchangeable with the authors' Keras weights. Variables are named like nnx's
    (scale/bias Params = Keras gamma/beta; mean/var BatchStats = moving_mean/moving_variance).
    """

    def __init__(self, num_features: int, *, momentum: float = KERAS_BN_MOMENTUM, epsilon: float = KERAS_BN_EPSILON):
        self.num_features, self.momentum, self.epsilon = int(num_features), float(momentum), float(epsilon)
        self.scale = nnx.Param(jnp.ones((self.num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((self.num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((self.num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((self.num_features,), jnp.float32))

    def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
        """x: [..., C]. Training: normalize with batch stats and update the running ones."""
        if x.shape[-1] != self.num_features:
            raise ValueError(f"KerasBatchNorm: expected {self.num_features} features on the last axis, got {x.shape}")
        axes = tuple(range(x.ndim - 1))
        if use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            mean = jnp.mean(x, axis=axes)                                   # [C]
            var = jnp.mean(jnp.square(x - mean), axis=axes)                 # [C] biased, used to normalize
            n = math.prod(x.shape[:-1])
            unbiased = var * (n / (n - (1.0 + self.epsilon)))
            m = self.momentum
            self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1.0 - m) * mean)
            self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1.0 - m) * unbiased)
        inv = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
        return (x - mean) * inv + self.bias[...]


class KerasGRU(nnx.Module):
    """Unidirectional GRU with Keras 2 semantics (``reset_after=False``), returning the last state.

    Why our own cell: ``flax.nnx.GRUCell`` (flax 0.12.8, nnx/nn/recurrent.py) computes the
    candidate as tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), the cuDNN/PyTorch "reset after"
    form with a second recurrent bias, and keeps one Linear per gate. Keras 2.3.1's default
    (and the authors' model) applies the reset gate *before* the recurrent matmul:

        z  = act(x W_z + b_z + h U_z)          act = sigmoid (Keras 2.3) or hard_sigmoid (≤ 2.2)
        r  = act(x W_r + b_r + h U_r)
        h~ = tanh(x W_h + b_h + (r ⊙ h) U_h)
        h' = z ⊙ h + (1 − z) ⊙ h~              initial h = 0

    Weights in Keras' layout: kernel [D, 3u], recurrent_kernel [u, 3u], bias [3u], gate blocks
    in the order z, r, h. Init as Keras: Glorot-uniform over the whole [D, 3u] kernel,
    orthogonal [u, 3u] recurrent kernel, zero bias. The input projection of all steps is one
    matmul; ``jax.lax.scan`` runs the recurrence.
    """

    def __init__(self, in_features: int, units: int, recurrent_activation: str = "sigmoid", *, rngs: nnx.Rngs):
        self.in_features, self.units = int(in_features), int(units)
        self.recurrent_activation = str(recurrent_activation)
        recurrent_activation_fn(self.recurrent_activation)  # validate now
        u = self.units
        self.kernel = nnx.Param(initializers.glorot_uniform()(rngs.params(), (self.in_features, 3 * u), jnp.float32))
        self.recurrent_kernel = nnx.Param(initializers.orthogonal()(rngs.params(), (u, 3 * u), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((3 * u,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, T, D] → last hidden state [B, u]."""
        if x.ndim != 3 or x.shape[-1] != self.in_features:
            raise ValueError(f"KerasGRU: expected input [B, T, {self.in_features}], got {x.shape}")
        u = self.units
        act = recurrent_activation_fn(self.recurrent_activation)
        xp = x @ self.kernel[...] + self.bias[...]                          # [B, T, 3u]
        rk = self.recurrent_kernel[...]
        rk_zr, rk_h = rk[:, :2 * u], rk[:, 2 * u:]                          # [u, 2u], [u, u]

        def step(h: jax.Array, xt: jax.Array) -> tuple[jax.Array, None]:
            # h: [B, u]; xt: [B, 3u]
            zr = act(xt[:, :2 * u] + h @ rk_zr)                             # [B, 2u]
            z, r = zr[:, :u], zr[:, u:]
            cand = jnp.tanh(xt[:, 2 * u:] + (r * h) @ rk_h)                 # [B, u]
            return z * h + (1.0 - z) * cand, None

        h0 = jnp.zeros((x.shape[0], u), xp.dtype)
        h, _ = jax.lax.scan(step, h0, jnp.swapaxes(xp, 0, 1))               # scan over T
        return h


# ---------------------------------------------------------------------------- SpeechE
class SpeechEncoder(nnx.Module):
    """SpeechE (spec §4): MFCC context window [B, context, n_input] → motion code [B, n_output].

    3 × [time-distributed Dense(width) → BatchNorm (batch×time stats) → ReLU → Dropout]
    → GRU(width), last state → BatchNorm → ReLU → Dropout → Dense(n_output), linear.
    ``n_output`` = the AE code size (325) for the proposed model or the frame size (384) for the
    no-autoencoder baseline. Dense layers: Glorot-uniform kernel, zero bias (Keras defaults).
    Attribute names map one to one onto the Keras layer names (dense1..3 = dense_1..3,
    bn1..4 = batch_normalization_1..4, gru = gru_1, out = dense_4).
    """

    def __init__(self, n_input: int = 26, context: int = 61, width: int = 256, n_output: int = 325,
                 dropout: float = 0.1, recurrent_activation: str = "sigmoid", *, rngs: nnx.Rngs):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"SpeechEncoder: dropout must lie in [0, 1), got {dropout}")
        self.n_input, self.context, self.width, self.n_output = int(n_input), int(context), int(width), int(n_output)
        dense = dict(kernel_init=xavier_uniform_init, bias_init=zeros_init, rngs=rngs)
        self.dense1 = nnx.Linear(self.n_input, self.width, **dense)
        self.dense2 = nnx.Linear(self.width, self.width, **dense)
        self.dense3 = nnx.Linear(self.width, self.width, **dense)
        self.bn1 = KerasBatchNorm(self.width)
        self.bn2 = KerasBatchNorm(self.width)
        self.bn3 = KerasBatchNorm(self.width)
        self.gru = KerasGRU(self.width, self.width, recurrent_activation, rngs=rngs)
        self.bn4 = KerasBatchNorm(self.width)
        self.out = nnx.Linear(self.width, self.n_output, **dense)
        self.dropout = nnx.Dropout(float(dropout))

    def __call__(self, x: jax.Array, deterministic: bool, key: jax.Array | None = None) -> jax.Array:
        """x: [B, context, n_input] → [B, n_output]. Training mode uses batch statistics (and
        updates the running ones) and dropout from ``key``; deterministic mode uses neither."""
        if x.ndim != 3 or x.shape[1:] != (self.context, self.n_input):
            raise ValueError(f"SpeechEncoder: expected input [B, {self.context}, {self.n_input}] "
                             f"(B windows of {self.context} frames of {self.n_input} speech features), got {x.shape}")
        _check_key(key, deterministic, "SpeechEncoder")
        keys = _split_or_none(key, 4)
        h = x
        for dense, bn, k in ((self.dense1, self.bn1, keys[0]), (self.dense2, self.bn2, keys[1]),
                             (self.dense3, self.bn3, keys[2])):
            h = jax.nn.relu(bn(dense(h), use_running_average=deterministic))    # [B, T, width]
            h = self.dropout(h, deterministic=deterministic, rngs=k)
        h = self.gru(h)                                                         # [B, width]
        h = jax.nn.relu(self.bn4(h, use_running_average=deterministic))
        h = self.dropout(h, deterministic=deterministic, rngs=keys[3])
        return self.out(h)                                                      # [B, n_output]
