"""Orbax checkpoints of the whole training state plus the data iterator's position.

Layout under ``WORKDIR/checkpoints/<step>/``:

    params/       fp32 master weights (nnx.State)          - what inference needs
    ema/          EMA weights (only when train.ema_decay > 0)
    model_state/  non-parameter variables (BatchNorm statistics; absent when empty)
    opt_state/    AdamW moments and counters
    meta/         {"step": [] int32, "rng": [2] uint32}
    data/         process_<i>-of-<n>.json: each process's Grain iterator state

Saves are asynchronous (the device->host copy happens in ``save``; writing continues in the
background while training goes on), atomic (a step directory appears only when complete,
so a kill mid-write leaves the previous checkpoint intact), and only ``keep`` are kept.
Restore takes the abstract state *with shardings* as target, so a checkpoint written on
one mesh shape loads onto another (Orbax reshards while reading).

Verified: each step carries ``checksums.json`` (training/verify.py), written inside the
temporary directory before Orbax's atomic rename. :meth:`Checkpointer.restore_verified`
walks back from the newest step to the newest one whose files match their checksums and
whose weights are finite, moves the damaged ones aside to ``checkpoints_rejected/`` (kept,
never deleted, and out of the way of the step numbers the resumed run will write again) and
says so.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from gesture_jax import storage
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from gesture_jax.errors import UserError
from gesture_jax.parallel import distributed
from gesture_jax.storage import Path
from gesture_jax.training import verify
from gesture_jax.training.state import TrainState

log = logging.getLogger(__name__)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint directory that cannot be used to resume."""


REJECTED = "checkpoints_rejected"  # next to checkpoints/: damaged steps moved aside, never deleted


# --------------------------------------------------------------------- data iterator state
class IteratorStateHandler(ocp.CheckpointHandler):
    """Saves a per-process JSON snapshot of a data iterator's ``get_state()``.

    The snapshot is taken by the caller at the moment of saving (not when the async write
    runs), so the state always matches the train step being checkpointed. Works for any
    iterator whose state is a JSON-able dict or bytes (Grain's DatasetIterator /
    DataLoaderIterator).
    """

    def save(self, directory: epath.Path, args: "IteratorStateSave") -> None:
        directory = epath.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = args.state
        payload = {"kind": "bytes", "state": state.decode()} if isinstance(state, bytes) else \
            {"kind": "json", "state": state}
        (directory / _process_file()).write_text(json.dumps(payload))

    def restore(self, directory: epath.Path, args: "IteratorStateRestore | None" = None) -> Any:
        f = epath.Path(directory) / _process_file()
        if not f.exists():
            present = sorted(p.name for p in epath.Path(directory).iterdir()) if epath.Path(directory).exists() else []
            raise CheckpointError(
                f"{f} does not exist (checkpoint has {present}); was it written with a different "
                f"number of processes? Restore with the same process count or without data state.")
        payload = json.loads(f.read_text())
        return payload["state"].encode() if payload["kind"] == "bytes" else payload["state"]

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


def _process_file() -> str:
    return f"process_{jax.process_index()}-of-{jax.process_count()}.json"


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


# --------------------------------------------------------------------------- manager
def _has_leaves(tree: Any) -> bool:
    return tree is not None and len(jax.tree_util.tree_leaves(tree)) > 0


class Checkpointer:
    """Thin wrapper of ``ocp.CheckpointManager`` knowing the train-state items.

    ``writer=True`` (the trainer) starts the run's checksum policy; readers (generation,
    evaluation, ``training.check``) never write into a run's checkpoint directory."""

    def __init__(self, directory: str | Path, keep: int = 3, async_save: bool = True, writer: bool = False):
        self.directory = storage.path(directory)
        self.keep, self.async_save = keep, async_save
        self._saving: int | None = None
        self._open()
        if writer and distributed.is_primary():
            verify.ensure_policy(self.directory, self.all_steps())

    def _open(self) -> None:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.keep, create=True, enable_async_checkpointing=self.async_save,
            cleanup_tmp_directories=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._write_checksums)
            if self.async_save else None)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def _write_checksums(self) -> None:
        """Primary process, after every process finished writing step ``self._saving`` and
        before Orbax renames its temporary directory (or, saving synchronously, right after)."""
        step = self._saving
        if step is None:
            return
        tmp = sorted(self.directory.glob(f"{step}.orbax-checkpoint-tmp*"))
        target = tmp[-1] if tmp else self.directory / str(step)
        try:
            verify.write_checksums(target)
        except OSError as e:  # the step stays, unverifiable: resume will skip it and say why
            log.error("could not write checksums for %s: %s", target, e)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: TrainState, data_state: Any | None = None, force: bool = True,
             weights_only: bool = False) -> bool:
        """Start saving ``state`` (its step is the checkpoint's name). Returns whether it saves.
        weights_only: no optimizer state (runs converted from other frameworks: training from such
        a checkpoint starts a fresh optimizer, see ``restore``)."""
        step = int(jax.device_get(state.step))
        items: dict[str, Any] = {
            "params": ocp.args.StandardSave(state.params),
            "meta": ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
        }
        if not weights_only:
            items["opt_state"] = ocp.args.StandardSave(state.opt_state)
        if _has_leaves(state.ema):
            items["ema"] = ocp.args.StandardSave(state.ema)
        if _has_leaves(state.model_state):
            items["model_state"] = ocp.args.StandardSave(state.model_state)
        if data_state is not None:
            items["data"] = IteratorStateSave(data_state)
        self.manager.wait_until_finished()  # Orbax would wait here too: one save in flight at a time
        self._saving = step
        saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        if saved and not self.async_save and distributed.is_primary():
            self._write_checksums()
        return saved

    def restore(self, abstract_state: TrainState, step: int | None = None,
                with_data: bool = True) -> tuple[TrainState, Any | None]:
        """Restore onto the shardings carried by ``abstract_state`` (any mesh shape)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        present = set(self.item_names(step))
        items: dict[str, Any] = {
            "params": ocp.args.StandardRestore(abstract_state.params),
            "meta": ocp.args.StandardRestore({"step": abstract_state.step, "rng": abstract_state.rng}),
        }
        if "opt_state" in present:    # absent: a weights-only (imported) checkpoint; opt_state comes back None
            items["opt_state"] = ocp.args.StandardRestore(abstract_state.opt_state)
        for name, tree in (("ema", abstract_state.ema), ("model_state", abstract_state.model_state)):
            if _has_leaves(tree):
                if name not in present:
                    raise CheckpointError(
                        f"checkpoint {self.directory / str(step)} has no {name!r} (items: {sorted(present)}); "
                        f"the config differs from the run that wrote it (e.g. train.ema_decay)")
                items[name] = ocp.args.StandardRestore(tree)
        want_data = with_data and "data" in present
        if want_data:
            items["data"] = IteratorStateRestore()
        try:
            r = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"cannot restore {self.directory / str(step)} into the current model/optimizer "
                f"(did the model or train config change?): {e}") from e
        state = abstract_state.replace(
            step=r["meta"]["step"], rng=r["meta"]["rng"], params=r["params"], opt_state=r.get("opt_state"),
            ema=r["ema"] if "ema" in items else None,
            model_state=r["model_state"] if "model_state" in items else abstract_state.model_state)
        return state, (r["data"] if want_data else None)

    def restore_verified(self, abstract_state: TrainState, with_data: bool = True,
                         say=None) -> tuple[TrainState, Any | None, int] | None:
        """Restore the newest step that verifies (checksums, finite weights); None when the
        directory holds no step. Damaged newer steps are moved to ``checkpoints_rejected/``
        and reported through ``say`` (default: stderr); none usable is a CheckpointError."""
        say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        since = verify.read_policy(self.directory)
        rejected: list[tuple[int, str]] = []
        chosen = None
        for s in steps:
            rep = self._verify_agreed(s, required=since is not None and s >= since)
            if not rep[0]:
                rejected.append((s, rep[1]))
                continue
            if rep[2]:
                say(f"checkpoint {self.directory / str(s)} was written before this run kept checksums: "
                    f"restoring it unverified")
            state, data = self.restore(abstract_state, s, with_data)
            bad = verify.nonfinite_paths({"params": state.params, "ema": state.ema, "opt_state": state.opt_state})
            if bad:
                rejected.append((s, f"non-finite values in {bad[0]}" + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")))
                continue
            chosen = (state, data, s)
            break
        for s, why in rejected:
            where = self._reject(s, why)
            say(f"checkpoint step {s} is damaged ({why}); moved to {where}")
        if rejected:
            self.manager.close()
            self._open()
        if chosen is None:
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be used (all {len(steps)} damaged: "
                f"{'; '.join(f'step {s}: {w}' for s, w in rejected)}); they were moved to "
                f"{self.directory.parent / REJECTED}. Start again with a new --workdir, or repair them")
        if rejected:
            say(f"resuming from step {chosen[2]}, the newest checkpoint that verifies")
        return chosen

    def _verify_agreed(self, step: int, required: bool) -> tuple[bool, str, bool]:
        """(usable, problem, unverified), computed by the primary process and shared: every
        process then restores the same step (and no host reads the whole checkpoint twice)."""
        rep = verify.verify_step(self.directory / str(step), required=required) if distributed.is_primary() else None
        if jax.process_count() == 1:
            return rep.usable, rep.summary(), rep.unverified
        import numpy as np
        from jax.experimental import multihost_utils
        flags = np.asarray([int(rep.usable), int(rep.unverified)] if rep is not None else [0, 0], np.int32)
        usable, unverified = (bool(x) for x in multihost_utils.broadcast_one_to_all(flags))
        return usable, (rep.summary() if rep is not None else "failed verification on the primary process"), unverified

    def _reject(self, step: int, why: str) -> Path:
        """Move a damaged step out of the step sequence (primary), keeping its files."""
        dest_root = self.directory.parent / REJECTED
        dest = dest_root / str(step)
        if distributed.is_primary():
            dest_root.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest = dest_root / f"{step}-{int(time.time())}"
            src = self.directory / str(step)
            if src.exists():
                storage.move_tree(src, dest)
                storage.write_atomic(dest / "REJECTED.txt", why + "\n")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"reject_checkpoint_{step}")
        return dest

    def restore_items(self, targets: dict[str, Any], step: int | None = None) -> dict[str, Any]:
        """Restore only some items (e.g. params for inference) onto the given abstract trees."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        present = set(self.item_names(step))
        missing = set(targets) - present
        if missing:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} lacks {sorted(missing)} "
                                  f"(has {sorted(present)})")
        args = {k: ocp.args.StandardRestore(v) for k, v in targets.items()}
        return dict(self.manager.restore(step, args=ocp.args.Composite(**args)))

    def item_names(self, step: int) -> list[str]:
        d = self.directory / str(step)
        if not d.is_dir():
            raise CheckpointError(f"{d} is not a checkpoint directory (steps: {self.all_steps()})")
        return sorted(p.name for p in d.iterdir() if p.is_dir())

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
