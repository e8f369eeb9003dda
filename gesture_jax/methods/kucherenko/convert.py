"""Import the authors' Kucherenko et al. 2019 checkpoints into a gesture_jax workdir.

    python -m gesture_jax.methods.kucherenko.convert --config=configs/kucherenko_demo.py \\
        --speech=model.hdf5 [--autoencoder=DIR/chkpt-final --normalization=DIR] \\
        [--data=PREPARED_DIR] --workdir=W
    python -m gesture_jax.generate --workdir=W --audio=talk.wav --out=out/

The original code is TF1 / Keras 2.3.1 (spec ../shared/methods/kucherenko.md §3-§5, §11).
The files are read tensors only (gesture_jax.foreign): no TensorFlow, no Keras, no pickle. A pickle,
a PyTorch .pt/.pth or TorchScript archive, an empty or truncated file is a one-line error naming it.
How the authors' tensors map onto our model: reference.py.

Inputs
  --speech         SpeechE as saved by Keras ``model.save(...hdf5)`` (``model_weights/<layer>/...``
                   with ``layer_names`` / ``weight_names`` attributes, plus ``model_config``) or by
                   ``model.save_weights`` (the layer groups at the file's root). Its weighted layers
                   must be, in order, Dense, BN, Dense, BN, Dense, BN, GRU, BN, Dense (the first three
                   Dense inside TimeDistributed). The GRU must be Keras' ``reset_after=False`` (bias
                   [3u]; gates z, r, h), which our KerasGRU implements. The GRU's recurrent activation
                   (sigmoid in Keras 2.3.1, hard_sigmoid in Keras <= 2.2) is read from ``model_config``;
                   a weights-only file does not record it: --recurrent_activation, else the config's
                   ``kucherenko.recurrent_activation``. The time context (61 frames) and the input
                   size come from ``model_config`` / the kernels.
  --autoencoder    the DAE's TF1 checkpoint ``chkpt-final`` (prefix, its .index, or its folder): a
                   tensor bundle (LevelDB SSTable .index of BundleEntryProto + raw .data-*-of-* shards,
                   parsed here in pure Python, crc32c verified). Variables (reference DAE.py, created in
                   ``tf.variable_scope("AE_Variables")`` as ``tf.get_variable("Variables/matrix<i>")``):
                   AE_Variables/Variables/matrix1 [D, code] + bias1 (MotionE) and matrix2 [code, D] +
                   bias2 (MotionD). Pre-training variables (AE_Variables/Var/*) and Adam slots are
                   ignored. Other names: --ae_names=encoder.kernel=NAME,decoder.bias=NAME,...
                   Without --autoencoder the file is the no-autoencoder baseline (SpeechE -> raw frame).
  --normalization  the folder with the DAE's normalisation: ``mean_pose.npy`` (mu) and ``max_val.npy``
                   (M = max |Y_train|), the names of the authors' demo repository
                   (Svito-zar/speech-driven-hand-gesture-generation-demo, models/); or, as the main
                   repository recomputes them at decode time, ``Y_train.npy``. Read with
                   allow_pickle=False.
  --data           a dataset prepared by ``data_prep.prepare`` with this config from the same BVH
                   data (default: the config's data.out). Generation needs its manifest (audio
                   features) and motion pipeline (skeleton, IK back to BVH); they are copied into
                   the workdir as training does.

The reference frame vs ours
  The reference frame is 64 nodes x [px, py, pz, vx, vy, vz] in the BVH's depth-first order with each
  End Site right after its joint (evaluation/joints.txt: ..., Head, Site1, LeftShoulder, ...), hips
  fixed at the root OFFSET (hierarchy.txt: (0, 60, 0)). Ours lists the joints first and the End Sites
  last, fixes the hips at their training-mean position and drops the channels constant in training
  (the hips, ...). --frame_order=bvh (default) maps the reference order; ``ours`` keeps ours; a file
  lists the reference node order in our node names (``Head_End`` for Head's End Site). The conversion
  is exact and folded into the weights: rows/columns permuted and the dropped constant channels
  folded into the encoder bias; positions shifted by s = reference root - our root (from mean_pose's
  hips, else the skeleton's root OFFSET, or --reference_root). For the proposed model the workdir's
  copy of the motion pipeline takes the reference's mu - s and M as its mean and max |y| (the method's
  normalizer reads them there), so decoding is the reference's x (M + 1e-15) + mu. With
  --normalization, the reference mean pose is compared with DATA's (--pose_tolerance): a wrong frame
  order or another skeleton is an error instead of silently wrong motion.

Output (what ``python -m gesture_jax.train`` would write): WORKDIR/config.json (the config with
kucherenko.{use_autoencoder, code_dim, width, context, recurrent_activation} from the files),
data/ (manifest + motion pipeline), stages/<stage>/checkpoints/0/ (Orbax, the trainer's TrainState
weights only: train starts a fresh optimizer), stages/<stage>/model_info.json and conversion.json (sources, sha256, every
decision above). The result is loaded back and compared before the command reports success.
Training further in such a workdir reads the normalization of data.out, not the reference's.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gesture_jax import storage
from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.keras_hdf5 import read_keras_hdf5
from gesture_jax.foreign.sniff import file_info
from gesture_jax.training.imported import parse_flags, run_cli, write_stage
from gesture_jax.methods.kucherenko.reference import (
    DEFAULT_AE_NAMES, SPEECH_FILE, AEWeights, ConversionError, SpeechWeights, assign, check_reference_pose,
    frame_layout, map_autoencoder, map_baseline_output, parse_ae_names, position_fit, read_autoencoder,
    read_normalization, speech_weights)

__all__ = ["convert", "ConversionError"]

METHOD = "kucherenko"
AE, SPEECH = "autoencoder", "speech"


# ============================================================================ the workdir
def _foreign_errors_as_conversion_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A file gesture_jax.foreign cannot read is a ConversionError of convert (its message names the file)."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ForeignCheckpointError as e:
            raise ConversionError(str(e)) from e
    return wrapped


@_foreign_errors_as_conversion_errors
def convert(cfg: Any, workdir: str | Path, *, speech: str | Path, autoencoder: str | Path | None = None,
            normalization: str | Path | None = None, data: str | Path | None = None, frame_order: str = "bvh",
            recurrent_activation: str = "auto", ae_names: str | Mapping[str, str] | None = None,
            reference_root: Sequence[float] | None = None, pose_tolerance: float = 0.15,
            verify: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write a generate-ready workdir from the reference's files; returns conversion.json's content.
    Every input is read and checked before anything is written; a workdir that already holds a run
    is refused."""
    import ml_collections

    from gesture_jax.data import manifest as manifest_lib
    from gesture_jax.data import pipeline as data_pipeline
    from gesture_jax.methods import DataDims, get_method, method_name
    from gesture_jax.motion.representations import load_pipeline

    workdir = storage.path(workdir)   # the run may go to a bucket; the source files are read locally
    if (workdir / "config.json").exists() or (workdir / "stages").exists():
        raise ConversionError(f"{workdir}: already holds a run (config.json / stages/); conversion writes a new "
                              f"workdir only")
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    if method_name(cfg) != METHOD or "kucherenko" not in cfg:
        raise ConversionError(f"the config's method is {method_name(cfg)!r}; converting the reference's files needs "
                              f"a Kucherenko config (configs/kucherenko_*.py)")
    ka = cfg.kucherenko

    # ---- read and check every input (nothing written yet)
    kf = read_keras_hdf5(speech, SPEECH_FILE)
    sw = speech_weights(kf, recurrent_activation)
    if autoencoder is None and normalization is not None:
        raise ConversionError("--normalization belongs to the autoencoder; the baseline (no --autoencoder) "
                              "regresses raw frames and has none")
    ae = norm = None
    if autoencoder is not None:
        if normalization is None:
            raise ConversionError("--autoencoder needs --normalization (the folder with mean_pose.npy and "
                                  "max_val.npy, or Y_train.npy): the DAE works on (y - mean)/(max + 1e-8)")
        names = parse_ae_names(ae_names) if not isinstance(ae_names, Mapping) else {**DEFAULT_AE_NAMES, **ae_names}
        ae = read_autoencoder(autoencoder, names)
        norm = read_normalization(normalization)
        if norm[0].size != ae.frame_dim:
            raise ConversionError(f"{normalization}: {norm[0].size} values per frame, but the autoencoder "
                                  f"{ae.index_path} works on frames of {ae.frame_dim}")
        if sw.n_output != ae.code_dim:
            raise ConversionError(f"{speech}: SpeechE outputs {sw.n_output} values ({sw.sources['out.kernel']}) but "
                                  f"the autoencoder's code has {ae.code_dim} ({ae.sources['encoder.kernel']})")

    data_out = storage.path(data if data is not None else cfg.data.out)
    context = ka.context
    if sw.context_frames is not None:
        if sw.context_frames % 2 != 1:
            raise ConversionError(f"{speech}: input of {sw.context_frames} frames; SpeechE's context is 2C + 1")
        context = (sw.context_frames - 1) // 2
    ra = sw.recurrent_activation
    if ra is None:
        ra = str(ka.recurrent_activation)
        log(f"note: {speech} is a weights-only file that does not record the GRU's recurrent activation; using "
            f"{ra!r} (kucherenko.recurrent_activation; Keras 2.3.1's default is sigmoid, Keras <= 2.2's hard_sigmoid: "
            f"--recurrent_activation chooses)")
    cfg.data.out = str(data_out)
    ka.use_autoencoder = ae is not None
    ka.width = sw.width
    ka.context = int(context)
    ka.recurrent_activation = ra
    if ae is not None:
        ka.code_dim = ae.code_dim

    method = get_method(METHOD)
    try:
        info = data_pipeline.dataset_info(cfg)
        manifest = manifest_lib.read_manifest(data_out)
    except (manifest_lib.ManifestError, OSError) as e:
        raise ConversionError(f"--data={data_out}: {e} (generation needs a dataset prepared by data_prep.prepare "
                              f"with this config from the reference's BVH data)") from None
    method.check_data(cfg, manifest)
    dims = DataDims(motion_dim=int(info["motion_dim"]), audio_dim=int(info["audio_dim"]),
                    window=int(info["window_frames"]), fps=float(cfg.data.fps))
    if dims.audio_dim != sw.n_input:
        raise ConversionError(f"{speech}: SpeechE takes {sw.n_input} speech features per frame "
                              f"({sw.sources['dense1.kernel']}) but {data_out} holds {dims.audio_dim} "
                              f"({manifest['audio'].get('feature')}; 26 MFCCs, 30 with audio.prosody=True)")
    pipeline = load_pipeline(data_out / manifest["motion"].get("pipeline", "motion_pipeline"))
    layout = frame_layout(pipeline, frame_order, ref_mean=None if norm is None else norm[0],
                          reference_root=reference_root, where=str(data_out))
    D = len(layout.raw_names)
    ref_dim = ae.frame_dim if ae is not None else sw.n_output
    what = f"autoencoder {ae.index_path}" if ae is not None else f"baseline SpeechE {speech}"
    if ref_dim != D:
        raise ConversionError(f"{what} works on frames of {ref_dim} values but {data_out}'s {len(pipeline.node_names)} "
                              f"nodes give {D} ([p, v] x xyz); prepare the reference's BVH data (64 nodes: 384)")

    summary: dict[str, Any] = {
        "method": METHOD, "variant": "proposed (autoencoder)" if ae is not None else "baseline (no autoencoder)",
        "sources": {"speech": file_info(Path(speech))}, "keras_version": sw.keras_version, "backend": sw.backend,
        "speech_tensors": sw.sources,
        "recurrent_activation": {"value": ra, "from": sw.recurrent_activation_source
                                 or "kucherenko.recurrent_activation (weights-only file)"},
        "context": int(context), "width": sw.width, "data": str(data_out),
        "frame_order": layout.order, "reference_root": layout.root_ref.tolist(),
        "reference_root_from": layout.root_source, "our_root": layout.root_ours.tolist(),
        "dropped_channels": [layout.raw_names[r] for r in layout.dropped_raw],
        "warnings": [],
    }
    expected: dict[str, dict[str, np.ndarray]] = {}
    ae_mean = ae_max = None
    if ae is not None:
        mu, m, desc = norm
        summary["pose_check"] = check_reference_pose(layout, mu, m, float(pose_tolerance), str(data_out),
                                                      f"{normalization} ({desc})")
        ae_arrays, ae_mean, ae_max, warns = map_autoencoder(ae, layout, mu, m)
        summary["warnings"] += warns
        summary["sources"]["autoencoder"] = [file_info(ae.index_path)] + [file_info(q) for q in ae.data_paths]
        summary["sources"]["normalization"] = {"folder": str(normalization), "files": desc}
        summary["autoencoder_variables"] = ae.sources
        summary["code_dim"] = ae.code_dim
        expected[AE] = ae_arrays
    else:
        map_baseline_output(sw, layout)
    expected[SPEECH] = dict(sw.arrays)

    # ---- write
    created = not workdir.exists()
    try:
        _write_workdir(method, cfg, dims, workdir, data_out, expected, sw, ae, ae_mean, ae_max, summary, log)
        if verify:
            _verify(workdir, expected)
    except BaseException:
        if created:
            storage.remove_tree(workdir)
        raise
    for w in summary["warnings"]:
        log(f"warning: {w}")
    return summary


def _write_workdir(method, cfg, dims, workdir: Path, data_out: Path, expected, sw: SpeechWeights,
                   ae: AEWeights | None, ae_mean, ae_max, summary: dict[str, Any], log) -> None:
    from gesture_jax.motion.representations import load_pipeline
    from gesture_jax.training import loop

    loop.prepare_workdir(cfg, workdir, resuming=False, sections=method.config_sections)
    loop.copy_data_description(data_out, workdir)
    if ae is not None:   # the reference's normalization becomes the run's (method.Normalization reads it here)
        pipe_dir = workdir / "data" / "motion_pipeline"
        p = load_pipeline(pipe_dir)
        fit = position_fit(p, str(pipe_dir))
        p._fit = dataclasses.replace(fit, mean=np.asarray(ae_mean, np.float64), max_abs=np.asarray(ae_max, np.float64),
                                     rig=None)
        p.save(pipe_dir)
    base = {"method": METHOD, "motion_dim": dims.motion_dim, "audio_dim": dims.audio_dim, "seq_len": dims.window,
            "converted_from": summary["sources"]}
    stages = ([AE] if ae is not None else []) + [SPEECH]
    for stage in stages:
        sources = sw.sources if stage == SPEECH else ae.sources
        where = str(summary["sources"]["speech"]["path"]) if stage == SPEECH else str(ae.index_path)
        write_stage(method, cfg, dims, stage, workdir,
                     lambda model, a=expected[stage], s=sources, w=where: assign(model, a, s, w),
                     {**base, "stage": stage})
        log(f"{stage}: {method.stage_dir(workdir, stage) / 'checkpoints' / '0'}")
    storage.write_atomic(workdir / "conversion.json", json.dumps(summary, indent=1) + "\n")


def _verify(workdir: Path, expected: dict[str, dict[str, np.ndarray]]) -> None:
    """Load the workdir as generate does and compare every converted tensor bit for bit."""
    from gesture_jax.training.inference import load_for_inference

    bundle = load_for_inference(workdir)
    modules = {SPEECH: bundle.model.speech, AE: bundle.model.autoencoder}
    for stage, arrays in expected.items():
        for path, value in arrays.items():
            mod, var = path.split(".")
            got = np.asarray(getattr(getattr(modules[stage], mod), var)[...])
            if got.shape != value.shape or not np.array_equal(got, value):
                raise RuntimeError(f"{workdir}: stage {stage} {path} differs after reloading the checkpoint")


# ============================================================================ command line
def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "a Kucherenko config, e.g. configs/kucherenko_demo.py",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "the new run directory to write")
    flags.DEFINE_string("speech", None, "SpeechE: Keras model.save(...hdf5) or save_weights file")
    flags.DEFINE_string("autoencoder", None, "the DAE's TF1 checkpoint: DIR/chkpt-final (prefix, .index or folder); "
                        "omit for the no-autoencoder baseline")
    flags.DEFINE_string("normalization", None, "folder with mean_pose.npy + max_val.npy (or Y_train.npy)")
    flags.DEFINE_string("data", None, "prepared dataset (default: the config's data.out)")
    flags.DEFINE_string("frame_order", "bvh", "reference frame layout: bvh (the reference's joints.txt order), "
                        "ours, or a file of node names")
    flags.DEFINE_enum("recurrent_activation", "auto", ["auto", "sigmoid", "hard_sigmoid"],
                      "the GRU's recurrent activation (auto: from the .hdf5's model_config, else the config)")
    flags.DEFINE_string("ae_names", "", "checkpoint variable names: encoder.kernel=NAME,encoder.bias=NAME,"
                        "decoder.kernel=NAME,decoder.bias=NAME (default AE_Variables/Variables/matrix1, bias1, "
                        "matrix2, bias2)")
    flags.DEFINE_string("reference_root", "", "x,y,z of the reference's fixed hips (default: from mean_pose.npy, "
                        "else the skeleton's root OFFSET)")
    flags.DEFINE_float("pose_tolerance", 0.15, "max distance of the reference mean pose from DATA's, as a fraction "
                       "of the body size (0: no check)")
    flags.DEFINE_boolean("verbose", False, "print tracebacks of errors")
    flags.mark_flags_as_required(["config", "workdir", "speech"])


def main(argv: list[str]) -> None:
    from absl import flags

    F = flags.FLAGS

    def convert_from_flags() -> dict[str, Any]:
        root = None
        if F.reference_root:
            try:
                root = [float(v) for v in F.reference_root.split(",")]
            except ValueError:
                root = []
            if len(root) != 3:
                raise ConversionError(f"--reference_root={F.reference_root!r}: expected x,y,z")
        return convert(F.config, F.workdir, speech=F.speech, autoencoder=F.autoencoder,
                       normalization=F.normalization, data=F.data, frame_order=F.frame_order,
                       recurrent_activation=F.recurrent_activation, ae_names=F.ae_names, reference_root=root,
                       pose_tolerance=F.pose_tolerance)

    summary = run_cli(argv, convert_from_flags, F.verbose)
    print(f"converted {summary['variant']} into {F.workdir}; generate with: python -m gesture_jax.generate "
          f"--workdir={F.workdir} --audio=AUDIO --out=OUT")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main, flags_parser=parse_flags)
