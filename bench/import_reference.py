"""Importing a reference-shape Persona-Gestor checkpoint: time and peak memory.

    python bench/import_reference.py                # BEAT layout (F = 156), 934,520,220 parameters
    python bench/import_reference.py --motion_dim=75 --keep=/tmp/pg_ckpt

Writes a Lightning-like .ckpt of that shape (random weights in the reference's names and
layouts, plus pickled hyperparameters, written by torch.save), then runs the importer in a
fresh process (`python -m gesture_jax.methods.persona_gestor.import_reference`) and reports its
wall time and peak resident memory (ru_maxrss of the child) as JSON. Needs ~4 GB of disk and,
for the import itself, the memory it reports (~20 GB at this shape): run nothing else heavy
beside it.
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_checkpoint(path: Path, motion_dim: int, audio_dim: int) -> int:
    """A reference-shape checkpoint from our freshly initialised model; returns its parameter count."""
    from collections import OrderedDict

    import numpy as np
    import torch
    from flax import nnx

    from configs import beat
    from gesture_jax.methods.persona_gestor import reference as R
    from gesture_jax.models import build_denoiser, diffusion

    cfg = beat.get_config()
    with cfg.unlocked():
        cfg.model.null_cond = False
    model = build_denoiser(cfg.model, motion_dim, audio_dim, 400, nnx.Rngs(0))
    flat = R.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))))
    del model
    flat = {k: np.asarray(v) for k, v in flat.items()}
    sd = R.export_state_dict(flat, int(cfg.model.depth), diffusion.make_schedule(cfg.diffusion), 400)
    n = sum(int(v.size) for k, v in flat.items())
    del flat
    tsd = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in sd.items())   # writable copies
    del sd
    torch.save({"epoch": 1, "global_step": 1, "state_dict": tsd,
                "hyper_parameters": {"optimizer": functools.partial(torch.optim.AdamW, lr=2e-4)}}, path)
    return n


def write_manifest(directory: Path, motion_dim: int, audio_dim: int) -> None:
    """The prepared-data description the importer's --data needs (no records: generation only)."""
    from configs import beat
    from gesture_jax.audio.features import SAMPLE_RATE
    from gesture_jax.audio.wavlm.config import base_plus
    from gesture_jax.data import manifest as manifest_lib

    cfg = beat.get_config()
    directory.mkdir(parents=True, exist_ok=True)
    m = manifest_lib.new_manifest(cfg, feature_names=[f"f{i}" for i in range(motion_dim)], audio_feature="wavlm",
                                  audio_dim=audio_dim, splits={}, skipped=[], source_root="bench",
                                  audio_rate=SAMPLE_RATE / base_plus().hop)
    (directory / "manifest.json").write_text(json.dumps(m))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--motion_dim", type=int, default=156, help="F: 156 BEAT, 166 ZEGGS, 75 Trinity")
    ap.add_argument("--audio_dim", type=int, default=768, help="WavLM Base+ 768, Large 1024")
    ap.add_argument("--keep", default="", help="folder to keep the checkpoint and run in (default: a temp dir)")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="pg_import_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    ckpt, data, run = root / "reference.ckpt", root / "data", root / "run"
    try:
        t0 = time.perf_counter()
        n = write_checkpoint(ckpt, a.motion_dim, a.audio_dim)
        write_s = time.perf_counter() - t0
        write_manifest(data, a.motion_dim, a.audio_dim)
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "gesture_jax.methods.persona_gestor.import_reference",
                            "--config=configs/beat.py", f"--ckpt={ckpt}", f"--data={data}", f"--workdir={run}"],
                           cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = {"what": "import a reference-shape Lightning checkpoint (read tensors-only, map, check, write the run, "
                       "reload and compare)", "motion_dim": a.motion_dim, "parameters": n,
               "checkpoint_bytes": ckpt.stat().st_size, "write_checkpoint_s": round(write_s, 1),
               "import_s": round(wall, 1), "import_peak_rss_gib": round(peak_kb / 2 ** 20, 2),
               "returncode": p.returncode}
        if p.returncode != 0:
            out["stderr"] = p.stderr[-2000:]
        print(json.dumps(out, indent=1))
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
