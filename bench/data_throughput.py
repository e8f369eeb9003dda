"""Data-path throughput: preparation rate and Grain windows per second. Prints one JSON object.

    python bench/data_throughput.py                       # synthetic demo corpus in a temp dir
    python bench/data_throughput.py --config=configs/zeggs.py --config.data.root=SRC \\
        --config.audio.feature=mel         # a real dataset (mel features)

Preparation rate = seconds of source audio prepared per wall-clock second: a cold run of
the command's code into an empty folder with data.num_workers processes (stats, fit,
features, windows, shards; includes worker start-up), then a warm run in this process
with one worker (the steady per-core rate). Grain rate = training windows
per second delivered as batches [B, T, F] by gesture_jax.data.pipeline (in-process and
with ``--grain_workers`` worker processes), after ``--warmup`` batches.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "dataset config", lock_config=False)
_BATCHES = flags.DEFINE_integer("batches", 200, "timed batches per Grain setting")
_WARMUP = flags.DEFINE_integer("warmup", 5, "untimed batches first")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "0 = train.batch_size of the config")
_GRAIN_WORKERS = flags.DEFINE_list("grain_workers", ["0", "2"], "Grain worker-process counts to time")
_WORKDIR = flags.DEFINE_string("workdir", "", "where to write corpus and shards (default: a temp dir)")


def _audio_seconds(root: Path) -> float:
    total = 0.0
    for p in root.rglob("*.wav"):
        try:
            with wave.open(str(p)) as w:
                total += w.getnframes() / w.getframerate()
        except (wave.Error, EOFError):
            pass
    return total


def main(argv) -> None:
    del argv
    from data_prep import prepare, synthetic
    from gesture_jax.data import pipeline

    cfg = _CONFIG.value
    work = Path(_WORKDIR.value or tempfile.mkdtemp(prefix="data_bench_"))
    result: dict = {"config": cfg.name, "cpu_count": os.cpu_count()}
    if cfg.data.dataset == "demo" or not cfg.data.root:
        cfg.data.root = str(work / "src")
        t0 = time.perf_counter()
        synthetic.generate_corpus(cfg.data.root, **synthetic.synthetic_settings(cfg))
        result["synthetic_corpus_s"] = round(time.perf_counter() - t0, 2)
    cfg.data.out = str(work / "prepared")
    src_s = _audio_seconds(Path(cfg.data.root))
    t0 = time.perf_counter()
    m = prepare.run_prepare(cfg, progress=False)
    prep_s = time.perf_counter() - t0
    result.update({"source_audio_s": round(src_s, 1), "prepare_wall_s": round(prep_s, 2),
                   "prepare_num_workers": cfg.data.num_workers or os.cpu_count(),
                   "prepare_source_s_per_s": round(src_s / prep_s, 2), "windows": m["counts"],
                   "motion_dim": m["motion"]["feature_dim"], "audio_dim": m["audio"]["dim"]})

    # the same again in this process (1 worker, libraries already imported): the steady
    # per-core rate, without the worker processes' start-up that dominates a small corpus
    cfg.data.out, workers = str(work / "prepared_warm"), cfg.data.num_workers
    cfg.data.num_workers = 1
    t0 = time.perf_counter()
    prepare.run_prepare(cfg, progress=False)
    warm_s = time.perf_counter() - t0
    cfg.data.out, cfg.data.num_workers = str(work / "prepared"), workers
    result.update({"prepare_warm_1proc_wall_s": round(warm_s, 2),
                   "prepare_warm_1proc_source_s_per_s": round(src_s / warm_s, 2)})

    bs = _BATCH_SIZE.value or cfg.train.batch_size
    grain = {}
    for nw in [int(x) for x in _GRAIN_WORKERS.value]:
        cfg.data.grain_workers = nw
        it = pipeline.make_iterator(cfg, "train", batch_size=bs, seed=0, process_index=0, process_count=1)
        for _ in range(_WARMUP.value):
            next(it)
        t0 = time.perf_counter()
        for _ in range(_BATCHES.value):
            b = next(it)
        dt = time.perf_counter() - t0
        grain[f"grain_workers={nw}"] = {"windows_per_s": round(_BATCHES.value * bs / dt, 1),
                                        "batches_per_s": round(_BATCHES.value / dt, 1)}
        del it
    result.update({"batch_size": bs, "batch_shape": {k: list(v.shape) for k, v in b.items()}, "grain": grain})
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
