"""Import Persona-Gestor's released Lightning checkpoints into a gesture_jax workdir.

    python -m gesture_jax.methods.persona_gestor.import_reference --ckpt=FILE.ckpt \\
        --config=configs/beat.py --workdir=runs/pg_beat [--data=PREPARED_DIR | --scalers=DIR]
    python -m gesture_jax.generate --workdir=runs/pg_beat --audio=talk.wav --out=out/

Nothing in the checkpoint is executed. The authors' .ckpt files also pickle their hyperparameters
(a config object, ``functools.partial`` of optimizer and scheduler constructors), which
``torch.load(weights_only=True)`` refuses; gesture_jax.foreign.torch_zip reads the archive with a
restricted unpickler that keeps tensors and plain containers and turns every other class or
function into an inert record it reports (never called). torch is not needed for that.

What happens (reference.py has the name-by-name map):
  1. the ``state_dict`` is mapped onto our denoiser: every key accounted for (missing, unexpected
     and misshapen keys are errors naming the key and both shapes); the model's shape (depth, D,
     heads, F, audio width, kernels) is read from the tensors and written into the run's config;
  2. the schedule buffers and the positional tables are checked against ours, not loaded;
  3. the diffusion-step table is computed with torch exactly as the reference builds it and
     stored with the run (``model.step_table_rows``), so the imported network matches the
     reference bit for bit there too (our own formula differs in the last float32 unit);
  4. the run reads the reference's inputs: WavLM layer features at 50 Hz, fed to the
     down-sampler unresampled (audio.native_rate); no null token (``model.null_cond=False``),
     so no classifier-free guidance; the reference's attention mask;
  5. the motion description comes from ``--scalers`` (the reference's own pickled pipeline and
     output scaler, reference_data.py: our pipeline then emits and inverts features in the
     reference's column order, skeleton, constants and standardization - what the authors'
     models need) or ``--data`` (a dataset prepared here by data_prep.prepare: OUR feature order
     and statistics, right only for a network trained on them, e.g. one of ours exported to the
     reference's layout; the F check cannot tell two orders of the same channels apart);
  6. the workdir is written by the trainer's own code (checkpoint step 0, fresh optimizer), then
     reloaded as generate loads it and compared tensor by tensor.
Output: WORKDIR/config.json, model_info.json, data/, checkpoints/0/, conversion.json (sources with
sha256, what was skipped, every setting taken from the file).

Memory: at the reference shape (934M parameters) the import peaks at 7.6 GiB resident
(`python bench/import_reference.py`, 75 s on the 2-core CPU): only the weights' storages are read
(not the optimizer moments a Lightning file holds), each converted tensor replaces its source,
and the run's checkpoint keeps weights only (train starts a fresh optimizer from it).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from gesture_jax import storage
from gesture_jax.errors import UserError
from gesture_jax.methods.persona_gestor import reference as ref_lib
from gesture_jax.methods.persona_gestor.reference import ReferenceMismatch

METHOD = "persona_gestor"


class ImportReferenceError(UserError, ValueError):
    """An import that cannot be done (the message names the file and the problem)."""


def _file_info(path: Path) -> dict[str, Any]:
    from gesture_jax.foreign.sniff import file_info
    return file_info(path)


def read_state_dict(ckpt: str | Path) -> tuple["dict[str, np.ndarray]", list[str]]:
    """(state_dict, report of what was skipped) from a Lightning .ckpt or a bare torch.save'd state
    dict, tensors only."""
    from gesture_jax.foreign.torch_zip import state_dict
    return state_dict(ckpt)


def shape_from_file(imp: ref_lib.Imported, sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, Any]:
    """The model settings the tensors fix (config keys -> values)."""
    g = lambda n: np.asarray(sd[prefix + n]).shape
    heads = g("blocks.0.attn.0.module.attention.u_bias")[0]
    out = {
        "model.depth": imp.depth, "model.dim": imp.dim, "model.heads": int(heads),
        "model.mlp_ratio": float(g("blocks.0.mlp.fc1.weight")[0] / imp.dim),
        "model.time_embed_dim": int(g("diffusion_embedding.projection1.weight")[1]),
        "model.conv_kernel": int(g("blocks.0.attn.1.module.sequential.4.conv.weight")[2]),
        "model.motion_in_kernel": int(g(ref_lib.ANCHOR)[2]),
        "model.fuzzy.style_kernel": int(g("style_encoder.1.weight")[2]),
        "model.fuzzy.down_kernel": int(g("down_sampler.1.weight")[2]),
        "model.block": "reference", "model.attn_mask": "reference", "model.null_cond": False,
    }
    pe = prefix + "blocks.0.attn.0.module.positional_encoding.pe"
    if pe in sd:
        out["model.max_len"] = int(np.asarray(sd[pe]).shape[-2])
    return out


def _set(cfg: Any, dotted: str, value: Any) -> tuple[Any, Any]:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    old = node[leaf]
    node[leaf] = value
    return old, node[leaf]


def import_reference(cfg: Any, workdir: str | Path, *, ckpt: str | Path, data: str | Path | None = None,
                     scalers: str | Path | None = None, verify: bool = True,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write a generate-ready workdir from the reference's checkpoint; returns conversion.json's
    content. Everything is read and checked before anything is written; a workdir that already
    holds a run is refused."""
    import ml_collections

    from gesture_jax.methods import DataDims, get_method, method_name
    from gesture_jax.models import diffusion

    workdir, ckpt = storage.path(workdir), Path(ckpt)   # the run may go to a bucket; the file is read locally
    if (workdir / "config.json").exists() or (workdir / "checkpoints").exists():
        raise ImportReferenceError(f"{workdir}: already holds a run (config.json / checkpoints/); the importer writes a "
                           f"new workdir only")
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    if method_name(cfg) != METHOD:
        raise ImportReferenceError(f"the config's method is {method_name(cfg)!r}; importing Persona-Gestor's checkpoint "
                           f"needs a Persona-Gestor config (configs/beat.py, trinity.py, zeggs.py)")
    if data is not None and scalers is not None:
        raise ImportReferenceError("give --data (a prepared dataset) or --scalers (the reference's pipeline files), not both")

    # ---- read and check (nothing written yet)
    sd, skipped = read_state_dict(ckpt)
    imp = ref_lib.read_reference(sd, str(ckpt))
    prefix = ref_lib.find_prefix(sd, str(ckpt))
    settings = shape_from_file(imp, sd, prefix)
    changed = {}
    for key, value in settings.items():
        old, new = _set(cfg, key, value)
        if old != new:
            changed[key] = {"config": old, "checkpoint": new}
    T_steps = int(cfg.diffusion.num_steps)
    # What every imported run is: the stored exact step table, no CFG branch (no null token),
    # WavLM at its own 50 Hz (the reference's input).
    for key, value in (("model.step_table_rows", T_steps), ("train.cond_dropout", 0.0), ("sample.guidance", 1.0),
                       ("audio.feature", "wavlm"), ("audio.native_rate", True)):
        old, new = _set(cfg, key, value)
        if old != new:
            changed[key] = {"config": old, "checkpoint": new}
    if not cfg.audio.wavlm_dir:
        imp.notes.append("audio.wavlm_dir is empty: generation needs WavLM converted by data_prep.convert_wavlm "
                         "(--config.audio.wavlm_dir=DIR here, or edit the run's config.json)")
    schedule = diffusion.make_schedule(cfg.diffusion)
    checked = ref_lib.check_buffers(sd, prefix, imp.depth, schedule, int(cfg.model.max_len), imp.dim, str(ckpt))

    data_dir, manifest, pipeline_src = _motion_description(cfg, imp, data, scalers, ckpt)
    fps = float(cfg.data.fps)
    window = int(round(float(cfg.data.window_s) * fps))
    dims = DataDims(motion_dim=imp.motion_dim, audio_dim=imp.audio_dim, window=window, fps=fps,
                    audio_fps=_audio_rate(cfg))
    method = get_method(METHOD)
    _check_shapes(method, cfg, dims, imp, sd, prefix, str(ckpt))
    table = ref_lib.reference_step_table(T_steps, int(cfg.model.time_embed_dim))
    del sd   # imp.arrays holds what is loaded (934M parameters: one copy of the file's tensors less)

    summary: dict[str, Any] = {
        "method": METHOD, "sources": {"checkpoint": _file_info(ckpt)},
        "skipped_objects": skipped, "ignored_keys": imp.ignored, "checked_buffers": checked,
        "notes": imp.notes, "settings_from_checkpoint": settings, "changed": changed,
        "step_table": {"rows": T_steps, "width": int(cfg.model.time_embed_dim), "computed_with": _torch_version()},
        "motion_description": pipeline_src, "param_count": int(sum(a.size for a in imp.arrays.values())),
    }

    # ---- write
    created = not workdir.exists()
    try:
        crcs = _write(method, cfg, dims, workdir, data_dir, manifest, imp, table, summary, log)
        if verify:
            _verify(workdir, crcs, table)
    except BaseException:
        if created:
            storage.remove_tree(workdir)
        raise
    return summary


def _torch_version() -> str:
    import torch
    return f"torch {torch.__version__}"


def _motion_description(cfg, imp: ref_lib.Imported, data, scalers, ckpt: Path):
    """(prepared data dir or None, (manifest, pipeline) or the prepared manifest, description) for
    the run's data/ folder."""
    from gesture_jax.data import manifest as manifest_lib

    if scalers is not None:
        from gesture_jax.methods.persona_gestor import reference_data
        pipe_file, scaler_file = reference_data.find_reference_files(scalers, fps=float(cfg.data.fps))
        pipeline = reference_data.load_reference_motion_pipeline(pipe_file, scaler_file, fps=float(cfg.data.fps),
                                                                 expect_features=imp.motion_dim)
        manifest = manifest_lib.new_manifest(
            cfg, feature_names=list(pipeline.feature_names), audio_feature="wavlm", audio_dim=imp.audio_dim,
            splits={}, skipped=[], source_root=str(scalers), audio_rate=_audio_rate(cfg))
        wave_scaler = _input_scaler(cfg, Path(scalers) / "input_scaler.sav", imp)
        return None, (manifest, pipeline, wave_scaler), f"reference pipeline {pipe_file} and scaler {scaler_file}"
    if data is None:
        raise ImportReferenceError("no motion description: give --scalers=FOLDER (the authors' data_pipe_*fps.sav "
                                   "and output_scaler.sav: their feature order and statistics) or --data=PREPARED "
                                   "(a dataset prepared here: our feature order, for networks trained on it)")
    data_out = storage.path(data)
    try:
        manifest = manifest_lib.read_manifest(data_out)
    except (manifest_lib.ManifestError, OSError) as e:
        raise ImportReferenceError(f"--data={data_out}: {e} (generation needs the motion pipeline of a dataset prepared by "
                           f"data_prep.prepare with this config from the reference's BVH data, or --scalers)") from None
    F = int(manifest["motion"]["feature_dim"])
    if F != imp.motion_dim:
        raise ImportReferenceError(f"{ckpt}: the network reads and writes {imp.motion_dim} motion features "
                           f"({ref_lib.ANCHOR}) but {data_out} was prepared with {F}: another dataset or joint "
                           f"selection (Trinity 75, BEAT 156, ZEGGS 166)")
    feature, rate = manifest["audio"].get("feature"), float(manifest["audio"].get("rate", manifest["fps"]))
    if feature != "wavlm" or abs(rate - _audio_rate(cfg)) > 1e-6:
        raise ImportReferenceError(f"--data={data_out} holds {feature} features at {rate:g} frames/s; the reference's "
                                   f"down-sampler reads WavLM's own {_audio_rate(cfg):g} Hz frames: prepare it with "
                                   f"--config.audio.feature=wavlm --config.audio.native_rate=True")
    A = int(manifest["audio"]["dim"])
    if A != imp.audio_dim:
        raise ImportReferenceError(f"{ckpt}: the down-sampler reads {imp.audio_dim}-d audio features but {data_out} holds "
                           f"{A}-d {manifest['audio'].get('feature')} (WavLM Base+ 768, Large 1024)")
    imp.notes.append(f"motion features in the order and statistics of {data_out} (data_prep.prepare), not the "
                     f"reference's PyMO columns: right for a network trained on them; the authors' checkpoints need "
                     f"--scalers=FOLDER with their data_pipe and output_scaler files")
    return data_out, manifest, f"prepared dataset {data_out}"


def _input_scaler(cfg, path: Path, imp: ref_lib.Imported):
    """The reference's waveform scaler (mean and scale per sample of a model window), or None when
    the folder has none; its width must be one window of samples."""
    from gesture_jax.audio.features import SAMPLE_RATE
    from gesture_jax.foreign.safe_pickle import read_scaler

    if not path.is_file():
        imp.notes.append(f"no {path.name} beside the pipeline files: --reference_sampling feeds WavLM the "
                         f"unscaled waveform")
        return None
    sc = read_scaler(path)
    samples = int(round(float(cfg.data.window_s) * SAMPLE_RATE))
    if sc.n_features != samples:
        raise ImportReferenceError(f"{path}: a scaler of {sc.n_features} features; the reference's input scaler "
                                   f"standardizes the {samples} samples of one {cfg.data.window_s:g} s window")
    mean = np.zeros(samples, np.float32) if sc.mean is None else np.asarray(sc.mean, np.float32)
    scale = np.ones(samples, np.float32) if sc.scale is None else np.asarray(sc.scale, np.float32)
    imp.notes.append(f"{path.name}: the waveform scaler, applied per window by --reference_sampling (our samplers "
                     f"encode the whole file unscaled)")
    return mean, scale


def _audio_rate(cfg) -> float:
    """Frames/s of the WavLM features the run reads: the encoder's own 50 Hz (20 ms hop) when
    audio.native_rate (the reference), else the motion rate."""
    from gesture_jax.audio.features import SAMPLE_RATE
    from gesture_jax.audio.wavlm.config import base_plus
    return SAMPLE_RATE / base_plus().hop if cfg.audio.get("native_rate", False) else float(cfg.data.fps)


def _abstract_flat(method, cfg, dims) -> dict[tuple, Any]:
    from flax import nnx

    model = nnx.eval_shape(lambda: method.build_model(cfg, dims, "main", nnx.Rngs(0)))
    return ref_lib.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))))


def _check_shapes(method, cfg, dims, imp: ref_lib.Imported, sd: Mapping[str, Any], prefix: str, where: str) -> None:
    """Every converted tensor against the model the file's settings build; errors name the
    reference key and both shapes in the reference's layout."""
    import jax

    expected = _abstract_flat(method, cfg, dims)
    entries = {e.ours: e for e in ref_lib.parameter_map(imp.depth)}
    for path, arr in imp.arrays.items():
        e = entries[path]
        if path not in expected:
            raise ReferenceMismatch(f"{where}: {prefix + e.ref} has no counterpart in the model built from the config")
        want = tuple(expected[path].shape)
        if tuple(arr.shape) != want:
            ref_want = jax.eval_shape(ref_lib.INVERSE[e.convert], jax.ShapeDtypeStruct(want, np.float32)).shape
            raise ReferenceMismatch(f"{where}: {prefix + e.ref} has shape {tuple(np.shape(sd[prefix + e.ref]))}, "
                                    f"but the model its other tensors describe expects {tuple(ref_want)}")
    left = [p for p in expected if p not in imp.arrays]
    if left:
        raise ReferenceMismatch(f"{where}: our model has parameters the checkpoint does not fill: {left[:5]}")


def fill_model(model: Any, arrays: dict, table: np.ndarray | None, *, consume: bool = False) -> dict[tuple, int]:
    """Write converted arrays (our paths) and the step table into a built model, in place; returns
    the crc32 of every array written (what _verify compares after reloading the run). consume:
    take the arrays out of ``arrays`` as they are copied in, so the 934M-parameter import holds
    one converted copy of the weights at a time, not two."""
    import jax.numpy as jnp
    from flax import nnx

    state = nnx.state(model)
    pure = nnx.to_pure_dict(state)
    crcs: dict[tuple, int] = {}
    for path in list(arrays):
        value = arrays.pop(path) if consume else arrays[path]
        crcs[path] = _crc(value)
        node = pure
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = jnp.asarray(value, jnp.float32)
        del value
    if table is not None:
        pure["time_embed"]["table"] = jnp.asarray(table, jnp.float32)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return crcs


def _crc(a: Any) -> int:
    import zlib
    return zlib.crc32(np.ascontiguousarray(np.asarray(a, np.float32)).view(np.uint8))


def _write(method, cfg, dims, workdir: Path, data_dir, manifest, imp, table, summary, log) -> dict[tuple, int]:
    from gesture_jax.training import loop
    from gesture_jax.training.imported import write_stage

    loop.prepare_workdir(cfg, workdir, resuming=False, sections=method.config_sections)
    if data_dir is not None:
        loop.copy_data_description(data_dir, workdir)
    else:   # the reference's own pipeline: saved with its feature order, as generate will load it
        from gesture_jax.data.manifest import PIPELINE_DIR
        from gesture_jax.methods.persona_gestor.reference_sampling import INPUT_SCALER
        manifest, pipeline, wave_scaler = manifest
        storage.write_atomic(workdir / "data" / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        pipeline.save(workdir / "data" / PIPELINE_DIR)
        if wave_scaler is not None:
            buf = io.BytesIO()
            np.savez(buf, mean=wave_scaler[0], scale=wave_scaler[1])
            storage.write_atomic(workdir / "data" / INPUT_SCALER, buf.getvalue())
    extra = {"method": METHOD, "motion_dim": dims.motion_dim, "audio_dim": dims.audio_dim, "seq_len": dims.window,
             "converted_from": summary["sources"]}
    crcs: dict[tuple, int] = {}
    write_stage(method, cfg, dims, "main", workdir,
                lambda model: crcs.update(fill_model(model, imp.arrays, table, consume=True)), extra,
                fills_everything=True)   # _check_shapes: every parameter and statistic comes from the file
    storage.write_atomic(workdir / "conversion.json", json.dumps(summary, indent=1, default=str) + "\n")
    log(f"checkpoint: {workdir / 'checkpoints' / '0'}")
    return crcs


def _verify(workdir: Path, crcs: dict[tuple, int], table: np.ndarray) -> None:
    """Load the workdir as generate does and compare every converted tensor bit for bit (crc32)."""
    from flax import nnx

    from gesture_jax.training.inference import load_for_inference

    bundle = load_for_inference(workdir)
    flat = ref_lib.flatten(nnx.to_pure_dict(nnx.state(bundle.model)))
    for path, crc in crcs.items():
        if _crc(flat[path]) != crc:
            raise RuntimeError(f"{workdir}: {'/'.join(map(str, path))} differs after reloading the checkpoint")
    if not np.array_equal(np.asarray(flat[("time_embed", "table")]), table):
        raise RuntimeError(f"{workdir}: the stored step table differs after reloading the checkpoint")


# ============================================================================ command line
def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "a Persona-Gestor config (configs/beat.py, trinity.py, zeggs.py)",
                                    lock_config=True)
    flags.DEFINE_string("ckpt", None, "the reference's Lightning checkpoint (.ckpt) or a torch.save'd state dict")
    flags.DEFINE_string("workdir", None, "new workdir to write (generate/evaluate use it like a trained run)")
    flags.DEFINE_string("scalers", None, "folder with the authors' data_pipe_<fps>fps.sav and output_scaler.sav "
                        "(read as numbers only): the reference's feature order, skeleton and statistics")
    flags.DEFINE_string("data", None, "instead of --scalers: a dataset prepared by data_prep.prepare (our feature "
                        "order and statistics: right only for a network trained on them)")
    flags.DEFINE_boolean("verbose", False, "print tracebacks of errors")
    flags.mark_flags_as_required(["config", "workdir", "ckpt"])


def main(argv: list[str]) -> None:
    from absl import flags

    from gesture_jax.training.imported import run_cli

    F = flags.FLAGS
    summary = run_cli(argv, lambda: import_reference(F.config, F.workdir, ckpt=F.ckpt, data=F.data,
                                                     scalers=F.scalers), F.verbose)
    for line in summary["skipped_objects"]:
        print(f"skipped (never executed): {line}")
    for note in summary["notes"]:
        print(f"note: {note}")
    for key, ch in summary["changed"].items():
        print(f"{key}: {ch['config']} -> {ch['checkpoint']} (set for the reference's network)")
    print(f"imported {summary['param_count']:,} parameters into {F.workdir}; generate with: "
          f"python -m gesture_jax.generate --workdir={F.workdir} --audio=AUDIO --out=OUT")


if __name__ == "__main__":
    from absl import app

    from gesture_jax.training.imported import parse_flags

    _define_flags()
    app.run(main, flags_parser=parse_flags)
