"""The few-step student as a stage of any window-denoiser diffusion method.

A method whose trained model exposes ``condition / denoise / null_condition`` (the windowed
sampler's contract: Persona-Gestor now, DiffGesture, LDMC's latent denoiser and ExpGest
next) gets a ``distill`` stage by listing this mixin before ``Method``:

    class PersonaGestor(StudentStage, Method):
        stages = ("main", "distill")

and sending ``loss_fn`` for that stage to ``self.student_loss_fn``. The student is the
method's own network (same ``build_model``), starts from the teacher's EMA weights, and is
trained by training/distill.py against the teacher's ODE solutions; it lives in
``WORKDIR/stages/distill`` next to the teacher, whose checkpoints stay where a single-stage
run keeps them (``WORKDIR/checkpoints``), so runs trained before students existed are
teachers as they are. ``generate --sampler=student`` loads it (``load_student``).
"""
from __future__ import annotations

import json
from typing import Any

import ml_collections
from flax import nnx

from gesture_jax.methods.base import DataDims, MethodError
from gesture_jax.storage import Path

DISTILL = "distill"


class StudentStage:
    """Mixin for a Method whose first stage (``stages[0]``) trains a window denoiser."""

    student_stage = DISTILL

    @property
    def main_stage(self) -> str:
        return self.stages[0]

    def stage(self, cfg: ml_collections.ConfigDict) -> str:
        """"" (every config written before students) means the teacher's stage."""
        return super().stage(cfg) if str(cfg.train.get("stage", "") or "") else self.main_stage

    def stage_dir(self, workdir: str | Path, stage: str) -> Path:
        wd = Path(workdir)
        return wd if stage == self.main_stage else wd / "stages" / stage

    def inference_stages(self, cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
        return (self.main_stage,)

    # ------------------------------------------------------------------ training the student
    def load_frozen(self, cfg: ml_collections.ConfigDict, workdir: Path, stage: str, dims: DataDims) -> Any:
        if stage != DISTILL:
            return super().load_frozen(cfg, workdir, stage, dims)
        from gesture_jax.training import distill
        from gesture_jax.training.inference import RunError, restore_model

        tdir = distill.teacher_workdir(cfg, workdir)
        try:
            distill.check_teacher(cfg, tdir, self.name, self.config_sections)
        except distill.DistillError as e:
            raise MethodError(str(e)) from None
        tstage = self.stage_dir(tdir, self.main_stage)
        info_path = tstage / "model_info.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            theirs = {k: info.get(k) for k in ("motion_dim", "audio_dim", "seq_len")}
            mine = {"motion_dim": dims.motion_dim, "audio_dim": dims.audio_dim, "seq_len": dims.window}
            if any(theirs[k] is not None and int(theirs[k]) != mine[k] for k in mine):
                raise MethodError(f"distillation teacher {tdir} was trained on data of another shape ({theirs}) "
                                  f"than {cfg.data.out} ({mine}): distil on the teacher's prepared data")
        try:
            teacher, step, used_ema = restore_model(tstage, lambda r: self.build_model(cfg, dims, self.main_stage, r),
                                                    seed=int(cfg.get("seed", 0)), use_ema=True)
        except RunError as e:
            raise MethodError(f"the distill stage needs a trained teacher: {e} (train it first: python -m "
                              f"gesture_jax.train --config=CONFIG --workdir={tdir})") from None
        print(f"distill: teacher {tstage / 'checkpoints' / str(step)} ({'EMA' if used_ema else 'raw'} weights)",
              flush=True)
        graphdef, state = nnx.split(teacher)
        return distill.Teacher(graphdef=graphdef, state=state, workdir=tdir, step=step)

    def initial_weights(self, cfg: ml_collections.ConfigDict, stage: str, frozen: Any) -> Any:
        if stage != DISTILL:
            return super().initial_weights(cfg, stage, frozen)
        from gesture_jax.training.state import split_model
        _, params, _, model_state = split_model(nnx.merge(frozen.graphdef, frozen.state))
        return params, model_state

    def student_loss_fn(self, cfg, parts, mesh, compute_shardings, frozen):
        from gesture_jax.training import distill
        try:
            return distill.distill_loss_fn(cfg, parts, mesh, compute_shardings, frozen)
        except distill.DistillError as e:
            raise MethodError(str(e)) from None

    # ------------------------------------------------------------------ generation
    def load_student(self, workdir: Path, cfg: ml_collections.ConfigDict, dims: DataDims, *, step, use_ema, device):
        from gesture_jax.training.inference import restore_model
        return restore_model(self.stage_dir(workdir, DISTILL), lambda r: self.build_model(cfg, dims, DISTILL, r),
                             seed=int(cfg.get("seed", 0)), step=step, use_ema=use_ema, device=device)
