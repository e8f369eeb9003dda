"""gs:// paths on the data side (issue #23), against a local GCS emulator (tests/gcs_emulator.py).

A tiny synthetic corpus is written straight into ``gs://test-bucket/...``, prepared from the
bucket into the bucket (worker processes included), rerun (a no-op), and its training windows
read through the input pipeline (shards staged to a local cache) must equal those of the same
corpus prepared on local disk. Every test runs with the working directory in a temporary
folder, so the old bug (``pathlib.Path("gs://b/x")`` is the local folder ``gs:/b/x``) would show
up as a folder named ``gs:`` there. Plus round trips of BVH, WAV, the motion pipeline and
shards through the bucket.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from configs import demo
from data_prep import prepare, synthetic
from gesture_jax import storage
from gesture_jax.data import check, pipeline, records, shards

BUCKET = "gs://test-bucket"


@pytest.fixture
def here(gcs_bucket, tmp_path, monkeypatch) -> Path:
    """cwd and the staging cache in a temporary folder; after the test, no ``gs:`` folder in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GESTURE_JAX_CACHE", str(tmp_path / "cache"))
    yield tmp_path
    stray = [p for p in tmp_path.rglob("gs:*")]
    assert not stray, f"a bucket URL became a local path: {stray}"


def _objects(prefix: str) -> dict[str, str]:
    """{object name: generation} under ``prefix`` (a rewrite changes the generation)."""
    import gcsfs
    fs = gcsfs.GCSFileSystem()
    fs.invalidate_cache()
    return {k: v["generation"] for k, v in fs.find(prefix.removeprefix("gs://"), detail=True).items()}


def _cfg(root: str, out: str, workers: int = 1):
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out = root, out
        cfg.data.num_workers, cfg.data.records_per_shard = workers, 6
    return cfg


def _windows(cfg) -> list[dict]:
    it = pipeline.make_iterator(cfg, "train", batch_size=1, seed=0, process_index=0, process_count=1,
                                num_epochs=1, shuffle=False, random_crop=False)
    return [{k: v[0] for k, v in b.items()} for b in it]


# ---------------------------------------------------------------------- end to end

def test_prepare_from_bucket_into_bucket_equals_local(here):
    root, out = f"{BUCKET}/e2e/corpus", f"{BUCKET}/e2e/prepared"
    # 2 training takes + 1 held-out take of 9 s: 3 training windows of 4 s (stride 2 s) each, 2 test (stride 4 s)
    stems = synthetic.generate_corpus(root, num_train=2, num_test=1, duration_s=9.0, seed=3)
    assert sorted(p.name for p in storage.path(root).iterdir()) == sorted(
        f"{s}.{e}" for s in stems for e in ("bvh", "wav", "onsets.json"))

    m = prepare.run_prepare(_cfg(root, out, workers=2), progress=False)  # worker processes read gcs too
    assert m["counts"] == {"train": 6, "test": 2} and m["source_root"] == root
    names = {p.name for p in storage.path(out).iterdir()}
    assert {"manifest.json", "motion_pipeline", "work", "train-00000-of-00001.array_record",
            "test-00000-of-00001.array_record"} <= names, names
    assert (storage.path(out) / "motion_pipeline" / "pipeline.json").is_file()
    assert json.loads((storage.path(out) / "manifest.json").read_text()) == m

    # rerun: nothing recomputed or rewritten except the manifest, which comes out the same
    before = _objects(out)
    m2 = prepare.run_prepare(_cfg(root, out), progress=False)
    assert m2.pop("config")["data"]["num_workers"] == 1 and m2 == {k: v for k, v in m.items() if k != "config"}
    after = _objects(out)
    manifest_key = out.removeprefix("gs://") + "/manifest.json"
    assert {k: v for k, v in after.items() if k != manifest_key} == {
        k: v for k, v in before.items() if k != manifest_key}

    # two machines sharing the bucket (--num_shards=2), each run as after giving up waiting
    # for the other (wait_s=0) and rerun, as documented: the same shards
    two = f"{BUCKET}/e2e/two_machines"
    run = lambda i: prepare.run_prepare(_cfg(root, two), num_shards=2, shard_index=i, wait_s=0,  # noqa: E731
                                        progress=False)
    with pytest.raises(prepare.PrepareError, match="training-file stats"):
        run(1)
    with pytest.raises(prepare.PrepareError, match="prepared files"):
        run(0)
    assert run(1) is None and run(0)["counts"] == m["counts"]
    for split in ("train", "test"):
        name = shards.shard_name(split, 0, 1)
        assert (storage.path(two) / name).read_bytes() == (storage.path(out) / name).read_bytes()

    # the same corpus on local disk gives the same windows, read through the same pipeline
    local_root, local_out = here / "corpus", here / "prepared"
    synthetic.generate_corpus(local_root, num_train=2, num_test=1, duration_s=9.0, seed=3)
    for s in stems:  # the bucket holds the same bytes
        assert (local_root / f"{s}.wav").read_bytes() == (storage.path(root) / f"{s}.wav").read_bytes()
    prepare.run_prepare(_cfg(str(local_root), str(local_out)), progress=False)
    remote, local = _windows(_cfg(root, out)), _windows(_cfg(str(local_root), str(local_out)))
    assert len(remote) == len(local) == 6
    for a, b in zip(remote, local):
        np.testing.assert_array_equal(a["motion"], b["motion"])
        np.testing.assert_array_equal(a["audio"], b["audio"])
    for split in ("train", "test"):
        name = shards.shard_name(split, 0, 1)
        assert (storage.path(out) / name).read_bytes() == (local_out / name).read_bytes()
    staged = sorted(p.name for p in (here / "cache").rglob("*.array_record"))
    assert staged == ["train-00000-of-00001.array_record"], staged  # the training reader's local copy
    summary = check.check_prepared(_cfg(root, out), full=True)  # every record and sha256, via local copies
    assert summary["data_out"] == out and summary["shards"] == {"train": 1, "test": 1}


# ------------------------------------------------------------------------ round trips

def test_bvh_round_trip_and_errors_name_the_url(here):
    from gesture_jax.motion.bvh import BVH, BVHError, read_bvh, write_bvh
    skel = synthetic.make_skeleton()
    frames = np.random.default_rng(0).normal(0, 10, (5, sum(len(c) for c in skel.channels)))
    url = f"{BUCKET}/bvh/take.bvh"
    write_bvh(url, BVH(skel, frames, 1 / 30))
    back = read_bvh(url)
    np.testing.assert_allclose(back.frames, frames, atol=1e-6)
    assert back.skeleton.names == skel.names
    with pytest.raises(BVHError, match=f"^{BUCKET}/bvh/missing.bvh: cannot read"):
        read_bvh(f"{BUCKET}/bvh/missing.bvh")
    storage.path(f"{BUCKET}/bvh/bad.bvh").write_text("HIERARCHY\nROOT Hips\n{\n")
    with pytest.raises(BVHError, match=f"^{BUCKET}/bvh/bad.bvh, line"):
        read_bvh(f"{BUCKET}/bvh/bad.bvh")


def test_audio_from_the_bucket_equals_local_and_errors_name_the_url(here):
    from gesture_jax.audio.io import AudioError, load_audio
    t = np.arange(16000 * 2) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    synthetic.write_wav(f"{BUCKET}/audio/tone.wav", wave)
    synthetic.write_wav(here / "tone.wav", wave)
    assert storage.path(f"{BUCKET}/audio/tone.wav").read_bytes() == (here / "tone.wav").read_bytes()
    np.testing.assert_array_equal(load_audio(f"{BUCKET}/audio/tone.wav", sr=8000), load_audio(here / "tone.wav", sr=8000))
    with pytest.raises(AudioError, match=f"^{BUCKET}/audio/none.wav: no such audio file"):
        load_audio(f"{BUCKET}/audio/none.wav")
    storage.path(f"{BUCKET}/audio/empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=f"^{BUCKET}/audio/empty.wav: empty file"):
        load_audio(f"{BUCKET}/audio/empty.wav")
    storage.path(f"{BUCKET}/audio/junk.wav").write_bytes(b"RIFF not a wav at all")
    with pytest.raises(AudioError, match=f"^{BUCKET}/audio/junk.wav: cannot be read as audio"):
        load_audio(f"{BUCKET}/audio/junk.wav")


def test_motion_pipeline_saved_into_and_loaded_from_the_bucket(here):
    from gesture_jax.motion.bvh import read_bvh
    from gesture_jax.motion.representations import load_pipeline, pipeline_from_config
    synthetic.generate_file(f"{BUCKET}/pipe", "demo_train_000", seed=0, duration_s=3.0)
    bvh = read_bvh(f"{BUCKET}/pipe/demo_train_000.bvh")
    for rep in ("expmap", "positions"):
        cfg = demo.get_config()
        with cfg.unlocked():
            cfg.data.representation = rep
        pipe = pipeline_from_config(cfg.data)
        pipe.fit([bvh])
        url = f"{BUCKET}/pipe/{rep}"
        pipe.save(url)
        assert {p.name for p in storage.path(url).iterdir()} == {"pipeline.json", "pipeline.npz"}
        back = load_pipeline(url)
        assert type(back) is type(pipe) and back.feature_names == pipe.feature_names
        np.testing.assert_array_equal(back.transform(bvh), pipe.transform(bvh))


def _shard_records(n: int) -> list[bytes]:
    return [records.encode_window({"motion": np.full((4, 2), i, np.float32), "audio": np.zeros((4, 3)),
                                   "file_id": f"f{i}", "start_frame": 0, "mirrored": False}) for i in range(n)]


def test_shards_in_the_bucket_write_read_check_and_stage(here):
    url = f"{BUCKET}/shards/train-00000-of-00001.array_record"
    recs = _shard_records(5)
    assert shards.write_records(url, recs) == 5
    assert shards.read_records(url) == recs and shards.count_records(url) == 5
    entry = shards.shard_entry(url, 5)
    assert entry["num_bytes"] == storage.size(url) and entry["sha256"] == shards.sha256_file(url)
    assert shards.stale_reason(url, 5, entry) is None and shards.stale_reason(url, 5) is None
    assert shards.check_shard(url, num_records=5, num_bytes=entry["num_bytes"], sha256=entry["sha256"]) == [
        recs[0], recs[4]]
    local = shards.local_shard(url, entry["num_bytes"], entry["sha256"])
    assert local.is_file() and str(local).startswith(str(here / "cache")) and local.read_bytes() == (
        storage.path(url).read_bytes())
    src = pipeline.WindowSource([url], [5], ((4, 2), (4, 3)), "fix it")  # stages on first read
    assert src[3]["motion"][0, 0] == 3 and src.local_paths[0] is not None
    with pytest.raises(shards.ShardError, match=f"^{BUCKET}/shards/nothing.array_record: file does not exist"):
        shards.read_records(f"{BUCKET}/shards/nothing.array_record")


def test_changed_bucket_shard_is_never_served_from_the_cache(here):
    """The local copy is checked against the manifest's sha256 when downloaded: a shard damaged
    in the bucket is reported (naming the bucket shard) and not kept; once repaired it is
    downloaded again."""
    url = f"{BUCKET}/stage/train-00000-of-00001.array_record"
    recs = _shard_records(6)
    shards.write_records(url, recs)
    good = shards.shard_entry(url, 6)
    raw = bytearray(storage.path(url).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, other bytes
    storage.path(url).write_bytes(bytes(raw))
    with pytest.raises(shards.ShardError, match=f"^{url}: sha256 .* differs from manifest.json's") as ei:
        shards.local_shard(url, good["num_bytes"], good["sha256"], "re-run it")
    assert ei.value.shard == storage.path(url) and os.fspath(ei.value.shard) == url
    assert not list((here / "cache").rglob("*.array_record"))  # the damaged copy is gone
    shards.write_records(url, recs)  # repaired (as a prepare rerun does)
    local = shards.local_shard(url, good["num_bytes"], good["sha256"])
    assert shards.read_records(local) == recs
