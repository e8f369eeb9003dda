"""The method plug-in contract: what the shared trainer, generate and evaluate ask of a method.

A method is one folder under ``gesture_jax/methods/`` holding a ``Method`` subclass; the
registry (``methods/__init__.py``) maps ``cfg.method`` to it. The shared code never names a
method: the trainer asks it for a model and a loss per stage, inference for its trained
modules, generate for motion features from audio features. Everything else (mesh and
sharding rules, Orbax checkpoints with the data iterator's state, SIGTERM, metrics.jsonl,
the Grain pipeline, BVH/MP4 writing, the metric suite) is shared and unchanged per method.

Stages: a method trained in stages (an autoencoder, then a network that predicts its code)
trains one stage per invocation (``--config.train.stage=NAME``). A single-stage method keeps
its checkpoints in the workdir itself (``WORKDIR/checkpoints``); stage S of a multi-stage
method in ``WORKDIR/stages/S/``, each resumable on its own, and a later stage reads the
frozen weights of the earlier ones from there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
from flax import nnx

from gesture_jax.errors import UserError
from gesture_jax.storage import Path

# loss(params, model_state, batch, key, deterministic) -> (loss, new model_state)
LossFn = Callable[..., tuple[Any, Any]]


class MethodError(UserError, ValueError):
    """A config, dataset or workdir that the chosen method cannot use (message says why)."""


@dataclass(frozen=True)
class DataDims:
    """What the prepared data fixes about a model: sizes of one record and the frame rates."""
    motion_dim: int      # F: features per motion frame
    audio_dim: int       # A: features per audio frame
    window: int          # T: motion frames per training window
    fps: float           # motion frames per second
    audio_fps: float | None = None  # audio frames per second (manifest audio.rate); None = fps

    @property
    def audio_rate(self) -> float:
        """Audio frames per second of the data (fps when the audio is at the motion rate)."""
        return float(self.fps if self.audio_fps is None else self.audio_fps)


class Method:
    """Base class of a method plug-in. Subclasses set the class attributes and override the
    hooks marked "required"; the defaults describe a single-stage method."""

    name: str = ""
    stages: tuple[str, ...] = ("main",)
    # Config sections that define the trained model: a resumed or later-stage run must not
    # change them (the trainer compares them with the workdir's config.json).
    config_sections: tuple[str, ...] = ()
    # Motion representation (cfg.data.representation) the method's outputs are features of.
    representations: tuple[str, ...] = ("expmap",)
    # SamplingOptions fields the method understands (None: all of them). A regression method
    # rejects the diffusion ones from `generate`; commands that apply one set of options to
    # runs of several methods (evaluate --compare) pass each run only these.
    sampling_options: tuple[str, ...] | None = None
    # True: the method reads audio frames only at the motion rate (one per motion frame); data
    # prepared with audio at another rate (audio.native_rate) is refused by check_data.
    motion_rate_audio: bool = False

    def split_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """(the options this method understands, the names of the others that were set)."""
        if self.sampling_options is None:
            return dict(options), []
        kept = {k: v for k, v in options.items() if k in self.sampling_options}
        return kept, [k for k, v in options.items() if k not in self.sampling_options and v is not None]

    # ------------------------------------------------------------------ stages and data
    def stage(self, cfg: ml_collections.ConfigDict) -> str:
        """The stage this invocation trains: ``cfg.train.stage``, or the only one."""
        s = str(cfg.train.get("stage", "") or "")
        if not s:
            if len(self.stages) == 1:
                return self.stages[0]
            raise MethodError(f"method {self.name!r} trains in stages {list(self.stages)}: choose one with "
                              f"--config.train.stage=NAME (in that order)")
        if s not in self.stages:
            raise MethodError(f"method {self.name!r} has no stage {s!r}; its stages are {list(self.stages)}")
        return s

    def stage_dir(self, workdir: str | Path, stage: str) -> Path:
        """Where a stage's checkpoints, metrics and model_info live."""
        wd = Path(workdir)
        return wd if len(self.stages) == 1 else wd / "stages" / stage

    def inference_stages(self, cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
        """The stages whose weights generation needs (all of them unless a variant skips one)."""
        return self.stages

    def check_data(self, cfg: ml_collections.ConfigDict, manifest: dict[str, Any]) -> None:
        """Raise MethodError when the prepared data cannot feed this method."""
        rep = str(manifest.get("motion", {}).get("representation", "expmap"))
        if rep not in self.representations:
            raise MethodError(f"method {self.name!r} needs motion features of representation "
                              f"{' or '.join(map(repr, self.representations))}, but {cfg.data.out} was prepared "
                              f"with {rep!r} (set data.representation and run data_prep.prepare again)")
        if self.motion_rate_audio and "fps" in manifest:
            from gesture_jax.data.manifest import audio_rate
            if audio_rate(manifest) != float(manifest["fps"]):
                raise MethodError(f"method {self.name!r} reads one audio frame per motion frame, but {cfg.data.out} "
                                  f"holds audio at {audio_rate(manifest):g} frames/s (motion: {manifest['fps']} fps); "
                                  f"set audio.native_rate=False and run data_prep.prepare again")

    # Keys of cfg.stages.<stage> that the method's loss reads itself (not training settings).
    stage_only_keys: dict[str, tuple[str, ...]] = {}

    def train_config(self, cfg: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
        """The config the trainer runs ``stage`` with: ``cfg.stages.<stage>`` (per-stage learning
        rate, batch, steps...) written over ``cfg.train``; a key that is no training setting is
        an error (typos would otherwise do nothing)."""
        over = cfg.stages.get(stage) if "stages" in cfg else None
        if over is None:
            return cfg
        out = ml_collections.ConfigDict(cfg.to_dict())
        for k, v in over.items():
            if k in self.stage_only_keys.get(stage, ()):
                continue
            if k not in out.train:
                raise MethodError(f"stages.{stage}.{k}: no such training setting (see configs/base.py, train)")
            out.train[k] = v
        return out

    # ------------------------------------------------------------------ training (required)
    def build_model(self, cfg: ml_collections.ConfigDict, dims: DataDims, stage: str, rngs: nnx.Rngs) -> nnx.Module:
        """The trainable module of ``stage``."""
        raise NotImplementedError(f"{type(self).__name__}.build_model")

    def load_frozen(self, cfg: ml_collections.ConfigDict, workdir: Path, stage: str, dims: DataDims) -> Any:
        """What ``stage`` needs from earlier stages (their trained weights), or None.
        Raise MethodError naming the missing stage when it has not been trained."""
        return None

    def loss_fn(self, cfg: ml_collections.ConfigDict, stage: str, parts: Any, mesh: Any,
                compute_shardings: Any, frozen: Any) -> LossFn:
        """loss(params, model_state, batch, key, deterministic) -> (scalar loss, new model_state);
        batch = {"motion": [B, T, F], "audio": [B, Ta, A]} straight from the shared pipeline."""
        raise NotImplementedError(f"{type(self).__name__}.loss_fn")

    # ------------------------------------------------------------------ inference (required)
    def load_models(self, workdir: Path, cfg: ml_collections.ConfigDict, dims: DataDims, *, step: int | None,
                    use_ema: bool, device: Any) -> tuple[Any, int, bool]:
        """(the trained model(s) generation needs, checkpoint step, whether EMA weights were used)."""
        raise NotImplementedError(f"{type(self).__name__}.load_models")

    # A method with a few-step student (methods/students.py) names the stage that trains it.
    student_stage: str | None = None

    def load_student(self, workdir: Path, cfg: ml_collections.ConfigDict, dims: DataDims, *, step: int | None,
                     use_ema: bool, device: Any) -> tuple[Any, int, bool]:
        """Like load_models, for the distilled few-step model (``--sampler=student``)."""
        raise MethodError(f"method {self.name!r} has no few-step student (--sampler=student); "
                          f"students exist for the diffusion methods")

    def initial_weights(self, cfg: ml_collections.ConfigDict, stage: str, frozen: Any) -> Any:
        """(params, model_state) a fresh run of ``stage`` starts from instead of a random
        initialization (a student starts as its teacher), or None."""
        return None

    def resolve_options(self, bundle: Any, opts: Any) -> dict[str, Any]:
        """Sampling options filled from the run's config and checked (GenerateError when invalid)."""
        raise NotImplementedError(f"{type(self).__name__}.resolve_options")

    def sample(self, bundle: Any, features: Sequence[np.ndarray], opts: Any, *, progress: bool = True
               ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Motion features from model-rate audio features [L_i, A] of each file.

        Returns (timelines, borders): timelines[s] [L_i, F] for s = file i * num_samples + k,
        features of the run's motion pipeline (bundle.pipeline.inverse makes the BVH); borders[s]
        the frames where a model window starts or ends, or None for a method without windows.
        """
        raise NotImplementedError(f"{type(self).__name__}.sample")
