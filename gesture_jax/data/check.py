"""Check a prepared data folder against a config before spending compute on it.

    python -m gesture_jax.data.check --config=configs/demo.py [--config.data.out=DIR] [--full]

Prints one JSON object (counts, dims, shards) and exits 0, or prints the problem and exits
1. Without ``--full`` it does what every training start does (manifest vs config; each
shard present, of the recorded size and record count, first and last records decodable:
seconds). ``--full`` also reads and decodes every record (ArrayRecord's checksums catch
damage in the middle of a shard, which the quick check cannot see; the error names the
shard and the record) and compares each shard's bytes with the sha256 that preparation
recorded in the manifest (manifests written before shards were hashed have none).
``data.out`` may be a bucket (``gs://...``): its shards are checked through their local
copies (see ``gesture_jax.data.pipeline``).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import ml_collections

from gesture_jax import storage
from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import pipeline, records, shards


def check_prepared(cfg: ml_collections.ConfigDict, *, full: bool = False,
                   data_out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Raise ManifestError / ShardError on the first problem; else a summary."""
    out = storage.path(data_out or cfg.data.out)
    m = manifest_lib.load_manifest(out, cfg)
    (T, F), (_, A) = manifest_lib.record_shapes(m)
    summary: dict[str, Any] = {"data_out": str(out), "motion_dim": F, "audio_dim": A, "window_frames": T,
                               "fps": m["fps"], "counts": m["counts"], "full": full, "shards": {}}
    for split, info in m["splits"].items():
        if info["num_windows"] == 0:
            summary["shards"][split] = 0
            continue
        source = pipeline.split_source(out, m, split)  # the quick check of every shard
        summary["shards"][split] = len(source.paths)
        if full:
            for index in range(len(source)):
                source[index]  # reads, decodes, checks shapes; a fault is a ShardError naming shard + record
            for p, local, s in zip(source.paths, source.local_paths, info["shards"]):
                verify_sha256(p, s, manifest_lib.repair_hint(m, out), local=local)
    return summary


def verify_sha256(path: str | os.PathLike, entry: dict[str, Any], fix: str,
                  local: str | os.PathLike | None = None) -> None:
    """ShardError unless ``path``'s bytes hash to the manifest's ``entry["sha256"]`` (if recorded);
    ``local``: a local copy of ``path`` to hash instead (a staged bucket shard)."""
    want = entry.get("sha256")
    if want is not None and (have := shards.sha256_file(local or path)) != want:
        raise shards.ShardError(f"{path}: sha256 {have[:12]}... differs from manifest.json's {want[:12]}...: "
                                f"the shard changed after preparation; {fix}", shard=path)


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
