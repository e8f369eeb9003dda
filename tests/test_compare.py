"""`evaluate --compare`: several trained runs on the same held-out files, one table and figure.

The module fixture trains one tiny demo-shaped model for two steps on the synthetic corpus of
test_eval_cli's tiny run (through the training command line) and copies it under a second name
whose config smooths its samples (cfg.sample.smooth_sigma) and whose motion pipeline bends a
joint the data never moves (as a method with another motion representation would give other
ground-truth positions), so the two rows differ while files, autoencoder, constants, baselines,
seed and the ground truth (the first run's) are shared.
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from gesture_jax.eval import compare
from test_eval_cli import _tiny_run

TINY_MODEL = ["--config.model.depth=1", "--config.model.dim=16", "--config.model.heads=2",
              "--config.model.time_embed_dim=16", "--config.diffusion.num_steps=20",
              "--config.train.num_steps=2", "--config.train.checkpoint_every=2", "--config.train.eval_every=0",
              "--config.train.batch_size=4", "--config.train.warmup_steps=1", "--config.train.log_every=1",
              "--config.eval.bc_mask_frames=20", "--config.eval.fgd_ae_steps=20",
              "--config.eval.fgd_ae_hidden=8", "--config.eval.fgd_ae_latent=4"]


def _run(args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """{"a", "b": workdirs holding the same 2-step checkpoint, "root": tmp folder, "ae": FGD AE dir}."""
    root = tmp_path_factory.mktemp("compare")
    cfg, _, ae_dir = _tiny_run(root)
    a = root / "runs" / "a"
    p = _run(["-m", "gesture_jax.train", "--config=configs/demo.py", f"--workdir={a}",
              f"--config.data.root={cfg.data.root}", f"--config.data.out={cfg.data.out}", *TINY_MODEL])
    assert p.returncode == 0, p.stderr[-3000:]
    b = root / "runs" / "b"
    shutil.copytree(a, b)
    cfg_b = json.loads((b / "config.json").read_text())
    cfg_b["sample"]["smooth_sigma"] = 3.0   # the run's own default smoothing: another generator
    (b / "config.json").write_text(json.dumps(cfg_b))
    pipe = b / "data" / "motion_pipeline"
    names = json.loads((pipe / "pipeline.json").read_text())["raw_feature_names"]
    arrays = dict(np.load(pipe / "pipeline.npz"))
    i = names.index("Spine1_expmap_x")
    assert not arrays["keep"][i]               # constant in the data: the features never carry it
    arrays["const_values"][i] += 0.5           # b's round trip bends the spine by 0.5 rad
    np.savez(pipe / "pipeline.npz", **arrays)
    return {"a": a, "b": b, "root": root, "ae": ae_dir}


def test_run_names_default_to_folders_and_must_be_distinct(tmp_path):
    assert compare.run_names(["x/run_a", "y/run_b/"]) == ["run_a", "run_b"]
    assert compare.run_names(["x/run", "y/run"], ["one", "two"]) == ["one", "two"]
    with pytest.raises(compare.CompareError, match="'run' is used by both x/run and y/run"):
        compare.run_names(["x/run", "y/run"])
    with pytest.raises(compare.CompareError, match="2 names for 3 runs"):
        compare.run_names(["a", "b", "c"], ["p", "q"])
    with pytest.raises(compare.CompareError, match="baseline"):
        compare.run_names(["x/ground_truth"])


def test_markdown_table_rows_columns_and_missing_values():
    summary = {"m1": {"fgd": 1.23456, "bc": None}, "ground_truth": {"fgd": 0.0, "bc": 0.8}}
    md = compare.markdown_table(summary, ("fgd", "bc"), runs=["m1"], caption="cap")
    lines = md.splitlines()
    assert lines[0] == "cap"
    assert lines[2:6] == ["| set | fgd | bc |", "|---|---:|---:|", "| m1 | 1.235 | n/a |",
                          "| *ground_truth* | 0 | 0.8 |"]


def test_compare_two_runs_writes_metrics_table_and_figure(two_runs, tmp_path):
    out = tmp_path / "cmp"
    r = compare.compare_runs([two_runs["a"], two_runs["b"]], out, fgd_ae=str(two_runs["ae"]),
                             sampler="ddim", steps=2, seed=1)
    sets = ["a", "b", "ground_truth", "mismatched", "mean_pose", "random_noise"]
    assert sorted(p.name for p in out.iterdir()) == ["baselines", "metrics.json", "metrics.md", "metrics.png", "runs"]
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved["summary"]) == sorted(sets) and set(saved["sets"]) == set(sets)
    assert list(r["summary"]) == sets                                   # runs first, then baselines
    assert saved["runs"]["a"]["checkpoint_step"] == 2 and saved["runs"]["b"]["sampling"]["steps"] == 2
    assert saved["runs"]["a"]["sampling"]["smooth"] != saved["runs"]["b"]["sampling"]["smooth"]
    assert len(saved["files"]) == 2 and saved["constants"]["bc_mask_frames"] == 20
    for name in sets:
        assert set(compare.METRIC_KEYS) <= set(saved["summary"][name]), name
    # two generators, two rows: the smoothed run has less jerk; neither is a baseline's row
    a, b = saved["summary"]["a"], saved["summary"]["b"]
    assert a != b and b["ka_jerk"] < a["ka_jerk"] and b["jerk"] < a["jerk"]
    assert a["fgd_raw"] > 0 and a["ka_ape"] > 0 and b["ka_ape"] > 0
    assert all(a != saved["summary"][k] for k in sets[2:])
    gt = saved["summary"]["ground_truth"]
    # every row is scored against the first run's ground truth, not its own pipeline's
    assert not any(saved["notes"])
    for name in ("a", "b"):
        assert (saved["summary"][name]["ka_jerk_gt"], saved["summary"][name]["ka_accel_gt"]) == \
            (gt["ka_jerk"], gt["ka_accel"]), name
    assert gt["ka_ape"] == 0 and gt["fgd_raw"] == pytest.approx(0, abs=1e-6) and gt["ka_jerk"] == gt["ka_jerk_gt"]
    # each row is what a single evaluation of that run writes
    single = json.loads((out / "runs" / "a" / "metrics.json").read_text())
    assert single["summary"] == {"model": {k: saved["summary"]["a"][k] for k in single["summary"]["model"]}}
    base = json.loads((out / "baselines" / "metrics.json").read_text())
    assert base["sets"]["mean_pose"] == saved["sets"]["mean_pose"]
    # a single evaluation writes the KA metrics too, for the model and every baseline
    assert set(compare.METRIC_KEYS) <= set(single["summary"]["model"]) | set(single)
    for name in sets[2:]:
        assert set(compare.METRIC_KEYS) <= set(base["summary"][name]), name

    table = (out / "metrics.md").read_text().splitlines()
    rows = [ln for ln in table if ln.startswith("| ") and not ln.startswith("| set")]
    assert [ln.split("|")[1].strip() for ln in rows] == ["a", "b", "*ground_truth*", "*mismatched*",
                                                        "*mean_pose*", "*random_noise*"]
    header = next(ln for ln in table if ln.startswith("| set"))
    assert [c.strip() for c in header.split("|")[2:-1]] == list(compare.TABLE_KEYS)
    assert rows[0].split("|")[2:] != rows[1].split("|")[2:]
    png = (out / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_the_runs_pipelines_give_different_ground_truth(two_runs):
    """What makes the shared-ground-truth check above mean something: b's own round trip differs."""
    from gesture_jax import evaluate
    from gesture_jax.eval import kucherenko
    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.representations import load_pipeline

    man = json.loads((two_runs["a"] / "data" / "manifest.json").read_text())
    bvh = read_bvh(f"{man['source_root']}/{man['splits']['test']['files'][0]['bvh']}")
    pa, pb = (load_pipeline(two_runs[k] / "data" / "motion_pipeline") for k in "ab")
    ja, jb = (kucherenko.average_jerk([evaluate.canonical_positions(p, bvh)]) for p in (pa, pb))
    assert ja != pytest.approx(jb, rel=1e-3)


def test_compare_refuses_other_held_out_files_or_fps(two_runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(two_runs["b"], other, ignore=shutil.ignore_patterns("checkpoints"))
    man_path = other / "data" / "manifest.json"
    man = json.loads(man_path.read_text())
    dropped = man["splits"]["test"]["files"].pop()["file_id"]
    man_path.write_text(json.dumps(man))
    with pytest.raises(compare.CompareError, match=f"held-out split 'test' differs.*only in .*a: \\['{dropped}'\\]"):
        compare.compare_runs([two_runs["a"], other], tmp_path / "o", fgd_ae=str(two_runs["ae"]))
    man = json.loads((two_runs["b"] / "data" / "manifest.json").read_text())
    man["fps"] = 25.0
    man_path.write_text(json.dumps(man))
    with pytest.raises(compare.CompareError, match="fps 25.0 differs"):
        compare.compare_runs([two_runs["a"], other], tmp_path / "o", fgd_ae=str(two_runs["ae"]))
    man["fps"] = 20.0
    man["splits"]["test"]["files"][0]["sha256"]["bvh"] = "0" * 64
    man_path.write_text(json.dumps(man))
    with pytest.raises(compare.CompareError, match="other sources"):
        compare.compare_runs([two_runs["a"], other], tmp_path / "o", fgd_ae=str(two_runs["ae"]))
    shutil.copy(two_runs["b"] / "data" / "manifest.json", man_path)   # same files again, other skeleton
    pj = other / "data" / "motion_pipeline" / "pipeline.json"
    meta = json.loads(pj.read_text())
    meta["skeleton"]["names"][-1] = "LeftToeTip"
    pj.write_text(json.dumps(meta))
    with pytest.raises(compare.CompareError, match=f"^{other}: the skeleton \\(23 joints\\) differs from "
                                                   f"{two_runs['a']}'s \\(23 joints; joint 22 is 'LeftToeTip'"):
        compare.compare_runs([two_runs["a"], other], tmp_path / "o", fgd_ae=str(two_runs["ae"]))
    assert not (tmp_path / "o").exists()  # refused before anything is generated


def test_compare_command_line_errors_are_one_line(two_runs, tmp_path):
    dup = tmp_path / "x" / "a"
    shutil.copytree(two_runs["a"], dup, ignore=shutil.ignore_patterns("checkpoints"))
    p = _run(["-m", "gesture_jax.evaluate", "--compare", str(two_runs["a"]), str(dup), f"--out={tmp_path / 'o'}"])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: run name 'a' is used by both {two_runs['a']} and {dup}; "
                                             f"pass --names=a,b,... to name them"]
    p = _run(["-m", "gesture_jax.evaluate", "--compare", str(two_runs["a"])])
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: usage: --compare")
    h = _run(["-m", "gesture_jax.evaluate", "--help"])
    assert "--compare" in h.stdout and "metrics.md" in h.stdout and "--names" in h.stdout


def test_compare_names_a_missing_run_or_one_without_a_model(two_runs, tmp_path):
    missing = tmp_path / "nope"
    p = _run(["-m", "gesture_jax.evaluate", "--compare", str(two_runs["a"]), str(missing), f"--out={tmp_path / 'o'}"])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: run directory {missing} does not exist"]
    untrained = tmp_path / "untrained"
    shutil.copytree(two_runs["b"], untrained, ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(compare.CompareError, match=f"run untrained \\({untrained}\\): .*no checkpoint found"):
        compare.compare_runs([two_runs["a"], untrained], tmp_path / "o", fgd_ae=str(two_runs["ae"]),
                             sampler="ddim", steps=2)
