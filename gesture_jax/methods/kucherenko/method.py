"""Kucherenko et al. 2019 (Aud2Repr2Pose) behind the method contract (methods/base.py).

Two stages, one per ``python -m gesture_jax.train`` invocation:

  autoencoder  the denoising motion autoencoder on single frames (384 -> 325 -> 384 at the
               reference's 64-node skeleton), loss in original units + weight decay;
  speech       SpeechE: a 61-frame context of speech features around each motion frame ->
               the frozen autoencoder's code of that frame (the baseline variant,
               ``kucherenko.use_autoencoder=False``, regresses the raw frame and has no
               autoencoder stage).

Both read the shared pipeline's windows {"motion": [B, T, F] standardized, "audio": [B, T, A]
at the motion rate} and draw their own batch inside the jitted loss: the autoencoder
``frames_per_step`` random frames of the windows (the reference's batch of 128 frames),
SpeechE ``contexts_per_step`` random context centres t in [C, T-C) (the reference's
batch of 2056 contexts). Contexts never straddle a window edge, so file ends are not padded in
training (the reference pads each file with 30 silence frames at both ends: its first and last
30 frames per file are trained with silence contexts, ours are not). Generation pads every file
with the silence vector, as the reference does.

Normalization: the reference's x = (y - mu)/(M + 1e-8) with mu, M = mean and max |y| of the
raw training frames. The motion pipeline fitted those statistics (``raw_mean``,
``raw_max_abs``), so a record z = (y - mean)/std is taken to x = (z*std + mean - mu)/(M + 1e-8)
inside the loss. Channels constant over the training set (the fixed hips, their zero
velocities) are dropped by the pipeline before the model sees them: the reference keeps them
at M = 0, which only feeds constants through the autoencoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from gesture_jax.audio.context import context_windows
from gesture_jax.methods.base import DataDims, Method, MethodError
from gesture_jax.methods.kucherenko import losses
from gesture_jax.methods.kucherenko.model import MotionAutoencoder, SpeechEncoder
from gesture_jax.storage import Path

AE, SPEECH = "autoencoder", "speech"
REFERENCE_FRAME, REFERENCE_CODE = 384, 325   # the reference's frame and code sizes (README §4)
# Options of the windowed diffusion sampler that a regression model has no use for.
# Per-stage batch drawn inside the loss from the windows read (cfg.stages.<stage>.<key>, default).
_BATCH_KEYS = {"autoencoder": {"frames_per_step": 128}, "speech": {"contexts_per_step": 2056}}
_DIFFUSION_OPTIONS = ("sampler", "steps", "eta", "guidance", "overlap_s", "snap_s", "batch_windows")


def code_dim(ka: Any, motion_dim: int) -> int:
    """kucherenko.code_dim, or (0) the reference's ratio 325/384 of the frame size."""
    d = int(ka.code_dim)
    return d if d > 0 else max(1, int(round(motion_dim * REFERENCE_CODE / REFERENCE_FRAME)))


@dataclass(frozen=True)
class Normalization:
    """Everything the losses and the decoder need to move between record units (standardized
    z), raw units y (cm) and the reference's normalized x. All [F] float64 arrays."""
    mean: np.ndarray      # pipeline standardization: y = z * std + mean
    std: np.ndarray
    ka: losses.KANormalizer  # x = (y - mu)/(M + 1e-8); y = x (M + 1e-15) + mu
    noise_std: float      # 0.05 x the global std of the normalized training frames

    @classmethod
    def from_pipeline(cls, pipeline: Any, source: str, noise_fraction: float) -> "Normalization":
        for attr in ("raw_mean", "raw_std", "raw_max_abs"):
            if not hasattr(pipeline, attr):
                raise MethodError(f"{source}: the motion pipeline keeps no {attr} (prepare the data again with "
                                  f"data.representation='positions')")
        mean = np.asarray(pipeline.raw_mean, np.float64)
        std = np.asarray(pipeline.raw_std, np.float64)
        ka = losses.KANormalizer(mean=mean, max_abs=np.asarray(pipeline.raw_max_abs, np.float64))
        # x has zero mean per channel (mu = the training mean), so the std over every entry of
        # the normalized training matrix is the root mean of the per-channel variances.
        var_x = (std / (ka.max_abs + losses.NORMALIZE_EPS)) ** 2
        return cls(mean=mean, std=std, ka=ka, noise_std=float(noise_fraction * np.sqrt(var_x.mean())))

    def z_to_x(self, z: jax.Array) -> jax.Array:
        return self.ka.normalize(z * jnp.asarray(self.std, z.dtype) + jnp.asarray(self.mean, z.dtype))

    def z_to_y(self, z: jax.Array) -> jax.Array:
        return z * jnp.asarray(self.std, z.dtype) + jnp.asarray(self.mean, z.dtype)

    def y_to_z(self, y: jax.Array) -> jax.Array:
        return (y - jnp.asarray(self.mean, y.dtype)) / jnp.asarray(self.std, y.dtype)


@dataclass
class KAModels:
    """What generation needs: SpeechE, the autoencoder (None for the baseline) and the units."""
    speech: SpeechEncoder
    autoencoder: MotionAutoencoder | None
    norm: Normalization
    context: int


def _pipeline(data_dir: Path) -> Any:
    from gesture_jax.motion.representations import load_pipeline
    return load_pipeline(Path(data_dir) / "motion_pipeline")


def _stage_setting(cfg: ml_collections.ConfigDict, stage: str, key: str) -> Any:
    st = cfg.stages.get(stage) if "stages" in cfg else None
    return st.get(key, _BATCH_KEYS[stage][key]) if st is not None else _BATCH_KEYS[stage][key]


def context_index(num_frames: int, context: int) -> np.ndarray:
    """int32 [num_frames - 2C, 2C + 1]: rows of frame indices t-C..t+C for t in [C, T-C)."""
    centres = np.arange(context, num_frames - context)
    return (centres[:, None] + np.arange(-context, context + 1)[None, :]).astype(np.int32)


def draw_contexts(z: jax.Array, a: jax.Array, key: jax.Array, n: int, context: int) -> tuple[jax.Array, jax.Array]:
    """SpeechE's batch from a batch of windows: n distinct (window, centre) pairs drawn
    uniformly from the B x (T - 2C) centres whose whole context lies inside the window.
    z: [B, T, F] motion, a: [B, T, A] audio at the motion rate -> (contexts [n', 2C+1, A],
    the centre motion frames [n', F]), n' = min(n, B (T - 2C))."""
    B, T = z.shape[0], z.shape[1]
    idx = jnp.asarray(context_index(T, context))                                # [T-2C, 2C+1]
    total = B * idx.shape[0]
    pick = jax.random.choice(key, total, (min(n, total),), replace=False)
    b, c = pick // idx.shape[0], pick % idx.shape[0]
    return a[b[:, None], idx[c]], z[b, idx[c, context]]


class Kucherenko(Method):
    name = "kucherenko"
    stages = (AE, SPEECH)
    config_sections = ("kucherenko", "audio")
    representations = ("positions",)
    sampling_options = ("seed", "num_samples", "smooth_sigma")
    motion_rate_audio = True  # its +-context windows are of audio frames at the motion rate
    stage_only_keys = {k: tuple(v) for k, v in _BATCH_KEYS.items()}  # read by loss_fn from cfg.stages

    # ------------------------------------------------------------------ stages and data
    def _use_ae(self, cfg: ml_collections.ConfigDict) -> bool:
        return bool(cfg.kucherenko.use_autoencoder)

    def stage(self, cfg: ml_collections.ConfigDict) -> str:
        if "kucherenko" not in cfg:
            raise MethodError("method 'kucherenko' needs the config section `kucherenko` "
                              "(start from configs/kucherenko_demo.py or configs/kucherenko_beat.py)")
        s = str(cfg.train.get("stage", "") or "")
        if not self._use_ae(cfg):
            if s in ("", SPEECH):
                return SPEECH
            if s == AE:
                raise MethodError("kucherenko.use_autoencoder=False (the no-autoencoder baseline) has no "
                                  "'autoencoder' stage: train --config.train.stage=speech only")
        return super().stage(cfg)

    def inference_stages(self, cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
        return (AE, SPEECH) if self._use_ae(cfg) else (SPEECH,)

    def check_data(self, cfg: ml_collections.ConfigDict, manifest: dict[str, Any]) -> None:
        super().check_data(cfg, manifest)
        T, C = int(manifest.get("window_frames", 0) or 0), int(cfg.kucherenko.context)
        if T and T <= 2 * C:
            raise MethodError(f"kucherenko.context={C} needs training windows longer than {2 * C} frames; "
                              f"{cfg.data.out} has {T} (raise data.window_s and prepare again)")

    def _dims(self, cfg: ml_collections.ConfigDict, dims: DataDims) -> tuple[int, int]:
        return dims.motion_dim, code_dim(cfg.kucherenko, dims.motion_dim)

    def build_model(self, cfg: ml_collections.ConfigDict, dims: DataDims, stage: str, rngs: nnx.Rngs) -> nnx.Module:
        ka = cfg.kucherenko
        F, D = self._dims(cfg, dims)
        if stage == AE:
            return MotionAutoencoder(F, D, float(ka.keep_prob), rngs=rngs)
        return SpeechEncoder(n_input=dims.audio_dim, context=2 * int(ka.context) + 1, width=int(ka.width),
                             n_output=D if self._use_ae(cfg) else F, dropout=float(ka.dropout),
                             recurrent_activation=str(ka.recurrent_activation), rngs=rngs)

    def load_frozen(self, cfg: ml_collections.ConfigDict, workdir: Path, stage: str, dims: DataDims) -> Any:
        """(Normalization, frozen autoencoder as (graphdef, state) or None)."""
        norm = Normalization.from_pipeline(_pipeline(Path(cfg.data.out)), str(cfg.data.out),
                                           float(cfg.kucherenko.noise_fraction))
        if stage == AE or not self._use_ae(cfg):
            return norm, None
        ae_dir = self.stage_dir(workdir, AE)
        ck = ae_dir / "checkpoints"
        if not ck.is_dir() or not any(ck.iterdir()):
            raise MethodError(f"stage 'speech' needs the trained autoencoder of stage 'autoencoder', but {ck} holds "
                              f"no checkpoint: train it first with --config.train.stage=autoencoder "
                              f"--workdir={workdir}")
        from gesture_jax.training.inference import restore_model
        ae, step, _ = restore_model(ae_dir, lambda r: self.build_model(cfg, dims, AE, r),
                                    seed=int(cfg.seed), use_ema=True)
        print(f"speech stage: frozen autoencoder from {ck / str(step)}", flush=True)
        return norm, nnx.split(ae)

    # ------------------------------------------------------------------ losses
    def loss_fn(self, cfg, stage, parts, mesh, compute_shardings, frozen):
        from gesture_jax.training import step as step_lib
        from gesture_jax.training.optim import compute_dtype

        norm, frozen_ae = frozen
        ka = cfg.kucherenko
        cdtype = compute_dtype(str(cfg.train.compute_dtype))
        max_abs = jnp.asarray(norm.ka.max_abs, jnp.float32)

        if stage == AE:
            n_frames = int(_stage_setting(cfg, AE, "frames_per_step"))

            def ae_loss(params, model_state, batch, key, deterministic=False):
                z = batch["motion"].astype(jnp.float32)
                flat = z.reshape(-1, z.shape[-1])                                  # [B*T, F]
                k_pick, k_loss = jax.random.split(key)
                n = min(n_frames, flat.shape[0])
                pick = jax.random.choice(k_pick, flat.shape[0], (n,), replace=False)
                x = norm.z_to_x(flat[pick])                                        # [n, F]
                model = step_lib.bind_model(parts, params, model_state, None, deterministic, cdtype,
                                            compute_shardings)
                loss = losses.autoencoder_loss(model, x.astype(cdtype), k_loss, norm.noise_std, max_abs,
                                               float(ka.weight_decay), deterministic)
                return loss.astype(jnp.float32), step_lib.model_state_after(model, model_state)

            return ae_loss

        C = int(ka.context)
        n_ctx = int(_stage_setting(cfg, SPEECH, "contexts_per_step"))
        use_ae = frozen_ae is not None

        def speech_loss(params, model_state, batch, key, deterministic=False):
            z, a = batch["motion"].astype(jnp.float32), batch["audio"].astype(jnp.float32)  # [B,T,F], [B,T,A]
            T = z.shape[1]
            if a.shape[1] != T:
                raise ValueError(f"kucherenko: audio frames ({a.shape[1]}) must match motion frames ({T}) per "
                                 f"window (audio features at the motion rate)")
            k_pick, k_model = jax.random.split(key)
            x_in, frame = draw_contexts(z, a, k_pick, n_ctx, C)                    # [n, 2C+1, A], [n, F]
            if use_ae:
                ae = nnx.merge(*frozen_ae)
                target = ae.encode(norm.z_to_x(frame), deterministic=True)         # [n, D]
            else:
                target = norm.z_to_y(frame)                                        # raw units (the baseline)
            model = step_lib.bind_model(parts, params, model_state, None, deterministic, cdtype,
                                        compute_shardings)
            loss = losses.speech_model_loss(model, x_in.astype(cdtype), jax.lax.stop_gradient(target).astype(cdtype),
                                            k_model, deterministic)
            return loss.astype(jnp.float32), step_lib.model_state_after(model, model_state)

        return speech_loss

    # ------------------------------------------------------------------ inference
    def load_models(self, workdir: Path, cfg, dims: DataDims, *, step, use_ema, device):
        from gesture_jax.training.inference import restore_model

        seed = int(cfg.get("seed", 0))
        speech, step, used_ema = restore_model(self.stage_dir(workdir, SPEECH),
                                               lambda r: self.build_model(cfg, dims, SPEECH, r),
                                               seed=seed, step=step, use_ema=use_ema, device=device)
        ae = None
        if self._use_ae(cfg):
            ae = restore_model(self.stage_dir(workdir, AE), lambda r: self.build_model(cfg, dims, AE, r),
                               seed=seed, use_ema=use_ema, device=device)[0]
        norm = Normalization.from_pipeline(_pipeline(Path(workdir) / "data"), str(workdir),
                                           float(cfg.kucherenko.noise_fraction))
        return KAModels(speech=speech, autoencoder=ae, norm=norm, context=int(cfg.kucherenko.context)), step, used_ema

    def resolve_options(self, bundle, opts) -> dict[str, Any]:
        from gesture_jax.sampling.options import GenerateError

        set_ = [k for k in _DIFFUSION_OPTIONS if getattr(opts, k) is not None]
        if getattr(opts, "reference_sampling", False):
            set_.append("reference_sampling")
        if set_:
            raise GenerateError(f"--{set_[0]}: {self.name} is a regression model (one forward pass, no sampler); "
                                f"{', '.join('--' + k for k in set_)} apply to diffusion methods only")
        if opts.num_samples < 1:
            raise GenerateError(f"--num_samples must be >= 1, got {opts.num_samples}")
        cfg = bundle.config
        smooth = float(cfg.sample.get("smooth_sigma", 0.0) if opts.smooth_sigma is None else opts.smooth_sigma)
        if not (np.isfinite(smooth) and smooth >= 0):
            raise GenerateError(f"smooth_sigma must be >= 0 frames, got {smooth}")
        return dict(sampler="forward", steps=1, smooth=smooth, fps=float(cfg.data.fps))

    def sample(self, bundle, features: Sequence[np.ndarray], opts, *, progress: bool = True):
        """One deterministic forward pass per frame: every sample k of a file is the same motion
        (the model is a regression; num_samples > 1 only repeats it)."""
        from gesture_jax.audio.context import silence_frame
        from gesture_jax.audio.features import make_extractor

        r = self.resolve_options(bundle, opts)
        m: KAModels = bundle.model
        cfg = bundle.config
        silence = silence_frame(make_extractor(cfg.audio, float(cfg.data.fps)))
        fn = _forward_fn(m)
        out = []
        for f in features:
            z = predict_file(fn, np.asarray(f, np.float32), silence, m.context)
            if r["smooth"] > 0:
                from scipy.ndimage import gaussian_filter1d
                z = gaussian_filter1d(z.astype(np.float64), r["smooth"], axis=0, mode="nearest").astype(np.float32)
            out += [z] * int(opts.num_samples)
        return out, None


CHUNK = 2048  # context windows per jitted call (one compiled shape; the last chunk is padded)


def _forward_fn(m: KAModels):
    """jitted contexts [CHUNK, 2C+1, A] -> motion features in record units [CHUNK, F]."""
    graph, state = nnx.split((m.speech, m.autoencoder))
    norm = m.norm

    @jax.jit
    def fn(state, x):
        speech, ae = nnx.merge(graph, state)
        out = speech(x, deterministic=True)
        y = norm.ka.denormalize(ae.decode(out, deterministic=True)) if ae is not None else out
        return norm.y_to_z(y)

    return lambda x: fn(state, x)


def predict_file(fn, feats: np.ndarray, silence: np.ndarray, context: int) -> np.ndarray:
    """feats [L, A] -> motion features [L, F]: the context of frame t is frames t-C..t+C, the
    file padded with C silence frames at both ends."""
    ctx = context_windows(feats, context, silence)                              # [L, 2C+1, A] (a view)
    outs = []
    for a in range(0, ctx.shape[0], CHUNK):
        part = ctx[a:a + CHUNK]
        n = part.shape[0]
        if n < CHUNK:
            part = np.concatenate([part, np.broadcast_to(part[-1:], (CHUNK - n,) + part.shape[1:])])
        outs.append(np.asarray(fn(jnp.asarray(part)))[:n])
    return np.concatenate(outs, axis=0).astype(np.float32)
