"""Checksums of checkpoint steps: a damaged step is found before its bytes reach a model.

Orbax checks the structure of what it restores but not the bytes of the arrays (only the
zarr shard *index* carries a CRC): 2 KB overwritten inside a weight file restore silently as
values up to 3e38 and NaN. So every step gets ``checksums.json`` - the size and SHA-256 of
each file under the step directory - written by the primary process after every process has
finished writing and *before* Orbax renames the temporary directory to its step number
(``AsyncOptions.post_finalization_callback``): a step never appears without its checksums,
and a kill at any moment leaves either a complete, verifiable step or none. In a bucket,
where nothing can be renamed, Orbax writes the step in place and marks it complete with
``commit_success.txt``, again after this callback: the same guarantee.

``checkpoints/verification.json`` records from which step on the run wrote checksums, so
that a run started before checksums existed keeps resuming from its older steps (reported
as unverified) while a newer step whose ``checksums.json`` is missing counts as damaged.

    python -m gesture_jax.training.check --workdir=RUN     # verify every step of a run
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from gesture_jax import storage
from gesture_jax.storage import Path

CHECKSUMS = "checksums.json"
POLICY = "verification.json"
_CHUNK = 1 << 22
# Orbax rewrites the step's own metadata when it commits the step (after our hashing): the
# commit time and timing figures change, the rest (which handler wrote each item) must not.
_STEP_METADATA = "_CHECKPOINT_METADATA"
_VOLATILE_KEYS = ("commit_timestamp_nsecs", "performance_metrics")


@dataclass
class StepReport:
    """What verifying one step found: ``ok`` (checksums match), ``unverified`` (a step written
    before the run kept checksums) or neither (``problems`` says what is damaged)."""
    step: int
    path: Path
    ok: bool
    unverified: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.ok or self.unverified

    def summary(self) -> str:
        if self.ok:
            return "ok"
        if self.unverified:
            return "unverified (written before the run kept checksums)"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return self.problems[0] + more


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with storage.path(path).open("rb") as f:
        while b := f.read(_CHUNK):
            h.update(b)
    return h.hexdigest()


def _digest(path: Path, rel: str) -> dict:
    """{"size", "sha256"}, or for the step metadata {"json_sha256"} of its stable keys."""
    if rel == _STEP_METADATA:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not readable JSON ({e})") from e
        stable = {k: v for k, v in doc.items() if k not in _VOLATILE_KEYS} if isinstance(doc, dict) else doc
        return {"json_sha256": hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()}
    return {"size": storage.size(path), "sha256": sha256_file(path)}


def _rel(p: Path, step_dir: Path) -> str:
    return os.fspath(p)[len(os.fspath(step_dir)):].lstrip("/")


def _files(step_dir: Path) -> list[Path]:
    return [p for p in storage.walk_files(step_dir) if _rel(p, step_dir) != CHECKSUMS]


def write_checksums(step_dir: str | os.PathLike) -> dict:
    """Hash every file under ``step_dir`` into ``step_dir/checksums.json`` (atomic write)."""
    step_dir = storage.path(step_dir)
    files = {_rel(p, step_dir): _digest(p, _rel(p, step_dir)) for p in _files(step_dir)}
    doc = {"version": 1, "algorithm": "sha256", "files": files}
    storage.write_atomic(step_dir / CHECKSUMS, json.dumps(doc, indent=0, sort_keys=True) + "\n")
    return doc


def verify_step(step_dir: str | os.PathLike, *, required: bool = True) -> StepReport:
    """Compare every file of a step with its ``checksums.json``.

    ``required=False`` (a step older than the run's verification policy) accepts a step
    without checksums as unverified; a step that has them is always checked.
    """
    step_dir = storage.path(step_dir)
    step = int(step_dir.name) if step_dir.name.isdigit() else -1
    rep = StepReport(step=step, path=step_dir, ok=False)
    if not step_dir.is_dir():
        rep.problems.append(f"{step_dir}: not a directory")
        return rep
    sums_path = step_dir / CHECKSUMS
    if not sums_path.is_file():
        if not required:
            rep.unverified = True
        else:
            rep.problems.append(f"{sums_path}: missing (the step was damaged or written by an interrupted save)")
        return rep
    try:
        files = json.loads(sums_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        rep.problems.append(f"{sums_path}: unreadable ({e})")
        return rep
    for rel, want in sorted(files.items()):
        p = step_dir / rel
        if not p.is_file():
            rep.problems.append(f"{p}: missing")
            continue
        if "json_sha256" in want:
            try:
                same = _digest(p, rel) == want
            except ValueError as e:
                rep.problems.append(str(e))
                continue
            if not same:
                rep.problems.append(f"{p}: contents changed since it was saved (sha256 mismatch)")
            continue
        size = storage.size(p)
        if size != want["size"]:
            rep.problems.append(f"{p}: {size} bytes, {want['size']} when saved (truncated or overwritten)")
        elif sha256_file(p) != want["sha256"]:
            rep.problems.append(f"{p}: contents changed since it was saved (sha256 mismatch)")
    rep.ok = not rep.problems
    return rep


# ----------------------------------------------------------------------- run policy
def read_policy(ckpt_dir: Path) -> int | None:
    """First step that must carry checksums, or None when the run never kept them."""
    p = storage.path(ckpt_dir) / POLICY
    if not p.is_file():
        return None
    try:
        return int(json.loads(p.read_text())["since_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # an unreadable policy file: demand checksums everywhere (the safe reading)


def ensure_policy(ckpt_dir: Path, existing_steps: list[int]) -> int:
    """Start keeping checksums: steps already present (a run from before) stay unverified."""
    since = read_policy(ckpt_dir)
    if since is not None:
        return since
    since = (max(existing_steps) + 1) if existing_steps else 0
    storage.write_atomic(storage.path(ckpt_dir) / POLICY,
                         json.dumps({"algorithm": "sha256", "file": CHECKSUMS, "since_step": since}) + "\n")
    return since


def verify_run_dir(ckpt_dir: str | os.PathLike, steps: list[int]) -> list[StepReport]:
    """Reports for ``steps`` of one checkpoint directory, newest first."""
    ckpt_dir = storage.path(ckpt_dir)
    since = read_policy(ckpt_dir)
    return [verify_step(ckpt_dir / str(s), required=since is not None and s >= since)
            for s in sorted(steps, reverse=True)]


def nonfinite_paths(tree) -> list[str]:
    """Paths of the floating-point leaves of ``tree`` holding NaN or inf (one jitted pass;
    works on sharded global arrays)."""
    import jax
    import jax.numpy as jnp
    leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return []
    ok = jax.device_get(jax.jit(lambda xs: [jnp.all(jnp.isfinite(x)) for x in xs])([x for _, x in leaves]))
    return [jax.tree_util.keystr(p) for (p, _), good in zip(leaves, ok) if not bool(good)]
