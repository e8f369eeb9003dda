"""Compare trained runs side by side: the same held-out files, autoencoder, constants and baselines.

    python -m gesture_jax.evaluate --compare RUN_A RUN_B [RUN_C ...] --out=DIR [--names=a,b,c]
        [--split=test --fgd_ae=DIR --data_root=DIR --max_files=N --step=N]
        [--sampler=ddim --steps=50 --seed=0 ...]   # the sampling flags apply to every run
        [--config=configs/X.py]                    # only its eval section: the constants for all

One table is only worth reading if every row was measured the same way, so:
- the held-out files are those of the first run's manifest (split from --split or its
  cfg.eval.split); every other run must list the same files (file id and source hashes) at the
  same fps on the same skeleton, else the command stops and names what differs;
- the source files are read from one folder (--data_root or the first run's source_root);
- the metric constants are the first run's cfg.eval (or --config's eval section) for all runs;
- the ground truth (and every baseline) is the held-out BVH through the first run's motion
  pipeline, for every row: a run whose method uses another representation (joint positions
  instead of exponential maps) is still scored against the same real positions;
- one FGD autoencoder scores every run: --fgd_ae, else the first run's default location, trained
  there once (on the first run's training split) when absent;
- the baselines (ground truth, mismatched audio, mean pose, noise) are scored once.
Each run is generated through gesture_jax.generate (load_bundle, generate_motion), which
dispatches on the run's cfg.method, and scored by `evaluate.evaluate_run` (DIR/runs/NAME/ holds
its own metrics.json and figure; DIR/baselines/ the baselines'), so nothing here knows methods
and a compared run scores exactly what a single evaluation of it scores (given the first run's
ground truth). DIR/metrics.json gathers every set, DIR/metrics.md is the table (rows: runs then
baselines; columns: the metrics) and DIR/metrics.png a bar chart per metric.

Run names are the workdirs' folder names unless --names is given; they must be distinct and
may not be a baseline's name.
"""
from __future__ import annotations

import dataclasses
import json
from gesture_jax import storage
from typing import Any, Mapping, Sequence

from gesture_jax.errors import UserError
from gesture_jax.eval.baselines import BASELINES
from gesture_jax.eval.metrics import KA_KEYS, SUMMARY_KEYS
from gesture_jax.storage import Path

# every scalar per set in metrics.json's summary; the table leaves out the ka_*_gt columns
# (the real motion's values, the same in every row: they are the ground_truth row's ka_jerk/ka_accel)
METRIC_KEYS = SUMMARY_KEYS + KA_KEYS
TABLE_KEYS = SUMMARY_KEYS + tuple(k for k in KA_KEYS if not k.endswith("_gt"))

# how to read each column (metrics.md's legend)
DIRECTION = {
    "fgd": "lower is better", "fgd_raw": "lower is better", "bc": "closer to ground truth",
    "l1div": "closer to ground truth", "jerk": "closer to ground truth (units/s³)",
    "acceleration": "closer to ground truth (units/s²)", "hellinger_speed": "lower is better",
    "ka_ape": "lower is better (units)", "ka_mae": "lower is better (units)",
    "ka_jerk": "closer to ground truth (units/frame³)", "ka_accel": "closer to ground truth (units/frame²)",
    "ka_hellinger": "lower is better", "ka_jerk_gt": "the real motion's ka_jerk",
    "ka_accel_gt": "the real motion's ka_accel",
}


def _evaluate_module():
    """gesture_jax.evaluate, the one already running when started as `python -m gesture_jax.evaluate`.

    Importing it a second time under its package name would define its absl flags twice (an
    error) and create a second EvaluateError class that the running main() does not catch.
    """
    import sys

    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "gesture_jax.evaluate":
        return main
    from gesture_jax import evaluate
    return evaluate


class CompareError(UserError, ValueError):
    """Runs that cannot be compared (the message names the run, the file and what differs)."""


def run_names(workdirs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """Row names: `names` when given, else each workdir's folder name; distinct, no baseline names."""
    if not workdirs:
        raise CompareError("--compare needs at least one run directory")
    if names:
        names = [str(n).strip() for n in names]
        if len(names) != len(workdirs):
            raise CompareError(f"--names gives {len(names)} names for {len(workdirs)} runs")
    else:
        names = [storage.path(w).name for w in workdirs]
    seen: dict[str, str] = {}
    for n, w in zip(names, workdirs):
        if not n:
            raise CompareError(f"empty run name for {w}")
        if n in BASELINES:
            raise CompareError(f"run name {n!r} ({w}) is a baseline's name; pass --names to rename it")
        if n in seen:
            raise CompareError(f"run name {n!r} is used by both {seen[n]} and {w}; pass --names=a,b,... "
                               f"to name them")
        seen[n] = str(w)
    return names


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """What must be equal between compared runs: the held-out files, frame rate and skeleton."""
    workdir: str
    manifest_path: Path
    files: tuple[tuple[str, str, str], ...]   # (file_id, bvh sha256 or path, wav sha256 or path)
    fps: float
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]


def held_out(workdir: str | Path, split: str, max_files: int = 0) -> HeldOut:
    """The held-out description of one run (its data/manifest.json and motion pipeline)."""
    ev = _evaluate_module()
    from gesture_jax.motion.representations import load_pipeline

    wd = Path(workdir)
    path = wd / "data" / "manifest.json"
    try:
        manifest = ev._read_json(path)
        entries = ev.split_files(manifest, split, path)
    except ev.EvaluateError as e:
        raise CompareError(str(e)) from e
    if max_files:
        entries = entries[:max_files]
    files = tuple((f["file_id"], f.get("sha256", {}).get("bvh") or f["bvh"], f.get("sha256", {}).get("wav") or f["wav"])
                  for f in entries)
    pipe_dir = wd / "data" / manifest.get("motion", {}).get("pipeline", "motion_pipeline")
    try:
        sk = load_pipeline(pipe_dir).skeleton
    except Exception as e:  # name the run whatever the loader raised
        raise CompareError(f"{pipe_dir}: cannot read the motion pipeline ({type(e).__name__}: {e})") from e
    return HeldOut(str(wd), path, files, float(manifest.get("fps", 0.0)), tuple(sk.names),
                   tuple(int(p) for p in sk.parents))


def check_same_held_out(first: HeldOut, other: HeldOut, split: str) -> None:
    """CompareError (one line) unless `other` has the same held-out files, fps and skeleton as `first`."""
    a = {f[0]: f for f in first.files}
    b = {f[0]: f for f in other.files}
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise CompareError(f"{other.manifest_path}: held-out split {split!r} differs from {first.workdir}'s "
                           f"(only in {first.workdir}: {only_a[:5]}{' ...' if len(only_a) > 5 else ''}; "
                           f"only in {other.workdir}: {only_b[:5]}{' ...' if len(only_b) > 5 else ''})")
    changed = sorted(k for k in a if a[k] != b[k])
    if changed:
        raise CompareError(f"{other.manifest_path}: held-out files {changed[:5]} have other sources (sha256 or "
                           f"path) than in {first.workdir}")
    if other.fps != first.fps:
        raise CompareError(f"{other.manifest_path}: fps {other.fps} differs from {first.workdir}'s {first.fps}")
    if (other.joint_names, other.parents) != (first.joint_names, first.parents):
        pairs = list(zip(zip(first.joint_names, first.parents), zip(other.joint_names, other.parents)))
        k = next((i for i, (x, y) in enumerate(pairs) if x != y), len(pairs))
        what = (f"joint {k} is {other.joint_names[k]!r} (parent {other.parents[k]}) there, "
                f"{first.joint_names[k]!r} (parent {first.parents[k]}) in the first run") if k < len(pairs) else "joint count"
        raise CompareError(f"{other.workdir}: the skeleton ({len(other.joint_names)} joints) differs from "
                           f"{first.workdir}'s ({len(first.joint_names)} joints; {what})")


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else format(float(v), ".4g")


def markdown_table(summary: Mapping[str, Mapping[str, Any]], keys: Sequence[str] = TABLE_KEYS,
                   runs: Sequence[str] = (), caption: str = "") -> str:
    """A markdown table: one row per set (runs first, then baselines in italics), one column per key."""
    lines = [caption, ""] if caption else []
    lines.append("| set | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---:|" * len(keys))
    for name, row in summary.items():
        label = name if name in runs else f"*{name}*"
        lines.append(f"| {label} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    lines += ["", "Columns: " + "; ".join(f"{k}: {DIRECTION[k]}" for k in keys if k in DIRECTION) + ".",
              "Rows in italics are the baselines; ka_ape/ka_mae are errors against the paired ground truth "
              "and mean nothing for the mismatched, mean-pose and noise baselines."]
    return "\n".join(lines) + "\n"


def ensure_fgd_ae(flag: str | None, cfg, workdir: str, data_root: str | None) -> Path:
    """The one FGD autoencoder every run is scored with; trained once (first run's data) when absent."""
    ev = _evaluate_module()

    d = ev.fgd_ae_dir(flag, cfg, workdir)
    if not (d / "meta.json").is_file():
        print(f"compare: no FGD autoencoder in {d}; training it once on {workdir}'s training split", flush=True)
        d = ev.train_fgd_ae(cfg, workdir, str(d), data_root)
    return Path(d)


def compare_runs(workdirs: Sequence[str | Path], out: str | Path, *, names: Sequence[str] | None = None,
                 split: str | None = None, eval_cfg=None, fgd_ae: str | None = None, data_root: str | None = None,
                 max_files: int = 0, step: int | None = None, sampler: str | None = None, steps: int | None = None,
                 eta: float | None = None, guidance: float | None = None, seed: int = 0,
                 smooth_sigma: float | None = None) -> dict:
    """Score every run and the baselines on the first run's held-out files; write metrics.json,
    metrics.md and metrics.png under `out`. Returns the metrics.json content.

    CompareError (one line naming the run) for a missing run directory, runs with other
    held-out files, fps or skeleton (checked before anything is generated), or a run without a
    trained model."""
    import ml_collections

    ev = _evaluate_module()
    from gesture_jax.eval.plots import plot_comparison

    workdirs = [str(w) for w in workdirs]
    names = run_names(workdirs, names)
    for w in workdirs:
        if not Path(w).is_dir():
            raise CompareError(f"run directory {w} does not exist")
    try:
        cfg = ml_collections.ConfigDict(ev._read_json(Path(workdirs[0]) / "config.json"))
    except ev.EvaluateError as e:
        raise CompareError(str(e)) from e
    if eval_cfg is not None:
        cfg.eval = eval_cfg
    split = split or cfg.eval.get("split", "test")
    first = held_out(workdirs[0], split, max_files)
    for w in workdirs[1:]:
        check_same_held_out(first, held_out(w, split, max_files), split)
    manifest0 = ev._read_json(first.manifest_path)
    root = str(ev.source_root(manifest0, data_root, first.manifest_path))
    ae_dir = ensure_fgd_ae(fgd_ae, cfg, workdirs[0], root)

    out = Path(out)
    common = dict(split=split, eval_cfg=cfg.eval, fgd_ae=str(ae_dir), data_root=root, max_files=max_files, seed=seed)
    from gesture_jax.generate import GenerateError, load_bundle
    from gesture_jax.methods import get_method, method_name
    from gesture_jax.motion.representations import load_pipeline

    manifest_pipe = manifest0.get("motion", {}).get("pipeline", "motion_pipeline")
    truth = load_pipeline(Path(workdirs[0]) / "data" / manifest_pipe)  # every row's ground truth
    reports: dict[str, dict] = {}
    for name, wd in zip(names, workdirs):
        print(f"compare: evaluating {name} ({wd})", flush=True)
        try:
            # a run whose method has a student uses it for --sampler=student; others ignore the option
            student = sampler == "student" and _has_student(wd)
            bundle = load_bundle(wd, step, student=student)  # generate's public loader: dispatches on cfg.method
            method = get_method(method_name(bundle.config))
            options, unused = method.split_options(dict(sampler=sampler, steps=steps, eta=eta, guidance=guidance,
                                                        smooth_sigma=smooth_sigma))
            if unused:
                print(f"compare: {name}: {', '.join('--' + k for k in unused)} not used (method {method.name!r} "
                      f"has no such option)", flush=True)
            reports[name] = ev.evaluate_run(wd, out / "runs" / name, bundle=bundle, with_baselines=False,
                                            truth_pipeline=truth, **options, **common)
        except (GenerateError, ev.EvaluateError) as e:
            raise CompareError(f"run {name} ({wd}): {e}") from e
        del bundle
    print("compare: scoring the baselines", flush=True)
    base = ev.evaluate_run(workdirs[0], out / "baselines", baselines_only=True, **common)

    sets = {name: r["sets"]["model"] for name, r in reports.items()}
    sets.update({b: base["sets"][b] for b in BASELINES})
    summary = {name: {k: s.get(k) for k in METRIC_KEYS} for name, s in sets.items()}
    notes = [f"{name}: scored on frames {r['frames']} (generation shorter than the ground truth), the baselines "
             f"on {base['frames']}" for name, r in reports.items() if r["frames"] != base["frames"]]
    report = {
        "split": split, "files": base["files"], "fps": base["fps"], "data_root": root,
        "constants": base["constants"], "fgd_autoencoder": base["fgd_autoencoder"], "bc_joints": base["bc_joints"],
        "runs": {name: {"workdir": wd, "checkpoint_step": reports[name]["checkpoint_step"],
                        "sampling": reports[name]["sampling"], "frames": reports[name]["frames"],
                        "details": f"runs/{name}/metrics.json"}
                 for name, wd in zip(names, workdirs)},
        "baselines": {"workdir": workdirs[0], "frames": base["frames"], "mismatched_from": base["mismatched_from"],
                      "details": "baselines/metrics.json"},
        "keys": list(METRIC_KEYS), "summary": summary, "sets": sets, "notes": notes,
        "speed_hist_edges": base["speed_hist_edges"],
    }
    report = ev._clean(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    caption = (f"{len(names)} run(s) on {len(base['files'])} held-out file(s) of split {split!r} "
               f"({base['fps']:g} fps); FGD autoencoder {ae_dir}")
    (out / "metrics.md").write_text(markdown_table(report["summary"], TABLE_KEYS, names, caption))
    plot_comparison(out / "metrics.png", report["summary"], TABLE_KEYS, runs=names,
                    title=f"{split}: {', '.join(names)}")
    return report


def _has_student(workdir) -> bool:
    """Whether the run's method has a few-step student (a bad workdir: False, load_bundle says why)."""
    from gesture_jax.methods import MethodError, get_method, method_name
    from gesture_jax.training.inference import RunError, load_config
    try:
        return get_method(method_name(load_config(workdir))).student_stage is not None
    except (RunError, MethodError):
        return False
