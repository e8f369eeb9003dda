"""Load a trained run for generation: ``load_for_inference(workdir)`` (CONTRACTS.md).

Everything comes from the workdir alone - ``config.json``, ``model_info.json``,
``data/manifest.json``, ``data/motion_pipeline/`` and ``checkpoints/`` - so a run can be
copied elsewhere and sampled without the dataset. Only the weights (EMA when the run kept
it, unless ``use_ema=False``) and the BatchNorm statistics are read; the optimizer state is
not loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import ml_collections
from flax import nnx
from jax.sharding import SingleDeviceSharding

from gesture_jax.errors import UserError
from gesture_jax.storage import Path
from gesture_jax.training import checkpoint as ckpt_lib
from gesture_jax.training import state as state_lib
from gesture_jax.training import verify


class RunError(UserError, FileNotFoundError):
    """A workdir that is not a (complete) training run."""


@dataclass
class InferenceBundle:
    config: ml_collections.ConfigDict
    model: Any                     # what the method's load_models returns (Persona-Gestor: the denoiser)
    pipeline: Any                  # the run's motion pipeline (motion/representations.py), or None when absent
    manifest: dict[str, Any]
    step: int                      # checkpoint step loaded
    used_ema: bool = False
    student: bool = False          # model is the distilled few-step student (sampler "student")
    workdir: Path | None = None    # the run it was loaded from (files a method keeps beside data/)


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise RunError(f"{path} not found: {path.parent} is not a gesture_jax training run "
                       f"(python -m gesture_jax.train writes it)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e})") from e


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The run's full config (config.json) as a ConfigDict."""
    return ml_collections.ConfigDict(_read_json(Path(workdir) / "config.json"))


def model_dims(workdir: Path, manifest: dict[str, Any]) -> tuple[int, int, int]:
    """(motion_dim, audio_dim, seq_len) the model was built with."""
    info_path = workdir / "model_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    F = int(info.get("motion_dim", manifest["motion"]["feature_dim"]))
    A = int(info.get("audio_dim", manifest["audio"]["dim"]))
    T = int(info.get("seq_len", manifest["window_frames"]))
    return F, A, T


def restore_model(run_dir: str | Path, model_fn, *, seed: int = 0, step: int | None = None,
                  use_ema: bool = True, device: jax.Device | None = None) -> tuple[nnx.Module, int, bool]:
    """(model, step, used_ema): the module ``model_fn`` builds, with the weights of checkpoint
    ``step`` (default: latest) of ``run_dir/checkpoints`` (EMA when kept, unless ``use_ema=False``)
    and its BatchNorm statistics. Shared by every method's ``load_models``."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        raise RunError(f"{ckpt_dir} not found: the run has no checkpoint yet")
    ckpt = ckpt_lib.Checkpointer(ckpt_dir, async_save=False)
    try:
        step = ckpt.latest_step() if step is None else int(step)
        if step is None:
            raise RunError(f"{ckpt_dir} holds no complete checkpoint")
        if step not in ckpt.all_steps():
            raise RunError(f"{ckpt_dir} has no step {step} (have {ckpt.all_steps()})")
        _refuse_damaged(ckpt_dir, step, ckpt.all_steps())
        present = ckpt.item_names(step)
        weights = "ema" if use_ema and "ema" in present else "params"

        sharding = SingleDeviceSharding(device or jax.devices()[0])
        abstract = state_lib.abstract_model(model_fn, seed)
        graphdef, params_abs, _, ms_abs = state_lib.split_model(abstract)
        place = lambda tree: jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)
        targets: dict[str, Any] = {weights: place(params_abs)}
        if jax.tree_util.tree_leaves(ms_abs):
            targets["model_state"] = place(ms_abs)
        restored = ckpt.restore_items(targets, step)
    finally:
        ckpt.close()

    bad = verify.nonfinite_paths(restored)
    if bad:
        raise RunError(f"checkpoint {ckpt_dir / str(step)} holds non-finite values ({bad[0]}): "
                       f"{_newest_good(ckpt_dir, [s for s in ckpt.all_steps() if s != step])}")

    # RNG-stream template (tiny; XLA drops the unused parameter initializers).
    rng_state = jax.jit(lambda: state_lib.split_model(model_fn(nnx.Rngs(0)))[2])()
    model = nnx.merge(graphdef, restored[weights], rng_state, restored.get("model_state", ms_abs))
    return model, int(step), weights == "ema"


def _newest_good(ckpt_dir: Path, steps: list[int]) -> str:
    for rep in verify.verify_run_dir(ckpt_dir, steps):
        if rep.usable:
            return f"the newest step that verifies is {rep.step}: pass --step={rep.step}"
    return "no other step of this run verifies"


def _refuse_damaged(ckpt_dir: Path, step: int, steps: list[int]) -> None:
    """A step whose files differ from its checksums is never loaded (its weights may be
    silently wrong); the error names the newest step that verifies."""
    since = verify.read_policy(ckpt_dir)
    rep = verify.verify_step(ckpt_dir / str(step), required=since is not None and step >= since)
    if not rep.usable:
        raise RunError(f"checkpoint {ckpt_dir / str(step)} is damaged ({rep.summary()}); "
                       f"{_newest_good(ckpt_dir, [s for s in steps if s != step])} "
                       f"(python -m gesture_jax.training.check --workdir=RUN lists every step)")


def load_for_inference(workdir: str | Path, step: int | None = None, use_ema: bool = True,
                       device: jax.Device | None = None, student: bool = False) -> InferenceBundle:
    """Rebuild the model(s) of ``workdir``'s method and load checkpoint ``step`` (default: latest);
    ``student``: the distilled few-step model instead (its stage's checkpoint ``step``)."""
    from gesture_jax.methods import DataDims, get_method, method_name

    workdir = Path(workdir)
    cfg = load_config(workdir)
    manifest = _read_json(workdir / "data" / "manifest.json")
    method = get_method(method_name(cfg))
    F, A, T = model_dims(method.stage_dir(workdir, method.inference_stages(cfg)[-1]), manifest)
    from gesture_jax.data.manifest import audio_rate
    dims = DataDims(motion_dim=F, audio_dim=A, window=T, fps=float(cfg.data.fps),
                    audio_fps=audio_rate({"fps": float(cfg.data.fps), **manifest}))
    load = method.load_student if student else method.load_models
    model, step, used_ema = load(workdir, cfg, dims, step=step, use_ema=use_ema, device=device)

    pipeline = None
    pipe_dir = workdir / "data" / "motion_pipeline"
    if pipe_dir.is_dir() and any(pipe_dir.iterdir()):
        from gesture_jax.motion.representations import load_pipeline
        pipeline = load_pipeline(pipe_dir)
    return InferenceBundle(config=cfg, model=model, pipeline=pipeline, manifest=manifest, step=step,
                           used_ema=used_ema, student=student, workdir=workdir)
