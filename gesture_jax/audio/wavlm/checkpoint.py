"""Converted WavLM checkpoints on disk: `config.json` + an Orbax `params/` tree.

Layout of CKPT_DIR (written by `python -m data_prep.convert_wavlm`):
    config.json   {"wavlm": WavLMConfig fields, "source": where the weights came from, ...}
    params/       Orbax StandardCheckpointer tree, the Flax module's pure parameter dict
Loading needs only JAX/Flax/Orbax (no torch), so feature extraction runs anywhere.
"""
from __future__ import annotations

import json
from gesture_jax import storage
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gesture_jax.audio.wavlm.config import WavLMConfig
from gesture_jax.audio.wavlm.model import WavLM
from gesture_jax.errors import UserError
from gesture_jax.storage import Path

CONFIG_NAME = "config.json"
PARAMS_NAME = "params"


class CheckpointError(UserError, ValueError):
    """A converted WavLM checkpoint that is missing or does not match its config."""


def abstract_model(cfg: WavLMConfig) -> WavLM:
    """A WavLM whose parameters are shapes only (no memory, no random init)."""
    return nnx.eval_shape(lambda: WavLM(cfg, nnx.Rngs(0)))


def model_from_params(cfg: WavLMConfig, params: Mapping[str, Any]) -> WavLM:
    """Build a WavLM holding `params` (a pure dict like `nnx.to_pure_dict(nnx.state(model))`)."""
    graphdef, state = nnx.split(abstract_model(cfg))
    expected = nnx.to_pure_dict(state)
    _check_tree(expected, params)
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params))
    return nnx.merge(graphdef, state)


def _check_tree(expected: Mapping[str, Any], got: Mapping[str, Any], path: str = "") -> None:
    """Raise CheckpointError naming the first missing/extra/misshapen parameter."""
    if set(expected) != set(got):
        missing = sorted(map(str, set(expected) - set(got)))
        extra = sorted(map(str, set(got) - set(expected)))
        raise CheckpointError(f"parameter tree mismatch at '{path or '/'}': missing {missing}, unexpected {extra}")
    for k, v in expected.items():
        sub = f"{path}/{k}"
        if isinstance(v, Mapping):
            if not isinstance(got[k], Mapping):
                raise CheckpointError(f"parameter tree mismatch at '{sub}': expected a subtree")
            _check_tree(v, got[k], sub)
        elif tuple(np.shape(got[k])) != tuple(v.shape):
            raise CheckpointError(f"parameter '{sub}' has shape {tuple(np.shape(got[k]))}, expected {tuple(v.shape)}")


def save_checkpoint(out_dir: str | Path, cfg: WavLMConfig, params: Mapping[str, Any], *,
                    source: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write config.json and the Orbax params tree; refuses to overwrite unless asked."""
    import orbax.checkpoint as ocp

    out = storage.path(out_dir)
    model_from_params(cfg, params)  # validates the tree against the config before writing anything
    if (out / PARAMS_NAME).exists() and not overwrite:
        raise CheckpointError(f"{out}: already holds a converted checkpoint (pass overwrite=True / --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    tree = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), dict(params))
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(out / PARAMS_NAME, tree, force=overwrite)
    ckptr.wait_until_finished()
    n = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(tree)))
    cfg.save_json(out / CONFIG_NAME, source=dict(source or {}), num_params=n, format="gesture_jax.wavlm/1")
    return out


def load_config(ckpt_dir: str | Path) -> WavLMConfig:
    p = storage.path(ckpt_dir) / CONFIG_NAME
    if not p.exists():
        raise CheckpointError(f"{Path(ckpt_dir)}: no {CONFIG_NAME}; convert weights first with "
                              "`python -m data_prep.convert_wavlm --source=... --out=DIR`")
    try:
        return WavLMConfig.load_json(p)
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def load_checkpoint(ckpt_dir: str | Path) -> WavLM:
    """Restore a converted WavLM (Flax module with weights) from CKPT_DIR; no torch needed."""
    import orbax.checkpoint as ocp

    d = storage.path(ckpt_dir)
    cfg = load_config(d)
    if not (d / PARAMS_NAME).exists():
        raise CheckpointError(f"{d}: no {PARAMS_NAME}/ directory (incomplete conversion?)")
    graphdef, state = nnx.split(abstract_model(cfg))
    target = nnx.to_pure_dict(state)
    try:
        restored = ocp.StandardCheckpointer().restore(d / PARAMS_NAME, target)
    except Exception as e:
        raise CheckpointError(f"{d / PARAMS_NAME}: cannot restore WavLM parameters for the config in "
                              f"{CONFIG_NAME} ({type(e).__name__}: {e})") from e
    _check_tree(target, restored)
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)


def read_metadata(ckpt_dir: str | Path) -> dict[str, Any]:
    """The whole config.json (config, source, parameter count) for logs and manifests."""
    return json.loads((storage.path(ckpt_dir) / CONFIG_NAME).read_text())
