"""Gaussian diffusion (DDPM) as pure functions over a `Schedule` pytree.

Schedules: the reference's "linear in sqrt(beta)" (betas = linspace(sqrt(b0), sqrt(b1), N)^2,
b0=1e-4, b1=0.08, N=1000) and the cosine schedule of Nichol & Dhariwal (2021). All tables are
computed in float64 with numpy and stored as float32 jnp arrays (the names follow the
reference's registered buffers, so a converter maps them 1:1).

Predictions: "eps" (reference), "x0", or "v" (v = sqrt(abar) eps - sqrt(1-abar) x0, Salimans &
Ho 2022). Timesteps t are int arrays [B] in [0, N).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import jax
import jax.numpy as jnp
import ml_collections

PREDICTIONS = ("eps", "x0", "v")
SCHEDULES = ("linear_sqrt", "cosine", "linear")


class Schedule(NamedTuple):
    """Per-step tables [N] (a pytree of float32 arrays; N = len(betas))."""
    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    log_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])


def make_betas(kind: str, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.08,
               cosine_s: float = 0.008) -> np.ndarray:
    """float64 betas [N] of the named schedule."""
    if num_steps < 1:
        raise ValueError(f"diffusion.num_steps must be >= 1, got {num_steps}")
    if kind == "linear_sqrt":
        return np.linspace(np.sqrt(beta_start), np.sqrt(beta_end), num_steps, dtype=np.float64) ** 2
    if kind == "linear":
        return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    if kind == "cosine":
        steps = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        abar = np.cos((steps + cosine_s) / (1 + cosine_s) * np.pi / 2) ** 2
        return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)
    raise ValueError(f"diffusion.schedule must be one of {SCHEDULES}, got {kind!r}")


def schedule_from_betas(betas: np.ndarray) -> Schedule:
    """All DDPM tables from betas (float64 math, float32 storage)."""
    betas = np.asarray(betas, np.float64)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    # The posterior variance is 0 at t=0: clip the log to the t=1 value (as DDPM / the reference).
    post_log_var = np.log(np.append(post_var[1], post_var[1:])) if len(betas) > 1 else np.log(np.maximum(post_var, 1e-20))
    tables = dict(
        betas=betas, alphas_cumprod=abar, alphas_cumprod_prev=abar_prev,
        sqrt_alphas_cumprod=np.sqrt(abar), sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
        log_one_minus_alphas_cumprod=np.log(1.0 - abar), sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1.0), posterior_variance=post_var,
        posterior_log_variance_clipped=post_log_var,
        posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
        posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    )
    return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in tables.items()})


def make_schedule(cfg: ml_collections.ConfigDict) -> Schedule:
    """Schedule from `cfg.diffusion` (num_steps, schedule, beta_start, beta_end)."""
    return schedule_from_betas(make_betas(cfg.schedule, cfg.num_steps, cfg.beta_start, cfg.beta_end))


def _at(table: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """table[t] for t [B], shaped [B, 1, ..., 1] to broadcast against an array of rank ndim."""
    return table[t].reshape(t.shape + (1,) * (ndim - t.ndim))


def q_sample(s: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    n = x0.ndim
    return _at(s.sqrt_alphas_cumprod, t, n) * x0 + _at(s.sqrt_one_minus_alphas_cumprod, t, n) * noise


def v_target(s: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    n = x0.ndim
    return _at(s.sqrt_alphas_cumprod, t, n) * noise - _at(s.sqrt_one_minus_alphas_cumprod, t, n) * x0


def training_target(s: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array, prediction: str) -> jax.Array:
    """What the network should output for this prediction type."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_target(s, x0, noise, t)
    raise ValueError(f"diffusion.prediction must be one of {PREDICTIONS}, got {prediction!r}")


def x0_from_eps(s: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    n = x_t.ndim
    return _at(s.sqrt_recip_alphas_cumprod, t, n) * x_t - _at(s.sqrt_recipm1_alphas_cumprod, t, n) * eps


def eps_from_x0(s: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
    n = x_t.ndim
    return (_at(s.sqrt_recip_alphas_cumprod, t, n) * x_t - x0) / _at(s.sqrt_recipm1_alphas_cumprod, t, n)


def to_x0_eps(s: Schedule, out: jax.Array, x_t: jax.Array, t: jax.Array, prediction: str
              ) -> tuple[jax.Array, jax.Array]:
    """Network output -> (x0, eps) for any prediction type (what every sampler needs)."""
    n = x_t.ndim
    if prediction == "eps":
        return x0_from_eps(s, x_t, t, out), out
    if prediction == "x0":
        return out, eps_from_x0(s, x_t, t, out)
    if prediction == "v":
        a, b = _at(s.sqrt_alphas_cumprod, t, n), _at(s.sqrt_one_minus_alphas_cumprod, t, n)
        return a * x_t - b * out, b * x_t + a * out
    raise ValueError(f"diffusion.prediction must be one of {PREDICTIONS}, got {prediction!r}")


def posterior(s: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q(x_{t-1} | x_t, x0): (mean [like x_t], variance [B,1,..], clipped log variance [B,1,..])."""
    n = x_t.ndim
    mean = _at(s.posterior_mean_coef1, t, n) * x0 + _at(s.posterior_mean_coef2, t, n) * x_t
    return mean, _at(s.posterior_variance, t, n), _at(s.posterior_log_variance_clipped, t, n)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Plain mean squared error over every element (reference: F.mse_loss), in float32."""
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def loss(s: Schedule, out: jax.Array, x0: jax.Array, noise: jax.Array, t: jax.Array, prediction: str) -> jax.Array:
    """MSE between the network output and its training target."""
    return mse(out, training_target(s, x0, noise, t, prediction))


LOSS_WEIGHTINGS = ("none", "min_snr")


def loss_weights(s: Schedule, t: jax.Array, prediction: str, weighting: str, gamma: float = 5.0) -> jax.Array:
    """Per-example loss weights [B] (float32).

    "none": 1 (the reference). "min_snr": Min-SNR-gamma (Hang et al. 2023), the weight that
    turns each prediction type's MSE into min(SNR, gamma) times the x0 error: min(SNR, gamma)
    for x0, min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1) for v. For an x0
    model it moves weight from the noisiest steps, where the best estimate is a blur anyway,
    to the low-noise ones whose reconstruction error stays in the sample as jitter.
    """
    if weighting == "none":
        return jnp.ones(t.shape, jnp.float32)
    if weighting != "min_snr":
        raise ValueError(f"train.loss_weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")
    ab = s.alphas_cumprod[t].astype(jnp.float32)
    snr = ab / jnp.maximum(1.0 - ab, 1e-12)
    clipped = jnp.minimum(snr, gamma)
    if prediction == "x0":
        return clipped
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1.0)
    raise ValueError(f"diffusion.prediction must be one of {PREDICTIONS}, got {prediction!r}")


def sample_timesteps(key: jax.Array, batch: int, num_steps: int) -> jax.Array:
    """Uniform training timesteps [B] int32 in [0, N)."""
    return jax.random.randint(key, (batch,), 0, num_steps, dtype=jnp.int32)
