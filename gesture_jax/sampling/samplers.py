"""Diffusion samplers over a generic data-prediction function, each a single jitted `lax.scan`.

Why one formulation for all three: ancestral DDPM (the Persona-Gestor reference), DDIM (any
eta) and DPM-Solver++ (2M) all advance the sample with an update that is affine in the
current sample `x`, the model's clean-data estimate `x0` (and, for 2M, the previous
estimate) and fresh Gaussian noise:

    D_i    = (1 + c_i) * x0_i - c_i * x0_{i-1}
    x_next = a_i * x + b_i * D_i + s_i * z_i,      z_i ~ N(0, I)

Only the per-step coefficients (a, b, c, s) differ, and they depend on nothing but the noise
schedule and the chosen time grid. They are computed once in float64 numpy
(`sampler_coefficients`), so the device loop is a plain scan with no branches and no
numerically delicate terms (the last step to sigma = 0, where DPM-Solver's log-SNR step is
infinite, becomes simply `x = x0`).

Stochastic or deterministic: on the demo model (1500 training steps, held-out synthetic
clips, 4 samples each) DDPM-100 gave mean joint speed 3.73 and beat consistency 0.610;
DDIM-50 and DPM-Solver++-20 with eta = 1 gave 3.72 / 0.629 and 3.70 / 0.615, but with
eta = 0 (the probability-flow ODE) 5.93 / 0.685 and 5.84 / 0.677: an imperfect model's
errors are not averaged out by fresh noise and show up as jitter. configs/base.py therefore
defaults to sample.eta = 1.

The model enters only through `x0_fn(x_t, t) -> x0`, the clean-data estimate at integer
training timestep `t`. `model_x0_fn` converts an eps / x0 / v network to that form;
classifier-free guidance mixes the network's conditional and unconditional outputs before that
conversion (`guided_output`; every prediction type is affine in eps for fixed x_t, so this is
exactly eps-space guidance). The long-audio window fusion (long_audio.py) is another wrapper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gesture_jax.errors import UserError

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm-solver++")
# A distilled few-step model (training/distill.py): x0 = f(x_t, t) at each grid time, then
# fresh noise to the next one (multistep consistency sampling); needs the student's weights.
STUDENT = "student"

# (x_t [B, ...], t: int32 scalar training timestep) -> x0 estimate [B, ...]
X0Fn = Callable[[jax.Array, jax.Array], jax.Array]


class SamplerError(UserError, ValueError):
    """An invalid sampler name, step count or schedule."""


def betas_to_alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), float64 [T]."""
    return np.cumprod(1.0 - np.asarray(betas, np.float64))


def timestep_grid(num_train_steps: int, steps: int, spacing: str = "linear",
                  alphas_cumprod: np.ndarray | None = None) -> np.ndarray:
    """Descending distinct integer training timesteps visited by a sampler, int32 [steps].

    "linear" spaces the steps evenly from T-1 down to 0 (both ends included, so the first
    step sees pure noise and the last the least-noisy timestep the model was trained on).
    "quadratic" concentrates steps at low noise (DDIM paper's alternative); "logsnr" is
    uniform in log(alpha/sigma) (DPM-Solver's choice; needs alphas_cumprod). Timesteps that
    rounding would merge are moved apart, so the grid always has exactly `steps` entries.
    """
    T = int(num_train_steps)
    if steps < 1:
        raise SamplerError(f"steps must be >= 1, got {steps}")
    if steps > T:
        raise SamplerError(f"steps={steps} exceeds the {T} training timesteps of the model")
    if steps == 1:
        return np.array([T - 1], np.int32)
    u = np.linspace(0.0, 1.0, steps)
    if spacing == "linear":
        ts = (T - 1) * (1.0 - u)
    elif spacing == "quadratic":
        ts = (T - 1) * (1.0 - u) ** 2
    elif spacing == "logsnr":
        if alphas_cumprod is None:
            raise SamplerError("logsnr spacing needs alphas_cumprod")
        ab = np.asarray(alphas_cumprod, np.float64)
        lam = 0.5 * np.log(ab / (1.0 - ab))  # decreasing in t
        targets = lam[-1] + (lam[0] - lam[-1]) * u
        ts = np.interp(-targets, -lam, np.arange(T, dtype=np.float64))
    else:
        raise SamplerError(f"unknown timestep spacing {spacing!r} (linear, quadratic, logsnr)")
    asc = np.round(ts[::-1]).astype(np.int64)  # ascending
    # Rounding can merge neighbouring low-noise steps; push them apart so exactly `steps`
    # distinct timesteps remain (first upwards from 0, then back below T-1).
    for i in range(1, steps):
        asc[i] = max(asc[i], asc[i - 1] + 1)
    for i in range(steps - 1, -1, -1):
        asc[i] = min(asc[i], T - steps + i)
    return asc[::-1].astype(np.int32)


def student_timesteps(num_train_steps: int, steps: int, mid_frac: float) -> np.ndarray:
    """Descending grid of a `steps`-step student: T-1, then evenly down to mid_frac (T-1)."""
    T = int(num_train_steps)
    if steps < 1:
        raise SamplerError(f"a student takes at least 1 step, got {steps}")
    if steps == 1:
        return np.array([T - 1], np.int32)
    lo = int(round(float(mid_frac) * (T - 1)))
    ts = np.round(np.linspace(T - 1, lo, steps)).astype(np.int64)
    if np.any(np.diff(ts) >= 0) or lo < 1:
        raise SamplerError(f"{steps} student steps do not fit between t={T - 1} and distill.mid_frac={mid_frac}")
    return ts.astype(np.int32)


@dataclass(frozen=True)
class SamplerCoefficients:
    """Per-step coefficients of the affine update (see module docstring); all arrays [n]."""
    ts: np.ndarray  # int32 training timesteps, descending
    a: np.ndarray  # float32 coefficient of x
    b: np.ndarray  # float32 coefficient of D
    c: np.ndarray  # float32 2M extrapolation weight (0 for first-order steps)
    s: np.ndarray  # float32 noise std

    @property
    def num_steps(self) -> int:
        return int(self.ts.shape[0])


def default_spacing(sampler: str) -> str:
    """Time grid per sampler: "quadratic" for the few-step samplers.

    On the reference schedule (beta up to 0.08, so alpha_bar_{T-1} ~ 1e-13) evenly spaced
    steps waste most of a small budget at noise levels where nothing changes; on the exact
    Gaussian toy (tests/test_samplers.py) quadratic spacing cut the 20-step DPM-Solver++
    variance error from 16% (linear) / 4% (log-SNR) to 1%, and 50-step DDIM's from 27% to 7%.
    """
    return "linear" if sampler == "ddpm" else "quadratic"


def sampler_coefficients(alphas_cumprod: np.ndarray, sampler: str, steps: int, *,
                         eta: float = 0.0, spacing: str | None = None,
                         ts: np.ndarray | None = None) -> SamplerCoefficients:
    """Coefficients of `sampler` for `steps` model evaluations on the given schedule.

    ddpm: ancestral sampling with the posterior variance beta~_t (the reference). With
      steps < T the schedule is respaced (betas recomputed from the alpha_bar subset).
    ddim: eta = 0 deterministic; eta = 1 coincides with ddpm.
    dpm-solver++: 2M multistep, data prediction (Lu et al. 2022, Alg. 2), first-order on
      the first step and on the final step to sigma = 0. eta > 0 gives the 2M SDE variant
      (noise sigma' sqrt(1 - e^{-2 eta h}) per step); its first-order step at eta = 1 is
      exactly the DDPM posterior step, so eta = 1 is "DDPM with a second-order correction".
    student: x_next = sqrt(ab') x0 + sqrt(1 - ab') z (a = 0: the distilled model's x0 is the
      sample; fresh noise carries it to the next grid time); `ts` must be given.
    ts: explicit descending training timesteps (default: `spacing`'s grid from T-1 to 0);
      a grid that starts below T-1 solves from that time on (distillation targets).
    """
    if sampler not in SAMPLERS + (STUDENT,):
        raise SamplerError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS + (STUDENT,))}")
    ab_all = np.asarray(alphas_cumprod, np.float64)
    if ab_all.ndim != 1 or not np.all((ab_all > 0) & (ab_all < 1)) or np.any(np.diff(ab_all) >= 0):
        raise SamplerError("alphas_cumprod must be a strictly decreasing 1-D array in (0, 1)")
    if ts is None:
        if sampler == STUDENT:
            raise SamplerError("the student sampler needs its grid of timesteps (ts=)")
        ts = timestep_grid(ab_all.shape[0], steps, spacing or default_spacing(sampler), ab_all)
    ts = np.asarray(ts, np.int64)
    if ts.ndim != 1 or ts.size < 1 or np.any(np.diff(ts) >= 0) or ts[-1] < 0 or ts[0] >= ab_all.shape[0]:
        raise SamplerError(f"timestep grid {ts.tolist()} must descend strictly within [0, {ab_all.shape[0]})")
    ab = ab_all[ts]
    ab_next = np.concatenate([ab[1:], [1.0]])  # the step after the last lands on clean data
    n = ts.shape[0]
    a = np.zeros(n)
    b = np.zeros(n)
    c = np.zeros(n)
    s = np.zeros(n)
    if sampler == STUDENT:
        b = np.sqrt(ab_next)
        s = np.sqrt(1.0 - ab_next)
    elif sampler == "ddpm" or sampler == "ddim":
        eta_eff = 1.0 if sampler == "ddpm" else float(eta)
        if eta_eff < 0:
            raise SamplerError(f"eta must be >= 0, got {eta}")
        # sigma^2 = eta^2 * (1 - ab_next) / (1 - ab) * (1 - ab / ab_next); eta = 1 is the
        # DDPM posterior variance beta~ of the (respaced) step.
        var = eta_eff ** 2 * (1.0 - ab_next) / (1.0 - ab) * (1.0 - ab / ab_next)
        var = np.minimum(var, 1.0 - ab_next)
        k = np.sqrt(np.maximum(1.0 - ab_next - var, 0.0))
        a = k / np.sqrt(1.0 - ab)
        b = np.sqrt(ab_next) - a * np.sqrt(ab)
        s = np.sqrt(var)
        if sampler == "ddpm":
            # Written in the reference's posterior form (identical numbers, clearer origin):
            beta = 1.0 - ab / ab_next
            a = np.sqrt(1.0 - beta) * (1.0 - ab_next) / (1.0 - ab)
            b = np.sqrt(ab_next) * beta / (1.0 - ab)
            s = np.sqrt(beta * (1.0 - ab_next) / (1.0 - ab))
    else:  # dpm-solver++ 2M; eta > 0: the 2M SDE variant (k-diffusion's dpmpp_2m_sde, midpoint)
        eta_eff = float(eta)
        if eta_eff < 0:
            raise SamplerError(f"eta must be >= 0, got {eta}")
        alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
        alpha_n, sigma_n = np.sqrt(ab_next), np.sqrt(1.0 - ab_next)
        lam = np.log(alpha / sigma)
        with np.errstate(divide="ignore"):
            lam_n = np.where(ab_next < 1.0, np.log(alpha_n / np.maximum(sigma_n, 1e-300)), np.inf)
        h = lam_n - lam
        final = ~np.isfinite(h)
        eh = np.where(final, 0.0, eta_eff * np.where(final, 0.0, h))
        a = np.where(final, 0.0, sigma_n / sigma * np.exp(-eh))
        b = np.where(final, 1.0, -alpha_n * np.expm1(-h - eh))  # alpha_n (1 - e^-(1+eta)h); 1 at the end
        s = np.where(final, 0.0, sigma_n * np.sqrt(np.maximum(-np.expm1(-2.0 * eh), 0.0)))
        for i in range(1, n):
            if np.isfinite(h[i]):
                r = (lam[i] - lam[i - 1]) / h[i]
                c[i] = 1.0 / (2.0 * r)
    return SamplerCoefficients(ts=ts.astype(np.int32), a=a.astype(np.float32), b=b.astype(np.float32),
                               c=c.astype(np.float32), s=s.astype(np.float32))


def sample_loop(x0_fn: X0Fn, coeffs: SamplerCoefficients, x_T: jax.Array, key: jax.Array,
                on_step: Callable[[jax.Array], None] | None = None) -> jax.Array:
    """Runs the whole sampling loop as one `lax.scan`; traceable, so jit the caller.

    x_T: [B, ...] initial noise (N(0, I) for generation). Returns x0 [B, ...].
    The noise for step i is drawn from fold_in(key, i), so results do not depend on how the
    caller batches or jits. on_step(i) is called on the host after each step (progress bars)
    through jax.debug.callback.
    """
    xs = (jnp.asarray(coeffs.ts), jnp.asarray(coeffs.a), jnp.asarray(coeffs.b), jnp.asarray(coeffs.c),
          jnp.asarray(coeffs.s), jnp.arange(coeffs.num_steps, dtype=jnp.int32))
    needs_noise = bool(np.any(coeffs.s > 0))

    def step(carry, inp):
        x, x0_prev = carry
        t, a, b, c, s, i = inp
        x0 = x0_fn(x, t).astype(x.dtype)
        d = (1.0 + c) * x0 - c * x0_prev
        x_next = a * x + b * d
        if needs_noise:
            x_next = x_next + s * jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        if on_step is not None:
            jax.debug.callback(on_step, i)
        return (x_next, x0), None

    (x, _), _ = jax.lax.scan(step, (x_T, jnp.zeros_like(x_T)), xs)
    return x


def sample(x0_fn: X0Fn, alphas_cumprod: np.ndarray, shape: tuple[int, ...], key: jax.Array, *,
           sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
           spacing: str | None = None, dtype=jnp.float32) -> jax.Array:
    """Draws x0 of `shape` from N(0, I) noise; convenience over sampler_coefficients + sample_loop.

    Not jitted itself (x0_fn is a Python closure); wrap the caller in jax.jit, or call
    `jax.jit(lambda k: sample(...))`.
    """
    steps = int(np.asarray(alphas_cumprod).shape[0]) if steps is None else steps
    coeffs = sampler_coefficients(np.asarray(alphas_cumprod), sampler, steps, eta=eta, spacing=spacing)
    k_init, k_loop = jax.random.split(key)
    x_T = jax.random.normal(k_init, shape, dtype)
    return sample_loop(x0_fn, coeffs, x_T, k_loop)


def model_x0_fn(out_fn: Callable[[jax.Array, jax.Array], jax.Array], alphas_cumprod: np.ndarray,
                prediction: str, clip: float | None = None) -> X0Fn:
    """Turns a network output (eps, x0 or v prediction) into the clean-data estimate.

    out_fn(x_t [B,...], t int32 scalar) -> network output [B,...].
    clip: bound |x0| (standardized units); None/0 = off. Why: with the reference schedule
    alpha_bar_{T-1} ~ 5e-13, so an eps error d at the noisiest steps becomes an x0 error of
    d / sqrt(alpha_bar) ~ 1e6 d. Exact arithmetic cancels it, but a model that has not
    learned eps = x_t there exactly (any short run) feeds it back: measured on a 400-step demo
    model, DDPM, DDIM and DPM-Solver++ all ended at std ~1e5. With x0 clipped every update
    contracts in x (DDPM a < 1, DDIM sqrt((1-ab')/(1-ab)) <= 1, DPM-Solver++ sigma'/sigma < 1),
    and the clipped part is multiplied by ~sqrt(alpha_bar) ~ 1e-6 there, so a bound well
    above the data's range changes nothing for a well-trained model.
    """
    ab = jnp.asarray(np.asarray(alphas_cumprod, np.float64), jnp.float32)
    if prediction not in ("eps", "x0", "v"):
        raise SamplerError(f"unknown prediction type {prediction!r} (eps, x0, v)")

    def x0_fn(x_t: jax.Array, t: jax.Array) -> jax.Array:
        return output_to_x0(out_fn(x_t, t), x_t, t, ab, prediction, clip)

    return x0_fn


def output_to_x0(out: jax.Array, x_t: jax.Array, t: jax.Array, ab: jax.Array, prediction: str,
                 clip: float | None = None) -> jax.Array:
    """A network output at x_t [B, ...] and training timestep t (a scalar, or [B] one per
    example) -> the clean-data estimate, |x0| bounded by clip (see model_x0_fn)."""
    t = jnp.asarray(t)
    shape = t.shape + (1,) * (x_t.ndim - t.ndim)  # per-example t broadcasts over the other axes
    a = jnp.sqrt(ab[t]).astype(x_t.dtype).reshape(shape)
    sg = jnp.sqrt(1.0 - ab[t]).astype(x_t.dtype).reshape(shape)
    if prediction == "eps":
        x0 = (x_t - sg * out) / a
    elif prediction == "x0":
        x0 = out
    else:
        x0 = a * x_t - sg * out  # v = a * eps - sg * x0
    return jnp.clip(x0, -clip, clip) if clip else x0


def guided_denoise(model, x_t: jax.Array, t: jax.Array, cond: jax.Array, null: jax.Array | None,
                   guidance: float) -> jax.Array:
    """A window denoiser's output at x_t [B, T, F], t [B], cond [B, T, D] (deterministic); with
    the null conditioning null [1 or B, T, D] and guidance != 1, the conditional and
    unconditional branches run in one batched call and are mixed by guided_output. Shared by
    the offline sampler, streaming and the students' teacher."""
    if null is None or float(guidance) == 1.0:
        return model.denoise(x_t, t, cond, deterministic=True)
    both = model.denoise(jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]),
                         jnp.concatenate([cond, jnp.broadcast_to(null, cond.shape).astype(cond.dtype)]),
                         deterministic=True)
    out_cond, out_uncond = jnp.split(both, 2)
    return guided_output(out_cond, out_uncond, guidance)


def guided_output(out_cond: jax.Array, out_uncond: jax.Array, guidance: float) -> jax.Array:
    """Classifier-free guidance on network outputs [B, ...]: out_u + w (out_c - out_u).

    w = 1 returns out_cond itself (plain conditional sampling, bit for bit). Why mix outputs
    rather than x0 or eps estimates: one batched model call gives both branches (generate.py),
    and for a fixed x_t every prediction type (eps, x0, v) is affine in eps (see model_x0_fn),
    so a mix whose weights sum to 1 commutes with the conversion: guiding the output is
    exactly the usual eps-space guidance for all three. This is the only CFG mix in the code.
    """
    w = float(guidance)
    if w == 1.0:
        return out_cond
    return out_uncond + w * (out_cond - out_uncond)
