"""gesture_jax.storage: one path type for disks and buckets (bucket parts against a local
GCS emulator, tests/gcs_emulator.py)."""
import json
import os

import numpy as np

from gesture_jax import storage

B = "gs://test-bucket"


def test_paths_keep_their_scheme_and_local_ones_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = storage.path("gs://b/runs/beat")
    assert os.fspath(p) == "gs://b/runs/beat" and os.fspath(p / "checkpoints") == "gs://b/runs/beat/checkpoints"
    assert os.fspath(p.parent) == "gs://b/runs" and p.name == "beat"
    assert storage.is_remote(p) and storage.is_remote("s3://b/x") and not storage.is_remote("runs/x")
    assert os.fspath(storage.path("runs/x")) == str(tmp_path / "runs" / "x")
    assert os.fspath(storage.path("~/x")) == os.path.expanduser("~/x")
    assert list(tmp_path.iterdir()) == []


def test_local_atomic_write_append_copy_move(tmp_path):
    f = tmp_path / "a" / "b.json"
    storage.write_atomic(f, "one")
    storage.write_atomic(f, b"two")
    assert f.read_text() == "two" and sorted(p.name for p in f.parent.iterdir()) == ["b.json"]
    storage.append_text(f, "\nthree")
    assert f.read_text() == "two\nthree"
    storage.copy_tree(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c" / "b.json").read_text() == "two\nthree"
    storage.move_tree(tmp_path / "c", tmp_path / "d" / "e")
    assert not (tmp_path / "c").exists() and (tmp_path / "d" / "e" / "b.json").is_file()
    assert storage.staged(f) == f and storage.size(f) == len("two\nthree")


def test_bucket_files_round_trip(gcs_bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = storage.path(f"{B}/unit/rt")
    storage.write_atomic(root / "x" / "one.txt", "1")
    storage.write_atomic(root / "x" / "y" / "two.bin", b"22")
    storage.append_text(root / "log.jsonl", "a\n")
    storage.append_text(root / "log.jsonl", "b\n")
    assert (root / "log.jsonl").read_text() == "a\nb\n"
    assert [os.fspath(p) for p in storage.walk_files(root)] == [
        f"{B}/unit/rt/log.jsonl", f"{B}/unit/rt/x/one.txt", f"{B}/unit/rt/x/y/two.bin"]
    assert [p.name for p in storage.walk_files(root, "*.bin")] == ["two.bin"]
    assert storage.size(root / "x" / "y" / "two.bin") == 2
    with storage.local_output(root / "v.mp4") as local:
        local.write_bytes(b"video")
    with storage.local_copy(root / "v.mp4") as local:
        assert local.read_bytes() == b"video" and not storage.is_remote(local)
    storage.copy_tree(root / "x", f"{B}/unit/rt2")
    storage.move_tree(f"{B}/unit/rt2", f"{B}/unit/rt3")   # buckets have no rename: copy, then delete
    assert not storage.path(f"{B}/unit/rt2").exists()
    assert storage.path(f"{B}/unit/rt3/y/two.bin").read_bytes() == b"22"
    assert list(tmp_path.iterdir()) == [], "a gs:// path made a local folder"


def test_staged_copy_is_reused_and_refreshed(gcs_bucket, tmp_path):
    src = storage.path(f"{B}/unit/staged/shard.array_record")
    storage.write_atomic(src, b"abc")
    a = storage.staged(src, cache=tmp_path)
    assert a.read_bytes() == b"abc" and tmp_path in a.parents
    a.write_bytes(b"xyz")                          # same size: trusted as the same file
    assert storage.staged(src, cache=tmp_path).read_bytes() == b"xyz"
    storage.write_atomic(src, b"abcdef")           # the bucket file changed size: fetched again
    assert storage.staged(src, cache=tmp_path).read_bytes() == b"abcdef"
    assert storage.staged(src, expected_size=6, cache=tmp_path) == a


def test_metrics_and_checksums_in_a_bucket(gcs_bucket, tmp_path, monkeypatch):
    from gesture_jax.training import verify
    from gesture_jax.training.metrics import MetricsWriter

    monkeypatch.chdir(tmp_path)
    run = f"{B}/unit/run"
    w = MetricsWriter(run, tensorboard=False)
    for s in (1, 2, 3):
        w.write(s, {"loss": float(s)})
    w.truncate_after(2)
    w.write(3, {"loss": 9.0})
    rows = [json.loads(l) for l in storage.path(f"{run}/metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 9.0)]

    step = storage.path(f"{run}/checkpoints/5")
    storage.write_atomic(step / "params" / "d" / "w", np.arange(10, dtype=np.float32).tobytes())
    storage.write_atomic(step / "meta.json", "{}")
    verify.write_checksums(step)
    assert verify.verify_step(step).ok
    storage.write_atomic(step / "params" / "d" / "w", np.arange(1, 11, dtype=np.float32).tobytes())
    rep = verify.verify_step(step)
    assert not rep.ok and "sha256 mismatch" in rep.problems[0] and f"{run}/checkpoints/5/params/d/w" in rep.problems[0]
    assert list(tmp_path.iterdir()) == []


def test_wavlm_checkpoint_in_a_bucket_extracts_the_same_features(gcs_bucket, tmp_path, monkeypatch):
    from flax import nnx

    from gesture_jax.audio.features import WavLMExtractor
    from gesture_jax.audio.wavlm.checkpoint import save_checkpoint
    from wavlm_testlib import random_flax_model, synthetic_speech, tiny_config

    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(num_hidden_layers=2)
    params = nnx.to_pure_dict(nnx.state(random_flax_model(cfg, seed=0)))
    local, remote = tmp_path / "wavlm", f"{B}/unit/wavlm"
    save_checkpoint(local, cfg, params, source={"kind": "test"})
    save_checkpoint(remote, cfg, params, source={"kind": "test"})
    assert storage.path(f"{remote}/config.json").is_file()
    wave = synthetic_speech(1.0)
    a = WavLMExtractor.from_checkpoint(str(local), layer=1, fps=20.0, progress=False)(wave)
    b = WavLMExtractor.from_checkpoint(remote, layer=1, fps=20.0, progress=False)(wave)
    np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wavlm"]
