"""Verify every checkpoint step of a run: ``python -m gesture_jax.training.check --workdir=RUN``.

For each step of ``RUN/checkpoints`` (and of every stage of a multi-stage method,
``RUN/stages/*/checkpoints``): each file against the step's ``checksums.json``, then (unless
``--no-finite``) every weight, EMA and optimizer array for NaN/inf, read as plain numpy arrays
whatever mesh wrote them. Prints one line per step and a JSON summary with ``--json``; exits
0 when every step is usable, 1 when any is damaged, 2 when RUN is not a training run.
Training resumes from the newest usable step by itself; this is for a look before copying,
evaluating or deleting runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from gesture_jax import errors
from gesture_jax.storage import Path
from gesture_jax.training import verify

_FINITE_ITEMS = ("params", "ema", "opt_state", "model_state")


class CheckError(errors.UserError, FileNotFoundError):
    """RUN is not a training run directory."""


def checkpoint_dirs(workdir: Path) -> dict[str, Path]:
    """{stage name ("" for a single-stage run): its checkpoints/ directory}."""
    out = {}
    if (workdir / "checkpoints").is_dir():
        out[""] = workdir / "checkpoints"
    stages = workdir / "stages"
    if stages.is_dir():
        for d in sorted(stages.iterdir()):
            if (d / "checkpoints").is_dir():
                out[d.name] = d / "checkpoints"
    return out


def nonfinite_items(step_dir: Path) -> list[str]:
    """'item/path' of every array holding NaN/inf (arrays restored as numpy, one item at a time)."""
    import jax
    import orbax.checkpoint as ocp
    bad = []
    for item in _FINITE_ITEMS:
        d = step_dir / item
        if not d.is_dir():
            continue
        ck = ocp.PyTreeCheckpointer()
        meta = ck.metadata(d)
        tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
        args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        restored = ck.restore(d, restore_args=args)
        for path, x in jax.tree_util.tree_flatten_with_path(restored)[0]:
            x = np.asarray(x)
            if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
                bad.append(f"{item}{jax.tree_util.keystr(path)}")
    return bad


def check_run(workdir: str | Path, finite: bool = True) -> list[dict]:
    """One row per step: {"stage", "step", "status": "ok"|"unverified"|"damaged", "problems"}."""
    workdir = Path(workdir)
    dirs = checkpoint_dirs(workdir)
    if not dirs:
        raise CheckError(f"{workdir}: no checkpoints/ (nor stages/*/checkpoints/): not a gesture_jax training run")
    rows = []
    for stage, ck in dirs.items():
        steps = [int(p.name) for p in ck.iterdir() if p.is_dir() and p.name.isdigit()]
        for rep in verify.verify_run_dir(ck, steps):
            problems = list(rep.problems)
            if rep.usable and finite:
                try:
                    problems += [f"{rep.path}: non-finite values in {p}" for p in nonfinite_items(rep.path)]
                except Exception as e:  # noqa: BLE001 - an unverified step Orbax cannot read
                    problems.append(f"{rep.path}: cannot be read ({type(e).__name__}: {errors.one_line(e)})")
            status = "damaged" if problems else ("unverified" if rep.unverified else "ok")
            rows.append({"stage": stage, "step": rep.step, "path": str(rep.path), "status": status,
                         "problems": problems})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gesture_jax.training.check", description=__doc__.split("\n\n")[0],
                                 epilog="Exit status: 0 all usable, 1 some damaged, 2 not a run.")
    ap.add_argument("--workdir", required=True, help="training run directory")
    ap.add_argument("--no-finite", dest="finite", action="store_false",
                    help="only compare checksums (skip reading the arrays for NaN/inf)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    a = ap.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        rows = check_run(a.workdir, finite=a.finite)
    except errors.UserError as e:
        return errors.report(e, a.verbose)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            where = f"{r['stage']}/" if r["stage"] else ""
            detail = "" if not r["problems"] else ": " + r["problems"][0] + (
                f" (+{len(r['problems']) - 1} more)" if len(r["problems"]) > 1 else "")
            print(f"{where}step {r['step']}: {r['status']}{detail}")
    damaged = [r for r in rows if r["status"] == "damaged"]
    if damaged:
        print(f"{len(damaged)} of {len(rows)} steps damaged; training resumes from the newest usable one "
              f"and moves damaged ones to checkpoints_rejected/", file=sys.stderr)
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
