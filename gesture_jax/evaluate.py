"""Evaluate a trained run on held-out files, or train the dataset's FGD autoencoder.

Evaluate (generates for every file of the split, scores the model and the baselines):
    python -m gesture_jax.evaluate --workdir=runs/demo --split=test --out=runs/demo/eval \\
        [--sampler=ddim --steps=50 --seed=0 --guidance=1 --step=N] [--fgd_ae=DIR] \\
        [--config=configs/demo.py --config.eval.bc_mask_frames=30]   # only to change cfg.eval
writes DIR/metrics.json (fgd, fgd_raw, bc, l1div, jerk, acceleration, hellinger_speed, and
Kucherenko 2019's ka_ape, ka_mae, ka_jerk, ka_accel, ka_hellinger (eval/kucherenko.py) for
"model" and every baseline, per-file values, every constant, checkpoint step, sampling
settings) and DIR/metrics.png (speed histograms, BC per file). The same flags and seed
give a byte-identical metrics.json (timings go to DIR/timing.json).

Train the FGD autoencoder (once per dataset, on the training split of the prepared data):
    python -m gesture_jax.evaluate --train_fgd_ae --config=configs/demo.py [--workdir=RUN] [--fgd_ae=DIR]
The autoencoder directory is, in order: --fgd_ae, cfg.eval.fgd_ae_dir, RUN/fgd_ae (when
--workdir is given), {data.out}/fgd_ae. Evaluation looks it up in the same order.

Compare several trained runs (any methods) in one table (gesture_jax/eval/compare.py):
    python -m gesture_jax.evaluate --compare RUN_A RUN_B ... --out=DIR [--names=a,b]

Ground truth and generated motion go through the same path: features -> pipeline.inverse
(origin, facing +Z) -> forward kinematics -> root-relative joint positions at the model fps,
so the comparison sees the same joints, frame rate and starting placement.
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Sequence

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gesture_jax import errors
from gesture_jax.errors import UserError
from gesture_jax.storage import Path

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file. Required with --train_fgd_ae; when evaluating, only its eval "
    "section is used (overriding the run's).", lock_config=True)
flags.DEFINE_string("workdir", None, "Training run directory (config.json, checkpoints/, data/).")
flags.DEFINE_string("split", None, "Split to evaluate (default cfg.eval.split, 'test').")
flags.DEFINE_string("out", None, "Output directory for metrics.json / metrics.png (default WORKDIR/eval).")
flags.DEFINE_bool("train_fgd_ae", False, "Train the FGD autoencoder on the training split and exit.")
flags.DEFINE_string("fgd_ae", None, "FGD autoencoder directory (see the module docstring for the default).")
flags.DEFINE_string("sampler", None, "ddpm | ddim | dpm-solver++ | student (the distilled few-step model) "
                    "(default: the run's cfg.sample.sampler).")
flags.DEFINE_integer("steps", None, "Sampling steps (default: the generator's default for the sampler).")
flags.DEFINE_float("eta", None, "DDIM eta.")
flags.DEFINE_float("guidance", None, "Classifier-free guidance weight.")
flags.DEFINE_float("smooth_sigma", None, "Gaussian smoothing of the generated motion, std in frames "
                   "(default: the run's cfg.sample.smooth_sigma; 0 = off).")
flags.DEFINE_integer("seed", 0, "Sampling and random-baseline seed.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.DEFINE_integer("max_files", 0, "Evaluate only the first N files of the split (0 = all).")
flags.DEFINE_string("data_root", None, "Folder of the source BVH/WAV files (default: the manifest's source_root).")
errors.define_verbose_flag()
flags.DEFINE_bool("baselines_only", False, "Skip generation; score the baselines only (no checkpoint needed).")
flags.DEFINE_bool("save_motion", False, "Also write the generated BVH files to OUT/motion/.")
flags.DEFINE_bool("compare", False, "Compare runs: `--compare RUN_A RUN_B ... --out=DIR` scores every run "
                  "(any method) and the baselines on the first run's held-out files with one FGD autoencoder "
                  "(--fgd_ae, or trained once) and the first run's cfg.eval (or --config's), and writes "
                  "DIR/metrics.json, DIR/metrics.md (the table) and DIR/metrics.png (one bar chart per metric); every run's "
                  "own results go to DIR/runs/NAME/. Runs with other held-out files, fps or skeleton are "
                  "refused. The sampling flags apply to every run.")
flags.DEFINE_list("names", None, "With --compare: the runs' names in the table, comma-separated "
                  "(default: the workdirs' folder names, which must then be distinct).")


class EvaluateError(UserError, RuntimeError):
    """An evaluation that cannot run (message names the file or directory and what to do)."""


# ----------------------------------------------------------------------------- data access
def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise EvaluateError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EvaluateError(f"{path}: not valid JSON ({e})") from e


def source_root(manifest: dict, override: str | None, manifest_path: Path) -> Path:
    """The folder the manifest's relative bvh/wav paths start from."""
    root = Path(override) if override else Path(manifest.get("source_root", ""))
    if not str(root):
        raise EvaluateError(f"{manifest_path}: no source_root; pass --data_root=DIR")
    if not root.is_dir():
        raise EvaluateError(f"source folder {root} (from {'--data_root' if override else manifest_path}) "
                            f"does not exist; pass --data_root=DIR (relative paths start at {Path.cwd()})")
    return root


def split_files(manifest: dict, split: str, manifest_path: Path) -> list[dict]:
    """The manifest's file entries (file_id, bvh, wav, ...) of one split, sorted by file_id."""
    splits = manifest.get("splits", {})
    if split not in splits:
        raise EvaluateError(f"{manifest_path}: no split {split!r} (have {sorted(splits)})")
    files = sorted(splits[split].get("files", []), key=lambda f: f["file_id"])
    if not files:
        raise EvaluateError(f"{manifest_path}: split {split!r} lists no files")
    return files


def canonical_positions(pipeline, bvh, heading_free: bool = False) -> np.ndarray:
    """Source BVH -> [N, J, 3] positions at the model fps through the pipeline's round trip.

    Starting at the origin facing +Z, exactly like generated motion (pipeline.inverse without
    a start), and with unselected joints at their mean rotation, exactly like generated motion.
    heading_free: see kinematics.bvh_positions (cfg.eval.heading_free).
    """
    from gesture_jax.motion.kinematics import bvh_positions

    return bvh_positions(pipeline.inverse(pipeline.transform(bvh)), heading_free=heading_free)


def load_split_motion(pipeline, root: Path, files: Sequence[dict], *, with_audio: bool,
                      sample_rate: int = 16000, heading_free: bool = False
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ground-truth positions (and 16 kHz waves) of the given manifest entries."""
    from gesture_jax.audio.io import load_audio
    from gesture_jax.motion.bvh import read_bvh

    clips, waves = [], []
    for f in files:
        bvh_path, wav_path = root / f["bvh"], root / f["wav"]
        if not bvh_path.is_file():
            raise EvaluateError(f"{bvh_path} (file {f['file_id']}) does not exist; wrong --data_root?")
        clips.append(canonical_positions(pipeline, read_bvh(bvh_path), heading_free).astype(np.float32))
        if with_audio:
            waves.append(load_audio(wav_path, sr=sample_rate))
    return clips, waves


def _mismatched_pool(manifest: dict, manifest_path: Path, split: str, files: Sequence[dict], pipeline,
                     root: Path, heading_free: bool) -> tuple[list[str], list[np.ndarray] | None]:
    """Motion of other recordings for the mismatched baseline: training-split files picked by
    baselines.pick_others (one per evaluated file, in order); None (the other files of this
    split) when evaluating the training split itself or when it lists no files."""
    from gesture_jax.eval import baselines

    train = sorted(manifest.get("splits", {}).get("train", {}).get("files", []), key=lambda f: f["file_id"])
    if split == "train" or not train:
        n = len(files)
        return [files[(i + 1) % n]["file_id"] for i in range(n)] if n > 1 else [files[0]["file_id"]], None
    picked = [train[j] for j in baselines.pick_others(len(files), len(train))]
    clips, _ = load_split_motion(pipeline, root, picked, with_audio=False, heading_free=heading_free)
    return [f["file_id"] for f in picked], clips


def fgd_ae_dir(flag: str | None, cfg, workdir: str | None) -> Path:
    """Where the FGD autoencoder lives (flag, cfg.eval.fgd_ae_dir, WORKDIR/fgd_ae if present, data.out/fgd_ae)."""
    if flag:
        return Path(flag)
    if cfg.eval.get("fgd_ae_dir", ""):
        return Path(cfg.eval.fgd_ae_dir)
    if workdir and (Path(workdir) / "fgd_ae").exists():
        return Path(workdir) / "fgd_ae"
    if workdir and not cfg.data.out:
        return Path(workdir) / "fgd_ae"
    return Path(cfg.data.out) / "fgd_ae"


def _clean(x: Any) -> Any:
    """JSON-safe values: NaN/inf -> None, numpy -> Python, floats rounded to 10 significant digits."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return None if not math.isfinite(x) else float(f"{x:.10g}")
    return x


# ----------------------------------------------------------------------------- FGD autoencoder
def train_fgd_ae(cfg, workdir: str | None, out_flag: str | None, data_root: str | None = None) -> Path:
    """Train and save the dataset's FGD autoencoder from the prepared data's training split."""
    from gesture_jax.eval.beat import mean_joint_speed
    from gesture_jax.eval.fgd_ae import save_fgd_autoencoder, train_fgd_autoencoder
    from gesture_jax.eval.joints import root_relative
    from gesture_jax.motion.representations import load_pipeline

    candidates = [Path(cfg.data.out)] if cfg.data.out else []
    if workdir:
        candidates.append(Path(workdir) / "data")
    data_dir = next((d for d in candidates if (d / "manifest.json").is_file()), None)
    if data_dir is None:
        raise EvaluateError(f"no manifest.json in {[str(c) for c in candidates]}: prepare the data first "
                            f"(python -m data_prep.prepare --config=...)")
    manifest = _read_json(data_dir / "manifest.json")
    pipeline = load_pipeline(data_dir / manifest["motion"].get("pipeline", "motion_pipeline"))
    files = split_files(manifest, "train", data_dir / "manifest.json")
    root = source_root(manifest, data_root, data_dir / "manifest.json")
    t0 = time.perf_counter()
    e = cfg.eval
    from gesture_jax.eval.metrics import MetricConstants
    heading_free = MetricConstants.from_config(e, fps=float(pipeline.fps)).heading_free  # same default as evaluation
    clips, _ = load_split_motion(pipeline, root, files, with_audio=False, heading_free=heading_free)
    if e.root_relative:
        clips = [root_relative(c).astype(np.float32) for c in clips]
    fps = float(pipeline.fps)
    print(f"fgd-ae: {len(clips)} training files, {sum(len(c) for c in clips)} frames at {fps} fps "
          f"({time.perf_counter() - t0:.1f} s to load)", flush=True)
    window = int(e.fgd_window)
    stride = int(e.fgd_stride) if int(e.fgd_stride) > 0 else max(1, window // 2)
    ae = train_fgd_autoencoder(
        clips, fps=fps, joint_names=pipeline.skeleton.names, mean_speed=mean_joint_speed(clips, fps),
        window=window, stride=stride, hidden=int(e.fgd_ae_hidden), latent=int(e.fgd_ae_latent),
        steps=int(e.fgd_ae_steps), batch_size=int(e.fgd_ae_batch), lr=float(e.fgd_ae_lr), seed=int(cfg.seed),
        log_every=max(1, int(e.fgd_ae_steps) // 20))
    ae.meta.update({"root_relative": bool(e.root_relative), "heading_free": heading_free, "dataset": cfg.data.dataset,
                    "data_dir": str(data_dir), "train_files": [f["file_id"] for f in files]})
    out = save_fgd_autoencoder(fgd_ae_dir(out_flag, cfg, workdir), ae)
    print(json.dumps({"fgd_ae": str(out), "window": window, "stride": stride,
                      "final_loss": ae.meta["final_loss"], "elapsed_s": round(time.perf_counter() - t0, 1)}))
    return out


# ----------------------------------------------------------------------------- evaluation
def resolved_sampling(generate_module, bundle, opts) -> dict[str, Any]:
    """The sampler settings generation will use (defaults filled in from the run), for metrics.json."""
    r = generate_module.resolve_options(bundle, opts)
    out = {k: r[k] for k in ("sampler", "steps", "guidance", "eta", "overlap", "snap", "snap_steps", "smooth") if k in r}
    out["seed"] = int(opts.seed)
    return out


def evaluate_run(workdir: str, out: Path, *, split: str | None = None, eval_cfg=None, fgd_ae: str | None = None,
                 sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                 guidance: float | None = None, seed: int = 0, step: int | None = None, max_files: int = 0,
                 smooth_sigma: float | None = None,
                 data_root: str | None = None, baselines_only: bool = False,
                 save_motion: bool = False, bundle=None, with_baselines: bool = True,
                 truth_pipeline=None) -> dict:
    """Generate for every file of the split, score model + baselines, write metrics.json/png.

    with_baselines=False scores the model only (the compare command scores the baselines once).
    truth_pipeline: the motion pipeline (MotionPipeline or PositionPipeline) whose round trip
    gives the ground truth and the baselines; None = the run's own. The compare command passes
    the first run's, so runs of methods with other motion representations are all scored
    against the same real positions.

    bundle: an already loaded InferenceBundle (config, model, pipeline, manifest, step); None
    loads WORKDIR's checkpoint (`step`, default latest). The split's file list always comes
    from WORKDIR/data/manifest.json.
    """
    from gesture_jax.eval import baselines
    from gesture_jax.eval.fgd_ae import load_fgd_autoencoder
    from gesture_jax.eval.joints import upper_body_joints
    from gesture_jax.eval.metrics import KA_KEYS, SUMMARY_KEYS, MetricConstants, evaluate_set, make_reference
    from gesture_jax.eval.plots import plot_evaluation
    from gesture_jax.motion.kinematics import bvh_positions

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    wd = Path(workdir)
    manifest_path = wd / "data" / "manifest.json"
    manifest = _read_json(manifest_path)  # the run's copy of the prepared data's manifest
    if baselines_only:
        import ml_collections
        from gesture_jax.motion.representations import load_pipeline
        cfg = ml_collections.ConfigDict(_read_json(wd / "config.json"))
        pipeline = load_pipeline(wd / "data" / manifest["motion"].get("pipeline", "motion_pipeline"))
        ckpt_step = None
        bundle = None
    else:
        if bundle is None:
            from gesture_jax.generate import load_bundle
            bundle = load_bundle(wd, step, student=sampler == "student")
        cfg, pipeline, ckpt_step = bundle.config, bundle.pipeline, int(bundle.step)
    if eval_cfg is not None:
        with cfg.unlocked():
            cfg.eval = eval_cfg
    split = split or cfg.eval.get("split", "test")
    files = split_files(manifest, split, manifest_path)
    if max_files:
        files = files[:max_files]
    root = source_root(manifest, data_root, manifest_path)
    ids = [f["file_id"] for f in files]
    fps = float(pipeline.fps)
    constants = MetricConstants.from_config(cfg.eval, fps=fps, sample_rate=16000)
    ae = load_fgd_autoencoder(fgd_ae_dir(fgd_ae, cfg, workdir))
    if ae.meta.get("root_relative", True) != constants.root_relative:
        raise EvaluateError(f"{ae.meta['dir']} was trained with root_relative={ae.meta.get('root_relative')} "
                            f"but cfg.eval.root_relative={constants.root_relative}")
    if bool(ae.meta.get("heading_free", False)) != constants.heading_free:
        raise EvaluateError(f"{ae.meta['dir']} was trained with heading_free={ae.meta.get('heading_free', False)} "
                            f"but cfg.eval.heading_free={constants.heading_free}; retrain it with --train_fgd_ae")
    if ae.meta.get("joint_names") != list(pipeline.skeleton.names) or float(ae.meta["fps"]) != fps:
        raise EvaluateError(f"{ae.meta['dir']} was trained on another skeleton or frame rate "
                            f"({ae.meta.get('fps')} fps) than {wd} ({fps} fps); retrain it with --train_fgd_ae")
    names, parents = pipeline.skeleton.names, pipeline.skeleton.parents
    bc_joints = upper_body_joints(names, parents, list(cfg.eval.get("bc_joints", [])))

    hf = constants.heading_free
    truth = truth_pipeline if truth_pipeline is not None else pipeline
    if list(truth.skeleton.names) != list(names) or float(truth.fps) != fps:
        raise EvaluateError(f"{wd}: the ground-truth pipeline has another skeleton or frame rate "
                            f"({float(truth.fps)} fps) than the run's ({fps} fps)")
    real, waves = load_split_motion(truth, root, files, with_audio=True, heading_free=hf)
    timing["load_s"] = time.perf_counter() - t0

    sets: dict[str, list[np.ndarray]] = {}
    sampling: dict[str, Any] = {}
    if bundle is not None:
        from gesture_jax import generate
        opts = generate.SamplingOptions(sampler=sampler, steps=steps, eta=eta, guidance=guidance, seed=seed,
                                        smooth_sigma=smooth_sigma)
        sampling = resolved_sampling(generate, bundle, opts)
        t1 = time.perf_counter()
        bvhs = generate.generate_motion(bundle, waves, opts, progress=True)
        timing["generate_s"] = time.perf_counter() - t1
        gen = [bvh_positions(per_file[0], heading_free=hf).astype(np.float32) for per_file in bvhs]
        if save_motion:
            from gesture_jax.motion.bvh import write_bvh
            (out / "motion").mkdir(parents=True, exist_ok=True)
            for fid, per_file in zip(ids, bvhs):
                write_bvh(out / "motion" / f"{fid}.bvh", per_file[0])
        sets["model"] = gen

    # every set scored on the same frames: the shortest of ground truth and generation per file
    lengths = [min([len(real[i])] + [len(s[i]) for s in sets.values()]) for i in range(len(real))]
    real = [c[:n] for c, n in zip(real, lengths)]
    waves = [w[:int(round(n * 16000 / fps))] for w, n in zip(waves, lengths)]
    sets = {k: [c[:n] for c, n in zip(v, lengths)] for k, v in sets.items()}
    mismatched_ids: list[str] = []
    if with_baselines:
        sets["ground_truth"] = real
        mismatched_ids, pool = _mismatched_pool(manifest, manifest_path, split, files, truth, root, hf)
        sets["mismatched"] = baselines.mismatched(real, pool)
        sets["mean_pose"] = baselines.mean_pose(real, ae.mean_pose)
        sets["random_noise"] = baselines.random_noise(
            real, truth.feature_dim, lambda f: bvh_positions(truth.inverse(f), heading_free=hf), seed=seed)
    if not sets:
        raise EvaluateError("nothing to score: baselines_only together with with_baselines=False")

    t1 = time.perf_counter()
    reference = make_reference(real, constants, ae, bc_joints)
    results = {name: evaluate_set(clips, waves, reference, constants, mean_speed=ae.mean_speed,
                                  bc_joints=bc_joints, ae=ae, file_ids=ids)
               for name, clips in sets.items()}
    timing["metrics_s"] = time.perf_counter() - t1
    keys = SUMMARY_KEYS + KA_KEYS
    report = {
        "workdir": str(wd), "split": split, "checkpoint_step": ckpt_step, "sampling": sampling,
        "files": ids, "frames": lengths, "fps": fps, "mismatched_from": mismatched_ids,
        "constants": constants.to_dict(),
        "fgd_autoencoder": {k: ae.meta.get(k) for k in ("dir", "window", "stride", "latent", "hidden", "steps",
                                                         "final_loss", "seed", "train_windows", "dataset")},
        "bc_joints": [names[j] for j in bc_joints],
        "speed_hist_edges": reference.speed_edges,
        "summary": {name: {k: res[k] for k in keys} for name, res in results.items()},
        "sets": results,
    }
    if "model" in results:
        report.update({k: results["model"][k] for k in keys})
    report["baselines"] = {name: {k: results[name][k] for k in keys} for name in results if name != "model"}
    report = _clean(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    plot_evaluation(out / "metrics.png", results, reference.speed_edges,
                    title=f"{wd.name} {split} step {ckpt_step} {sampling.get('sampler', '')} "
                          f"{sampling.get('steps', '')}")
    timing["total_s"] = time.perf_counter() - t0
    (out / "timing.json").write_text(json.dumps({k: round(v, 2) for k, v in timing.items()}, indent=1) + "\n")
    return report


def _print_table(report: dict) -> None:
    """The summary as two terminal tables: this project's metrics, then Kucherenko 2019's."""
    from gesture_jax.eval.metrics import KA_KEYS, SUMMARY_KEYS

    for keys in (SUMMARY_KEYS, KA_KEYS):
        print(f"{'set':14s}" + "".join(f"{k:>16s}" for k in keys))
        for name, row in report["summary"].items():
            print(f"{name:14s}" + "".join(f"{'nan' if row.get(k) is None else format(row[k], '.4g'):>16s}"
                                          for k in keys))


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1 and not FLAGS.compare:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint file at INFO
    try:
        if FLAGS.compare:  # --compare RUN_A RUN_B ... --out=DIR (eval/compare.py)
            from gesture_jax.eval.compare import TABLE_KEYS, CompareError, compare_runs, markdown_table
            from gesture_jax.eval.fgd_ae import FGDAutoencoderError
            if FLAGS.workdir:
                raise EvaluateError("--compare takes the run directories as arguments, not --workdir")
            if len(argv) < 2 or not FLAGS.out:
                raise EvaluateError("usage: --compare RUN_A RUN_B ... --out=DIR (run directories and --out needed)")
            eval_cfg = _CONFIG.value.eval if _CONFIG.value is not None else None
            try:
                report = compare_runs(argv[1:], Path(FLAGS.out), names=FLAGS.names, split=FLAGS.split,
                                      eval_cfg=eval_cfg, fgd_ae=FLAGS.fgd_ae, data_root=FLAGS.data_root,
                                      max_files=FLAGS.max_files, step=FLAGS.step, sampler=FLAGS.sampler,
                                      steps=FLAGS.steps, eta=FLAGS.eta, guidance=FLAGS.guidance, seed=FLAGS.seed,
                                      smooth_sigma=FLAGS.smooth_sigma)
            except (CompareError, FGDAutoencoderError) as e:
                raise EvaluateError(str(e)) from e
            print(markdown_table(report["summary"], TABLE_KEYS, list(report["runs"])))
            print(f"wrote {Path(FLAGS.out) / 'metrics.json'}, metrics.md and metrics.png")
            return
        if FLAGS.train_fgd_ae:
            cfg = _CONFIG.value
            if cfg is None and FLAGS.workdir:
                import ml_collections
                cfg = ml_collections.ConfigDict(_read_json(Path(FLAGS.workdir) / "config.json"))
            if cfg is None:
                raise EvaluateError("--train_fgd_ae needs --config=configs/X.py (or --workdir of a run)")
            train_fgd_ae(cfg, FLAGS.workdir, FLAGS.fgd_ae, FLAGS.data_root)
            return
        if not FLAGS.workdir:
            raise EvaluateError("--workdir=RUN is required (or --train_fgd_ae --config=...)")
        out = Path(FLAGS.out) if FLAGS.out else Path(FLAGS.workdir) / "eval"
        eval_cfg = _CONFIG.value.eval if _CONFIG.value is not None else None
        report = evaluate_run(FLAGS.workdir, out, split=FLAGS.split, eval_cfg=eval_cfg, fgd_ae=FLAGS.fgd_ae,
                              sampler=FLAGS.sampler, steps=FLAGS.steps, eta=FLAGS.eta, guidance=FLAGS.guidance,
                              seed=FLAGS.seed, step=FLAGS.step, max_files=FLAGS.max_files,
                              data_root=FLAGS.data_root, baselines_only=FLAGS.baselines_only,
                              save_motion=FLAGS.save_motion, smooth_sigma=FLAGS.smooth_sigma)
        _print_table(report)
        print(f"wrote {out / 'metrics.json'} and {out / 'metrics.png'}")
    except Exception as e:  # noqa: BLE001 - your files/runs: one line, exit 2 (--verbose: traceback)
        if not errors.is_user_error(e):
            raise
        sys.exit(errors.report(e, FLAGS.verbose))


if __name__ == "__main__":
    app.run(main)
