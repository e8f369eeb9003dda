"""Grain pipeline over prepared shards: resumable state, per-process halves, bad input.

Uses a small prepared folder written with the same helpers data_prep.prepare uses (no
motion/audio processing), so these tests run in seconds.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import demo
from gesture_jax.data import manifest as manifest_lib
from gesture_jax.data import pipeline, records, shards

T, F, A = 80, 6, 5  # demo window: 4 s at 20 fps


def _cfg(out: Path, **data):
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.out = str(out)
        cfg.audio.n_mels = A
        for k, v in data.items():
            cfg.data[k] = v
    return cfg


def _audio(i: int) -> np.ndarray:
    """Audio [T, A] of window i: channel 0 = frame index, the others i (exact in float16 below 2048)."""
    a = np.full((T, A), i, np.float16)
    a[:, 0] = np.arange(T)
    return a


def make_prepared(out: Path, n_train: int = 37, n_test: int = 5, per_shard: int = 10, **data):
    """A prepared folder whose window i has motion i + frame/1000 and audio (frame, i, i, ...):
    every value names its window and frame, so batches and crops can be traced back."""
    cfg = _cfg(out, **data)
    out.mkdir(parents=True, exist_ok=True)
    (out / manifest_lib.PIPELINE_DIR).mkdir(exist_ok=True)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        recs = [records.encode_window({
            "motion": np.full((T, F), i, np.float32) + np.arange(T, dtype=np.float32)[:, None] / 1000,
            "audio": _audio(i),
            "file_id": f"f{i // 4}", "start_frame": (i % 4) * 40, "mirrored": False}) for i in range(n)]
        info = shards.write_split_shards(out, split, recs, per_shard)
        splits[split] = {"num_windows": n, "shards": info, "files": []}
    m = manifest_lib.new_manifest(cfg, feature_names=[f"f{i}" for i in range(F)], audio_feature="mel",
                                  audio_dim=A, splits=splits, skipped=[], source_root="src")
    manifest_lib.save_manifest(out, m)
    return cfg


def _ids(batch) -> list[int]:
    return [int(round(x)) for x in batch["motion"][:, 0, 0]]


def test_batches_shapes_and_epoch_coverage(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    it = pipeline.make_iterator(cfg, "train", batch_size=4, seed=0, process_index=0, process_count=1)
    b = next(it)
    assert b["motion"].shape == (4, T, F) and b["motion"].dtype == np.float32
    assert b["audio"].shape == (4, T, A) and b["audio"].dtype == np.float32
    # one epoch without shuffle visits every window once, in order
    it = pipeline.make_iterator(cfg, "train", batch_size=1, seed=0, process_index=0, process_count=1,
                                num_epochs=1, shuffle=False)
    assert [_ids(b)[0] for b in it] == list(range(37))
    # shuffled epochs are permutations, different per epoch
    it = pipeline.make_iterator(cfg, "train", batch_size=37, seed=3, process_index=0, process_count=1)
    e1, e2 = _ids(next(it)), _ids(next(it))
    assert sorted(e1) == sorted(e2) == list(range(37)) and e1 != e2


def test_restore_state_gives_same_next_batches(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    kw = dict(batch_size=5, seed=7, process_index=0, process_count=1)
    it = pipeline.make_iterator(cfg, "train", **kw)
    for _ in range(9):  # crosses an epoch boundary (37 windows)
        next(it)
    state = it.get_state()
    json.dumps(state)  # JSON-able: goes into an Orbax checkpoint as is
    expected = [_ids(next(it)) for _ in range(6)]
    fresh = pipeline.make_iterator(cfg, "train", **kw)
    fresh.set_state(state)
    assert [_ids(next(fresh)) for _ in range(6)] == expected


def test_restore_through_grain_orbax_handler(tmp_path):
    import grain
    import orbax.checkpoint as ocp
    cfg = make_prepared(tmp_path / "d")
    kw = dict(batch_size=4, seed=1, process_index=0, process_count=1)
    it = pipeline.make_iterator(cfg, "train", **kw)
    next(it), next(it)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt", item_handlers={"data": grain.checkpoint.CheckpointHandler()})
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = [_ids(next(it)) for _ in range(3)]
    fresh = pipeline.make_iterator(cfg, "train", **kw)
    mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert [_ids(next(fresh)) for _ in range(3)] == expected


def test_two_processes_read_disjoint_halves(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    seen = []
    for pi in range(2):
        it = pipeline.make_iterator(cfg, "train", batch_size=1, seed=5, process_index=pi, process_count=2,
                                    num_epochs=1)
        seen.append([_ids(b)[0] for b in it])
    assert len(seen[0]) == len(seen[1]) == 18  # 37 // 2: equal steps on every host
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 36


def test_process_index_and_count_default_to_jax(tmp_path, monkeypatch):
    """What tests/test_data_pipeline_distributed.py checks with two real JAX processes (slow), with
    jax.process_index/process_count patched: each process, asking JAX who it is, reads its own
    disjoint, equally long half of the split."""
    import jax
    cfg = make_prepared(tmp_path / "d")
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    seen = []
    for pi in range(2):
        monkeypatch.setattr(jax, "process_index", lambda pi=pi: pi)
        got = [_ids(b)[0] for b in pipeline.make_iterator(cfg, "train", batch_size=1, seed=5, num_epochs=1)]
        want = [_ids(b)[0] for b in pipeline.make_iterator(cfg, "train", batch_size=1, seed=5, num_epochs=1,
                                                            process_index=pi, process_count=2)]
        assert got == want
        seen.append(got)
    assert len(seen[0]) == len(seen[1]) == 18 and not set(seen[0]) & set(seen[1])


def test_random_crop_keeps_motion_and_audio_aligned(tmp_path):
    """Motion and audio carry their frame index: a crop is frames [o, o + 40) of both, of one window."""
    cfg = make_prepared(tmp_path / "d", random_crop_s=2.0)
    b = next(pipeline.make_iterator(cfg, "train", batch_size=16, seed=0, process_index=0, process_count=1))
    assert b["motion"].shape == (16, 40, F) and b["audio"].shape == (16, 40, A)
    motion_frames = np.round((b["motion"][:, :, 0] % 1) * 1000).astype(int)   # [B, 40]
    audio_frames = b["audio"][:, :, 0].astype(int)                             # [B, 40]
    offsets = motion_frames[:, 0]                                              # [B]
    np.testing.assert_array_equal(motion_frames, offsets[:, None] + np.arange(40))  # contiguous
    np.testing.assert_array_equal(audio_frames, motion_frames)                      # same offset
    np.testing.assert_array_equal(b["audio"][:, :, 1], np.floor(b["motion"][:, :, 0]))  # same window
    assert len(set(offsets.tolist())) > 3 and (offsets <= T - 40).all()
    assert pipeline.dataset_info(cfg)["window_frames"] == 40
    # evaluation splits are not cropped
    bt = next(pipeline.make_iterator(cfg, "test", batch_size=2, seed=0, process_index=0, process_count=1))
    assert bt["motion"].shape[1] == T


def test_grain_worker_processes_match_in_process_and_resume(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    kw = dict(batch_size=4, seed=2, process_index=0, process_count=1)
    ref = [_ids(b) for _, b in zip(range(4), pipeline.make_iterator(cfg, "train", **kw))]
    with cfg.unlocked():
        cfg.data.grain_workers = 1
    it = pipeline.make_iterator(cfg, "train", **kw)
    assert [_ids(next(it)) for _ in range(2)] == ref[:2]
    state = it.get_state()  # worker processes' positions are part of the state
    assert [_ids(next(it)) for _ in range(2)] == ref[2:]
    fresh = pipeline.make_iterator(cfg, "train", **kw)
    fresh.set_state(state)
    assert [_ids(next(fresh)) for _ in range(2)] == ref[2:]


# ------------------------------------------------------------------------------ bad input

def test_missing_shard_is_a_clear_error(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    os.remove(tmp_path / "d" / shards.shard_name("train", 1, 4))
    with pytest.raises(shards.ShardError, match="train-00001-of-00004.array_record.*missing"):
        pipeline.make_iterator(cfg, "train", batch_size=2, seed=0, process_index=0, process_count=1)


def test_corrupt_shard_is_a_clear_error(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    p = tmp_path / "d" / shards.shard_name("train", 2, 4)
    data = bytearray(p.read_bytes())
    p.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(shards.ShardError, match="truncated or corrupt"):
        pipeline.make_iterator(cfg, "train", batch_size=2, seed=0, process_index=0, process_count=1)
    data[100:140] = b"\xff" * 40  # same size, garbled content
    p.write_bytes(bytes(data))
    with pytest.raises((shards.ShardError, manifest_lib.ManifestError), match="train-00002"):
        pipeline.make_iterator(cfg, "train", batch_size=2, seed=0, process_index=0, process_count=1)


@pytest.mark.parametrize("key,value,match", [
    ("fps", 30, "fps"), ("window_s", 8.0, "window"), ("joints", ["Hips"], "joints")])
def test_manifest_config_mismatch(tmp_path, key, value, match):
    make_prepared(tmp_path / "d")
    cfg = _cfg(tmp_path / "d", **{key: value})
    with pytest.raises(manifest_lib.ManifestError, match=match):
        pipeline.make_iterator(cfg, "train", batch_size=2, seed=0, process_index=0, process_count=1)


def test_audio_feature_mismatch_and_bad_manifest(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    with cfg.unlocked():
        cfg.audio.n_mels = 80
    with pytest.raises(manifest_lib.ManifestError, match="n_mels"):
        pipeline.dataset_info(cfg)
    (tmp_path / "d" / "manifest.json").write_text("{not json")
    with pytest.raises(manifest_lib.ManifestError, match="not valid JSON"):
        pipeline.dataset_info(cfg)
    with pytest.raises(manifest_lib.ManifestError, match="does not exist"):
        pipeline.dataset_info(_cfg(tmp_path / "nowhere"))


def test_motion_pipeline_of_another_preparation_is_a_clear_error(tmp_path):
    cfg = make_prepared(tmp_path / "d")
    (tmp_path / "d" / "motion_pipeline" / "pipeline.json").write_text(json.dumps({"feature_dim": F + 1}))
    with pytest.raises(manifest_lib.ManifestError, match="another preparation"):
        pipeline.dataset_info(cfg)


def test_empty_split_is_a_clear_error(tmp_path):
    cfg = make_prepared(tmp_path / "d", n_test=0)
    with pytest.raises(manifest_lib.ManifestError, match="split 'test' is empty"):
        pipeline.make_iterator(cfg, "test", batch_size=2, seed=0, process_index=0, process_count=1)
    with pytest.raises(manifest_lib.ManifestError, match="no split 'val'"):
        pipeline.make_iterator(cfg, "val", batch_size=2, seed=0, process_index=0, process_count=1)


def test_check_command_quick_and_full(tmp_path):
    from gesture_jax.data import check
    cfg = make_prepared(tmp_path / "d")
    s = check.check_prepared(cfg, full=True)
    assert s["counts"] == {"train": 37, "test": 5} and s["shards"] == {"train": 4, "test": 1}
    # damage inside a middle record: the quick check (first/last records) cannot see it, --full can
    p = tmp_path / "d" / shards.shard_name("train", 1, 4)
    raw5 = shards.read_records(p)[5]
    data = bytearray(p.read_bytes())
    at = data.find(raw5) + len(raw5) // 2
    data[at:at + 8] = b"\x00" * 8
    p.write_bytes(bytes(data))
    check.check_prepared(cfg)
    with pytest.raises(shards.ShardError, match="train-00001-of-00004"):
        check.check_prepared(cfg, full=True)
    r = subprocess.run([sys.executable, "-m", "gesture_jax.data.check", "--config=configs/demo.py",
                        f"--config.data.out={tmp_path / 'd'}", f"--config.audio.n_mels={A}", "--full"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 1 and "train-00001-of-00004" in r.stderr and "Traceback" not in r.stderr
