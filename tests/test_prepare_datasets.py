"""Pairing, naming checks and holdouts per dataset (data_prep.datasets): empty files suffice."""
from pathlib import Path

from data_prep import datasets


def _touch(root: Path, *rels: str) -> None:
    for r in rels:
        (root / r).parent.mkdir(parents=True, exist_ok=True)
        (root / r).write_bytes(b"")


def test_trinity_motion_audio_subfolders(tmp_path):
    _touch(tmp_path, "Motion/Recording_001.bvh", "Audio/Recording_001.wav", "Motion/Recording_008.bvh",
           "Audio/Recording_008.wav", "Motion/Recording_015.bvh", "Audio/Recording_015.wav",
           "Motion/Recording_002.bvh", "Transcripts/Recording_001.json", "Audio/notes.wav")
    d = datasets.discover("trinity", tmp_path)
    assert [(p.file_id, p.bvh, p.wav) for p in d.pairs][0] == (
        "Recording_001", "Motion/Recording_001.bvh", "Audio/Recording_001.wav")
    assert {s["path"]: s["reason"] for s in d.skipped} == {
        "Audio/notes.wav": "name does not follow Recording_NNN (Trinity / GENEA 2020)",
        "Motion/Recording_002.bvh": "no .wav with the same name"}
    sp = datasets.assign_splits("trinity", d.pairs, ["Recording_008*", "Recording_015*"])
    assert [p.file_id for p in sp["test"]] == ["Recording_008", "Recording_015"]
    assert [p.file_id for p in sp["train"]] == ["Recording_001"]


def test_beat_one_holdout_per_speaker_natural_order(tmp_path):
    stems = ["2_scott_0_1_1", "2_scott_0_9_9", "2_scott_0_10_10", "2_scott_1_2_2",
             "10_kieks_0_96_96", "10_kieks_0_96_96_1", "1_wayne_0_1_1"]
    for s in stems:
        spk = s.split("_")[0]
        _touch(tmp_path, f"{spk}/{s}.bvh", f"{spk}/{s}.wav", f"{spk}/{s}.txt")
    _touch(tmp_path, "2/scott_bad.bvh", "2/scott_bad.wav")
    d = datasets.discover("beat", tmp_path)
    assert len(d.pairs) == 7 and {s["path"] for s in d.skipped} == {"2/scott_bad.bvh", "2/scott_bad.wav"}
    sp = datasets.assign_splits("beat", d.pairs, [])
    assert [p.file_id for p in sp["test"]] == ["1_wayne_0_1_1", "2_scott_1_2_2", "10_kieks_0_96_96_1"]
    assert len(sp["train"]) == 4
    # the choice does not depend on other speakers' files
    assert datasets.beat_holdout(["2_scott_0_9_9", "2_scott_0_10_10"]) == ["2_scott_0_10_10"]


def test_zeggs_naming_duplicates_and_val_split(tmp_path):
    _touch(tmp_path, "011_Happy_0_x_1_0.bvh", "011_Happy_0_x_1_0.wav", "067_Speech_2_x_1_0.bvh",
           "067_Speech_2_x_1_0.wav", "a/001_Neutral_0_x_1_0.bvh", "b/001_Neutral_0_x_1_0.bvh",
           "001_Neutral_0_x_1_0.wav", "raw_zeggs_start_pose_0.bvh", "002_Sad_0_x_1_0.bvh",
           "002_Sad_0_x_1_0.wav", "003_Sad_1_x_1_0.bvh", "003_Sad_1_x_1_0.wav")
    d = datasets.discover("zeggs", tmp_path)
    assert [p.file_id for p in d.pairs] == ["002_Sad_0_x_1_0", "003_Sad_1_x_1_0", "011_Happy_0_x_1_0",
                                            "067_Speech_2_x_1_0"]
    reasons = {s["path"]: s["reason"] for s in d.skipped}
    assert "ambiguous" in reasons["a/001_Neutral_0_x_1_0.bvh"] and "NNN_Style" in reasons["raw_zeggs_start_pose_0.bvh"]
    sp = datasets.assign_splits("zeggs", d.pairs, ["011_Happy_0_x_1_0*"], val_fraction=0.3)
    assert [p.file_id for p in sp["test"]] == ["011_Happy_0_x_1_0"]
    assert len(sp["val"]) == 1 and len(sp["train"]) == 2
    again = datasets.assign_splits("zeggs", d.pairs, ["011_Happy_0_x_1_0*"], val_fraction=0.3)
    assert again["val"] == sp["val"]
