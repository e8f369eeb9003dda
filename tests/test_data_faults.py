"""Damaged prepared data: a clear error naming shard, record and command; a rerun repairs only that shard.

Two kinds of tiny data: ``make_prepared`` (test_data_pipeline: written with the shard
helpers, every window distinct) for the reading side, and a real ``data_prep.prepare`` run
on a small synthetic corpus (3 training takes + 1 held-out take of 12 s, mel features:
15 training windows in 3 shards of 5) for the repair side.
"""
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import demo
from data_prep import prepare, synthetic
from gesture_jax.data import check, pipeline, records, shards
from test_data_pipeline import _ids, make_prepared

REPO = Path(__file__).resolve().parents[1]
TRAIN_SHARDS = [shards.shard_name("train", i, 3) for i in range(3)]


def corrupt_record(path: Path, index: int) -> None:
    """Flip 8 bytes in the middle of record ``index``'s payload, keeping the file's size.

    The writer does not compress, so the record's bytes are in the file, though not in one
    piece when it spans a 64 KiB block boundary: find a 64-byte piece of its middle that
    occurs exactly once in the file."""
    raw = shards.read_records(path)[index]
    data = bytearray(path.read_bytes())
    for off in range(len(raw) // 2, len(raw) - 64, 64):
        piece = raw[off:off + 64]
        at = data.find(piece)
        if at >= 0 and data.find(piece, at + 1) < 0:
            data[at + 28:at + 36] = bytes(b ^ 0xFF for b in data[at + 28:at + 36])
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"no unique piece of record {index} found in {path}")


def read_all(cfg, split: str = "train") -> list[dict]:
    """Every window of ``split`` through the training input pipeline, in order."""
    it = pipeline.make_iterator(cfg, split, batch_size=1, seed=0, process_index=0, process_count=1,
                                num_epochs=1, shuffle=False, random_crop=False)
    return [{k: v[0] for k, v in b.items()} for b in it]


# ---------------------------------------------------------------------------- reading

@pytest.mark.parametrize("workers", [0, 1], ids=["threads", "grain_worker_process"])
def test_corrupt_record_is_a_shard_error_naming_shard_record_and_command(tmp_path, workers):
    cfg = make_prepared(tmp_path / "d", grain_workers=workers)  # 37 windows, shards of 10
    p = tmp_path / "d" / shards.shard_name("train", 1, 4)
    corrupt_record(p, 5)  # window 15
    got = []
    with pytest.raises(shards.ShardError) as ei:
        it = pipeline.make_iterator(cfg, "train", batch_size=1, seed=0, process_index=0, process_count=1,
                                    num_epochs=1, shuffle=False)  # the quick check cannot see it
        for b in it:
            got += _ids(b)
    e = ei.value
    assert got == list(range(15))  # every window before the damaged one arrived
    assert pipeline.data_error(e) is e and e.shard == p and e.record == 5
    msg = str(e)
    assert msg.startswith(f"{p}: record 5 is corrupt (") and "chunk data hash mismatch" in msg, msg
    assert msg.endswith(f"re-create it with: python -m data_prep.prepare --config=<your config> "
                        f"--config.data.out={tmp_path / 'd'} (only damaged shards are rewritten)"), msg
    assert "\n" not in msg
    # shuffled batches with read-ahead (as training reads): the same error
    it = pipeline.make_iterator(cfg, "train", batch_size=4, seed=1, process_index=0, process_count=1)
    with pytest.raises(shards.ShardError, match=r"train-00001-of-00004.array_record: record 5 is corrupt"):
        for _ in range(20):
            next(it)


def _rewrite_shard(path: Path, index: int, bad: bytes) -> dict:
    """Replace record ``index`` of ``path`` with ``bad`` (a valid ArrayRecord file) and
    return the manifest entry that matches it, so that only reading the record can tell."""
    recs = shards.read_records(path)
    recs[index] = bad
    shards.write_records(path, recs)
    return shards.shard_entry(path, len(recs))


@pytest.mark.parametrize("bad,match", [
    ("short", r"record 3 has motion \(79, 6\) audio \(79, 5\), manifest.json says \(80, 6\) and \(80, 5\)"),
    ("garbled", r"record 3 is corrupt \(record is not valid msgpack"),
])
def test_record_that_decodes_wrong_is_a_shard_error_naming_shard_and_record(tmp_path, bad, match):
    cfg = make_prepared(tmp_path / "d")
    p = tmp_path / "d" / shards.shard_name("train", 2, 4)
    raw = (records.encode_window({"motion": np.zeros((79, 6)), "audio": np.zeros((79, 5)), "file_id": "x",
                                  "start_frame": 0, "mirrored": False})
           if bad == "short" else b"\xc1" * 100)
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    m["splits"]["train"]["shards"][2] = _rewrite_shard(p, 3, raw)
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(shards.ShardError, match=match) as ei:
        read_all(cfg)
    assert ei.value.shard == p and ei.value.record == 3 and str(ei.value).startswith(f"{p}: record 3 ")
    with pytest.raises(shards.ShardError, match=match):  # and the full check says the same
        check.check_prepared(cfg, full=True)


def test_data_error_finds_the_shard_error_behind_a_wrapper():
    import pickle
    err = shards.ShardError("DATA/train-00000-of-00001.array_record: record 3 is corrupt (x)",
                            shard="DATA/train-00000-of-00001.array_record", record=3)
    back = pickle.loads(pickle.dumps(err))  # how a Grain worker process hands it over
    assert type(back) is shards.ShardError and str(back) == str(err)
    assert (back.shard, back.record) == (Path("DATA/train-00000-of-00001.array_record"), 3)
    try:
        try:
            raise back
        except shards.ShardError as inner:
            raise RuntimeError("worker failed") from inner
    except RuntimeError as wrapped:
        assert pipeline.data_error(wrapped) is back
    assert pipeline.data_error(ExceptionGroup("g", [ValueError(), back])) is back
    assert pipeline.data_error(RuntimeError("Worker process was terminated unexpectedly")) is None


# ----------------------------------------------------------------------------- repair

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults_src")
    synthetic.generate_corpus(root, num_train=3, num_test=1, duration_s=12.0, seed=2)
    return root


def _cmd(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "data_prep.prepare", "--config=configs/demo.py", f"--config.data.root={root}",
            f"--config.data.out={out}", "--config.data.num_workers=1", "--config.data.records_per_shard=5"]


def _cfg(root: Path, out: Path):
    cfg = demo.get_config()
    with cfg.unlocked():
        cfg.data.root, cfg.data.out = str(root), str(out)
        cfg.data.num_workers, cfg.data.records_per_shard = 1, 5
    return cfg


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory) -> Path:
    """Prepared by the command (so the manifest records it); tests work on copies."""
    out = tmp_path_factory.mktemp("faults_prepared") / "data"
    r = subprocess.run(_cmd(corpus, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in m["splits"]["train"]["shards"]] == TRAIN_SHARDS
    assert [s["num_records"] for s in m["splits"]["train"]["shards"]] == [5, 5, 5]
    return out


@pytest.fixture
def prepared(baseline, tmp_path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(baseline, out)
    return out


def _mtimes(out: Path) -> dict[str, tuple[int, int]]:
    """Shard name -> (mtime, inode): a rewrite (a new file renamed over the old) changes the
    inode even when it lands in the same clock tick as the damage the test did."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.glob("*.array_record")}


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.array_record"))}


def _rerun(corpus: Path, out: Path, capsys) -> list[str]:
    """prepare again in this process (run_prepare is the command's body); its [prepare] rewrote lines."""
    capsys.readouterr()
    prepare.run_prepare(_cfg(corpus, out), progress=False)
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[prepare] rewrote")]


def test_manifest_records_command_and_shard_hashes(corpus, baseline):
    m = json.loads((baseline / "manifest.json").read_text())
    assert m["prepare_command"] == shlex.join(["python", "-m", "data_prep.prepare", *_cmd(corpus, baseline)[3:]])
    for info in m["splits"].values():
        for s in info["shards"]:
            assert s["sha256"] == shards.sha256_file(baseline / s["path"])
            assert s["num_bytes"] == (baseline / s["path"]).stat().st_size


def test_cli_command_drops_the_multi_machine_flags():
    argv = ["/x/data_prep/prepare.py", "--config=configs/demo.py", "--num_shards", "2", "--shard_index=1",
            "--wait_s=60", "--config.data.out=my data"]
    assert prepare.cli_command(argv) == ("python -m data_prep.prepare --config=configs/demo.py "
                                         "'--config.data.out=my data'")


def test_the_command_in_the_error_rewrites_only_the_damaged_shard(corpus, tmp_path):
    out = tmp_path / "data"
    r = subprocess.run(_cmd(corpus, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = _cfg(corpus, out)
    original, before = _shard_bytes(out), _mtimes(out)
    windows = read_all(cfg)
    damaged = out / TRAIN_SHARDS[1]
    corrupt_record(damaged, 2)
    with pytest.raises(shards.ShardError) as ei:
        read_all(cfg)
    assert (ei.value.shard, ei.value.record) == (damaged, 2)
    msg = str(ei.value)
    assert msg.startswith(f"{damaged}: record 2 is corrupt (") and "re-create it with: python -m data_prep.prepare" in msg
    command = msg.split("re-create it with: ", 1)[1].removesuffix(" (only damaged shards are rewritten)")
    assert command == json.loads((out / "manifest.json").read_text())["prepare_command"]

    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "data_prep.prepare"]
    r = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("[prepare] rewrote")] == [
        f"[prepare] rewrote {damaged}: sha256 mismatch"]
    after = _mtimes(out)
    assert {k for k in before if after[k] != before[k]} == {damaged.name}  # the others untouched
    assert _shard_bytes(out) == original
    again = read_all(cfg)
    assert len(again) == len(windows) == 15
    for a, b in zip(again, windows):
        assert np.array_equal(a["motion"], b["motion"]) and np.array_equal(a["audio"], b["audio"])
    check.check_prepared(cfg, full=True)


def test_missing_shard_names_file_and_command(corpus, prepared, capsys):
    cfg = _cfg(corpus, prepared)
    gone = prepared / TRAIN_SHARDS[2]
    gone.unlink()
    with pytest.raises(shards.ShardError) as ei:
        pipeline.make_iterator(cfg, "train", batch_size=2, seed=0, process_index=0, process_count=1)
    command = json.loads((prepared / "manifest.json").read_text())["prepare_command"]
    assert str(ei.value) == (f"{gone}: shard listed in manifest.json is missing; re-create it with: {command} "
                             f"(only damaged shards are rewritten)")
    assert ei.value.shard == gone
    before = _mtimes(prepared)
    assert _rerun(corpus, prepared, capsys) == [f"[prepare] rewrote {gone}: missing"]
    after = _mtimes(prepared)
    assert {k for k in after if after[k] != before.get(k)} == {gone.name}
    assert len(read_all(cfg)) == 15


def test_rerun_replaces_resized_and_swapped_shards_and_check_full_verifies_hashes(corpus, baseline, prepared, capsys):
    cfg = _cfg(corpus, prepared)
    short, swapped = prepared / TRAIN_SHARDS[0], prepared / TRAIN_SHARDS[2]
    short.write_bytes(short.read_bytes() + b"\0" * 16)  # size differs: the quick check says so
    recs = shards.read_records(swapped)
    shards.write_records(swapped, recs[::-1])  # readable, same size and count, other bytes
    assert swapped.stat().st_size == (baseline / swapped.name).stat().st_size
    with pytest.raises(shards.ShardError, match=f"{short}: .* bytes but manifest.json says"):
        check.check_prepared(cfg)
    shutil.copy2(baseline / short.name, short)
    check.check_prepared(cfg)  # the quick check cannot see the swapped records, --full can
    with pytest.raises(shards.ShardError, match=f"{swapped}: sha256 .* differs from manifest.json's") as ei:
        check.check_prepared(cfg, full=True)
    assert "re-create it with: python -m data_prep.prepare" in str(ei.value)
    short.write_bytes(short.read_bytes()[:-100])
    size = short.stat().st_size
    before = _mtimes(prepared)
    assert sorted(_rerun(corpus, prepared, capsys)) == [
        f"[prepare] rewrote {short}: {size} bytes, manifest.json says {size + 100}",
        f"[prepare] rewrote {swapped}: sha256 mismatch"]
    after = _mtimes(prepared)
    assert {k for k in after if after[k] != before[k]} == {short.name, swapped.name}
    assert _shard_bytes(prepared) == _shard_bytes(baseline)
    check.check_prepared(cfg, full=True)


def test_manifest_without_hashes_keeps_the_old_resume_rule(corpus, baseline, prepared, capsys):
    """Manifests written before shards were hashed: intact shards are kept (and get hashed);
    one whose records no longer read back is rewritten rather than hashed as it is."""
    cfg = _cfg(corpus, prepared)
    mpath = prepared / "manifest.json"
    m = json.loads(mpath.read_text())
    for info in m["splits"].values():
        for s in info["shards"]:
            del s["sha256"]
    mpath.write_text(json.dumps(m))
    damaged = prepared / TRAIN_SHARDS[0]
    corrupt_record(damaged, 3)
    with pytest.raises(shards.ShardError, match=f"{damaged}: record 3 is corrupt .* delete it and re-create it with"):
        read_all(cfg)
    before = _mtimes(prepared)
    lines = _rerun(corpus, prepared, capsys)
    assert len(lines) == 1 and lines[0].startswith(f"[prepare] rewrote {damaged}: unreadable (record 3 is corrupt")
    after = _mtimes(prepared)
    assert {k for k in after if after[k] != before[k]} == {damaged.name}
    assert _shard_bytes(prepared) == _shard_bytes(baseline)
    m = json.loads(mpath.read_text())
    assert all(s["sha256"] == shards.sha256_file(prepared / s["path"])
               for info in m["splits"].values() for s in info["shards"])
    assert _rerun(corpus, prepared, capsys) == [] and _mtimes(prepared) == after
