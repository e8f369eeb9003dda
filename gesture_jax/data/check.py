"""Check a prepared data folder against a config before spending compute on it.

    python -m gesture_jax.data.check --config=configs/demo.py [--config.data.out=DIR] [--full]

Prints one JSON object (counts, dims, shards) and exits 0, or prints the problem and exits
1. Without ``--full`` it does what every training start does (manifest vs config; each
shard present, of the recorded size and record count, first and last records decodable:
seconds). ``--full`` also reads and decodes every record (ArrayRecord's checksums catch
damage in the middle of a shard, which the quick check cannot see).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import ml_collections

from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import records, shards


def check_prepared(cfg: ml_collections.ConfigDict, *, full: bool = False,
                   data_out: str | Path | None = None) -> dict[str, Any]:
    """Raise ManifestError / ShardError / RecordError on the first problem; else a summary."""
    out = Path(data_out or cfg.data.out)
    m = manifest_lib.load_manifest(out, cfg)
    T, F, A = m["window_frames"], m["motion"]["feature_dim"], m["audio"]["dim"]
    summary: dict[str, Any] = {"data_out": str(out), "motion_dim": F, "audio_dim": A, "window_frames": T,
                               "fps": m["fps"], "counts": m["counts"], "full": full, "shards": {}}
    for split, info in m["splits"].items():
        if info["num_windows"] == 0:
            summary["shards"][split] = 0
            continue
        paths = manifest_lib.check_split(out, m, split)
        summary["shards"][split] = len(paths)
        if full:
            for p in paths:
                for i, raw in enumerate(shards.read_records(p)):
                    try:
                        w = records.decode_window(raw)
                    except records.RecordError as e:
                        raise shards.ShardError(f"{p}: record {i}: {e}") from e
                    if w["motion"].shape != (T, F) or w["audio"].shape != (T, A):
                        raise manifest_lib.ManifestError(
                            f"{p}: record {i} has motion {w['motion'].shape} audio {w['audio'].shape}, "
                            f"manifest says ({T},{F}) and ({T},{A})")
    return summary


def main(argv) -> None:
    del argv
    try:
        summary = check_prepared(_CONFIG.value, full=_FULL.value)
    except (manifest_lib.ManifestError, shards.ShardError, records.RecordError) as e:
        print(f"gesture_jax.data.check: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(summary))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config", lock_config=True)
    _FULL = flags.DEFINE_bool("full", False, "read and decode every record")
    flags.mark_flag_as_required("config")
    app.run(main)
