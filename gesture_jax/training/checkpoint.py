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
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from gesture_jax.training.state import TrainState

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used to resume."""


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
    """Thin wrapper of ``ocp.CheckpointManager`` knowing the train-state items."""

    def __init__(self, directory: str | Path, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: TrainState, data_state: Any | None = None, force: bool = True) -> bool:
        """Start saving ``state`` (its step is the checkpoint's name). Returns whether it saves."""
        step = int(jax.device_get(state.step))
        items: dict[str, Any] = {
            "params": ocp.args.StandardSave(state.params),
            "opt_state": ocp.args.StandardSave(state.opt_state),
            "meta": ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
        }
        if _has_leaves(state.ema):
            items["ema"] = ocp.args.StandardSave(state.ema)
        if _has_leaves(state.model_state):
            items["model_state"] = ocp.args.StandardSave(state.model_state)
        if data_state is not None:
            items["data"] = IteratorStateSave(data_state)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: TrainState, step: int | None = None,
                with_data: bool = True) -> tuple[TrainState, Any | None]:
        """Restore onto the shardings carried by ``abstract_state`` (any mesh shape)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        present = set(self.item_names(step))
        items: dict[str, Any] = {
            "params": ocp.args.StandardRestore(abstract_state.params),
            "opt_state": ocp.args.StandardRestore(abstract_state.opt_state),
            "meta": ocp.args.StandardRestore({"step": abstract_state.step, "rng": abstract_state.rng}),
        }
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
            step=r["meta"]["step"], rng=r["meta"]["rng"], params=r["params"], opt_state=r["opt_state"],
            ema=r["ema"] if "ema" in items else None,
            model_state=r["model_state"] if "model_state" in items else abstract_state.model_state)
        return state, (r["data"] if want_data else None)

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
