"""Find, pair and split each dataset's source files (BVH motion + WAV speech).

Pairing is by identical file stem anywhere under ``data.root`` (searched recursively, so
Trinity's ``Motion/`` and ``Audio/`` subfolders and BEAT's per-speaker folders work),
after checking that the stem follows the dataset's naming:

  beat     ``{speaker_id}_{name}_{a}_{b}_{c}``  e.g. ``2_scott_0_55_55`` (BEAT v0.2.1;
           extra ``_n`` parts, as in cut segments ``10_kieks_0_96_96_1``, are accepted)
  zeggs    ``NNN_Style_N_x_1_0``                e.g. ``067_Speech_2_x_1_0``
  trinity  ``Recording_NNN[...]``               e.g. ``Recording_008`` (GENEA 2020)
  demo     ``demo_(train|test)_NNN``           (data_prep.synthetic)
  generic  any stem

A file without a partner, with a name outside the dataset's pattern, or whose stem occurs
twice is *reported, not fatal*: :class:`Discovery` lists it with the reason and
preparation goes on without it.

Splits. ``data.holdout`` fnmatch patterns on the stem select the test split (DESIGN.md:
Trinity Recording_008 and _015, ZEGGS 011_Happy_0_x_1_0). BEAT holds out **one file per
speaker**: the speaker's last file in natural order (numeric fields compared as numbers,
so ``2_scott_0_111_111`` comes after ``2_scott_0_99_99``): deterministic, independent of
the machine and of the other speakers' files. ``data.val_fraction`` moves that fraction of
the remaining training files (at least one when > 0) to a "val" split, picked by the
SHA-1 of the stem so the choice is stable when files are added.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

from gesture_jax import storage

NAME_PATTERNS: dict[str, re.Pattern] = {
    "beat": re.compile(r"^(?P<speaker>\d+)_(?P<name>[A-Za-z]+)_\d+_\d+_\d+(_\d+)*$"),
    "zeggs": re.compile(r"^\d{3}_[A-Za-z]+_\d+_x_\d+_\d+$"),
    "trinity": re.compile(r"^Recording_\d{3}(_.*)?$"),
    "demo": re.compile(r"^demo_(train|test)_\d{3}$"),
    "generic": re.compile(r"^.+$"),
}
NAMING_HELP = {
    "beat": "{speaker_id}_{name}_{a}_{b}_{c} (BEAT v0.2.1)",
    "zeggs": "NNN_Style_N_x_1_0 (ZEGGS)",
    "trinity": "Recording_NNN (Trinity / GENEA 2020)",
    "demo": "demo_(train|test)_NNN (data_prep.synthetic)",
    "generic": "any",
}
MOTION_EXT = ".bvh"
AUDIO_EXT = ".wav"


@dataclass(frozen=True)
class SourcePair:
    """One take: motion and speech with the same stem. Paths are relative to the root."""

    file_id: str
    bvh: str
    wav: str


@dataclass
class Discovery:
    root: storage.Path
    pairs: list[SourcePair]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}


def _natural_key(s: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def discover(dataset: str, root: str | os.PathLike) -> Discovery:
    """Pair every BVH with the WAV of the same stem under ``root``, a local folder or a
    bucket (``gs://...``) (see module docstring)."""
    if dataset not in NAME_PATTERNS:
        raise ValueError(f"data.dataset={dataset!r} is not one of {sorted(NAME_PATTERNS)}")
    root = storage.path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a folder")
    remote = storage.is_remote(root)
    pattern = NAME_PATTERNS[dataset]
    found: dict[str, dict[str, list[str]]] = {}
    skipped: list[dict[str, str]] = []
    for p in storage.walk_files(root):  # one listing per folder (a bucket has no rglob)
        ext = p.suffix.lower()
        if ext not in (MOTION_EXT, AUDIO_EXT) or not (remote or p.is_file()):  # locally: no broken links
            continue
        rel = p.relative_to(root).as_posix()
        if not pattern.match(p.stem):
            skipped.append({"path": rel, "reason": f"name does not follow {NAMING_HELP[dataset]}"})
            continue
        found.setdefault(p.stem, {MOTION_EXT: [], AUDIO_EXT: []})[ext].append(rel)
    pairs = []
    for stem in sorted(found, key=_natural_key):
        m, a = found[stem][MOTION_EXT], found[stem][AUDIO_EXT]
        if len(m) > 1 or len(a) > 1:
            for rel in m + a:
                skipped.append({"path": rel, "reason": f"stem {stem!r} occurs more than once: ambiguous pairing"})
        elif not a:
            skipped.append({"path": m[0], "reason": "no .wav with the same name"})
        elif not m:
            skipped.append({"path": a[0], "reason": "no .bvh with the same name"})
        else:
            pairs.append(SourcePair(stem, m[0], a[0]))
    skipped.sort(key=lambda d: d["path"])
    return Discovery(root, pairs, skipped)


def beat_holdout(file_ids: Sequence[str]) -> list[str]:
    """BEAT: one held-out file per speaker, the speaker's last file in natural order."""
    last: dict[str, str] = {}
    for f in sorted(file_ids, key=_natural_key):
        m = NAME_PATTERNS["beat"].match(f)
        if m:
            last[m.group("speaker")] = f
    return sorted(last.values(), key=_natural_key)


def assign_splits(dataset: str, pairs: Sequence[SourcePair], holdout: Sequence[str],
                  val_fraction: float = 0.0) -> dict[str, list[SourcePair]]:
    """{"train": [...], "test": [...], "val": [...] (only when val_fraction > 0)}, natural order."""
    ids = [p.file_id for p in pairs]
    test = {f for f in ids if any(fnmatch.fnmatchcase(f, pat) for pat in holdout)}
    if dataset == "beat":
        test |= set(beat_holdout(ids))
    train = [p for p in pairs if p.file_id not in test]
    out = {"train": train, "test": [p for p in pairs if p.file_id in test]}
    if val_fraction > 0:
        n_val = max(1, int(round(len(train) * val_fraction)))
        ranked = sorted(train, key=lambda p: hashlib.sha1(p.file_id.encode()).hexdigest())
        val_ids = {p.file_id for p in ranked[:n_val]}
        out["train"] = [p for p in train if p.file_id not in val_ids]
        out["val"] = [p for p in train if p.file_id in val_ids]
    return out
