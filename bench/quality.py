"""Quality of every sampler side by side, over sampling seeds, on a run's held-out files.

    python bench/quality.py --workdir=runs/demo/run --fgd_ae=runs/demo/data/fgd_ae \
        --samplers=ddpm:1000,dpm-solver++:20,student:1,student:2 --seeds=0,1,2 [--out=DIR]

(an item is sampler[:steps[:eta[:smooth_sigma]]], e.g. dpm-solver++:10:0 for the deterministic
ODE solver, student:2::1.5 for the 2-step student smoothed with a 1.5-frame Gaussian)

Each sampler:steps pair is scored by `gesture_jax.evaluate.evaluate_run` (the same code as
`python -m gesture_jax.evaluate`) once per seed, with the teacher's bundle or, for
`student`, the distilled student's (train it with --config.train.stage=distill). Prints JSON:
per sampler the per-seed FGD, BC, jerk and mean joint speed, their means, the mismatched-audio
baseline, and whether the sampler is within 5 % FGD and 0.01 BC of the first one (the
reference: put DDPM-1000 first). Writes each evaluation's metrics.json under --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

KEYS = ("fgd", "bc", "jerk", "l1div")


def parse_samplers(text: str) -> list[tuple[str, int | None, float | None]]:
    """"name[:steps[:eta[:smooth_sigma]]]" items, comma-separated."""
    out = []
    for item in text.split(","):
        name, steps, eta, smooth = (item.strip().split(":") + ["", "", ""])[:4]
        out.append((name, int(steps) if steps else None, float(eta) if eta else None,
                    float(smooth) if smooth else None))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--fgd_ae", default=None, help="FGD autoencoder directory (default: evaluate's lookup)")
    ap.add_argument("--samplers", default="ddpm:1000,dpm-solver++:20,student:1,student:2")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--student_step", type=int, default=None, help="student checkpoint (default: latest)")
    ap.add_argument("--raw_weights", action="store_true", help="the student's raw weights instead of its EMA")
    ap.add_argument("--out", default=None, help="folder for the metrics.json files (default: WORKDIR/quality)")
    a = ap.parse_args(argv)

    from gesture_jax.evaluate import evaluate_run
    from gesture_jax.generate import load_bundle

    out = Path(a.out or Path(a.workdir) / "quality")
    seeds = [int(s) for s in a.seeds.split(",")]
    bundles: dict[bool, object] = {}
    rows: dict[str, dict] = {}
    mismatched: list[dict] = []
    for sampler, steps, eta, smooth in parse_samplers(a.samplers):
        student = sampler == "student"
        if student not in bundles:
            if student and a.raw_weights:
                from gesture_jax.training.inference import load_for_inference
                bundles[student] = load_for_inference(a.workdir, a.student_step, use_ema=False, student=True)
            else:
                bundles[student] = load_bundle(a.workdir, a.student_step if student else None, student=student)
        name = (f"{sampler}-{steps}" if steps else sampler) + (f"-eta{eta:g}" if eta is not None else "") + (
            f"-smooth{smooth:g}" if smooth is not None else "")
        per_seed = []
        t0 = time.perf_counter()
        for seed in seeds:
            m = evaluate_run(a.workdir, out / name / f"seed{seed}", split=a.split, fgd_ae=a.fgd_ae, sampler=sampler,
                             steps=steps, eta=eta, smooth_sigma=smooth, seed=seed, bundle=bundles[student], with_baselines=not rows)
            per_seed.append({k: float(m[k]) for k in KEYS})
            if not rows:
                mismatched.append({k: float(m["summary"]["mismatched"][k]) for k in KEYS})
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {per_seed[-1][k]:.4g}" for k in KEYS),
                  file=sys.stderr, flush=True)
        rows[name] = {"per_seed": per_seed, "mean": {k: float(np.mean([r[k] for r in per_seed])) for k in KEYS},
                      "checkpoint_step": int(bundles[student].step), "seconds": time.perf_counter() - t0}
    ref_name = next(iter(rows))
    ref = rows[ref_name]["mean"]
    mis = {k: float(np.mean([r[k] for r in mismatched])) for k in KEYS}
    for r in rows.values():
        mean = r["mean"]
        r["fgd_vs_reference"] = mean["fgd"] / ref["fgd"] - 1.0
        r["bc_vs_reference"] = mean["bc"] - ref["bc"]
        r["within_5pct_fgd_and_0.01_bc"] = bool(r["fgd_vs_reference"] <= 0.05 and r["bc_vs_reference"] >= -0.01)
        r["beats_mismatched"] = bool(mean["fgd"] < mis["fgd"] and mean["bc"] > mis["bc"])
    print(json.dumps({"workdir": a.workdir, "split": a.split, "seeds": seeds, "reference": ref_name,
                      "mismatched": mis, "samplers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
