"""Persona-Gestor behind the method contract (methods/base.py): the diffusion loss, the windowed
long-audio sampler, and (ours, not in the paper) a few-step student distilled from the trained
model as a second stage (methods/students.py, --config.train.stage=distill). The main stage
is the code before the plug-in refactor: it only names what the trainer, generate and evaluate
used to call directly, and its checkpoints stay in WORKDIR/checkpoints.

The authors' released checkpoints: import_reference.py (names and layouts: reference.py; their
pickled motion pipeline and scalers: reference_data.py), the reference's call signature for
parity checks (api.py) and its own sampling procedure (reference_sampling.py,
``generate --reference_sampling``)."""
from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np
from flax import nnx

from gesture_jax.methods.base import DataDims, Method
from gesture_jax.methods.students import DISTILL, StudentStage
from gesture_jax.storage import Path


class PersonaGestor(StudentStage, Method):
    name = "persona_gestor"
    stages = ("main", DISTILL)  # the teacher (WORKDIR/checkpoints), its few-step student (WORKDIR/stages/distill)
    config_sections = ("model", "diffusion", "audio")
    representations = ("expmap",)

    def build_model(self, cfg: ml_collections.ConfigDict, dims: DataDims, stage: str, rngs: nnx.Rngs) -> nnx.Module:
        from gesture_jax.models import build_denoiser
        return build_denoiser(cfg.model, dims.motion_dim, dims.audio_dim, dims.window, rngs, fps=float(dims.fps),
                              audio_rate=dims.audio_fps)

    def loss_fn(self, cfg, stage, parts, mesh, compute_shardings, frozen):
        if stage == DISTILL:
            return self.student_loss_fn(cfg, parts, mesh, compute_shardings, frozen)
        from gesture_jax.training import step as step_lib
        return step_lib.diffusion_loss_fn(cfg.diffusion, cfg.train, parts, mesh, compute_shardings)

    def load_models(self, workdir: Path, cfg, dims: DataDims, *, step, use_ema, device):
        from gesture_jax.training.inference import restore_model
        return restore_model(self.stage_dir(workdir, "main"), lambda r: self.build_model(cfg, dims, "main", r),
                             seed=int(cfg.get("seed", 0)), step=step, use_ema=use_ema, device=device)

    def resolve_options(self, bundle, opts) -> dict[str, Any]:
        if getattr(opts, "reference_sampling", False):
            from gesture_jax.methods.persona_gestor import reference_sampling
            return reference_sampling.check_options(bundle, opts)
        from gesture_jax.sampling import windowed
        return windowed.resolve_options(bundle, opts)

    def sample(self, bundle, features: Sequence[np.ndarray], opts, *, progress: bool = True):
        if getattr(opts, "reference_sampling", False):
            from gesture_jax.methods.persona_gestor import reference_sampling
            return reference_sampling.sample(bundle, features, opts, progress=progress)
        from gesture_jax.sampling import windowed
        out, plan = windowed.sample_timelines(bundle, features, opts, progress=progress)
        timelines = plan.split(out)
        return timelines, [plan.border_frames(s) for s in range(len(timelines))]
