"""Motion representations by name: which feature pipeline `data.representation` builds.

Every representation is a pipeline class with MotionPipeline's interface (from_config, file_stats,
fit_from_stats, fit, transform, inverse -> BVH, root_start, save/load, feature_names, ...), so
prepare, generate and evaluate never need to know which one a dataset was prepared with: a
prepared dataset's pipeline.json names its format, and `load_pipeline` dispatches on it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Union

from gesture_jax.motion.pipeline import FORMAT as EXPMAP_FORMAT
from gesture_jax.motion.pipeline import MotionPipeline, MotionPipelineError
from gesture_jax.motion.positions import FORMAT as POSITIONS_FORMAT
from gesture_jax.motion.positions import PositionPipeline
from gesture_jax.storage import Path

__all__ = ["REPRESENTATIONS", "Pipeline", "pipeline_from_config", "load_pipeline", "representation_name"]

Pipeline = Union[MotionPipeline, PositionPipeline]

# expmap: Persona-Gestor's exp-map features with root deltas; positions: joint positions
# (+ velocities), Kucherenko 2019 and the other position-predicting methods.
REPRESENTATIONS: dict[str, type] = {"expmap": MotionPipeline, "positions": PositionPipeline}
_BY_FORMAT: dict[str, str] = {EXPMAP_FORMAT: "expmap", POSITIONS_FORMAT: "positions"}


def _known() -> str:
    return ", ".join(sorted(REPRESENTATIONS))


def pipeline_from_config(data_cfg: Any) -> Pipeline:
    """The unfitted pipeline named by `data.representation` (default "expmap")."""
    get = data_cfg.get if hasattr(data_cfg, "get") else (lambda k, d=None: getattr(data_cfg, k, d))
    name = get("representation", "expmap") or "expmap"
    if name not in REPRESENTATIONS:
        raise MotionPipelineError(f"data.representation={name!r} is not a motion representation; known: {_known()}")
    return REPRESENTATIONS[name].from_config(data_cfg)


def load_pipeline(directory: str | os.PathLike) -> Pipeline:
    """A saved pipeline of any representation (dispatch on pipeline.json's "format")."""
    d = Path(directory)
    try:
        fmt = json.loads((d / "pipeline.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError) as e:
        raise MotionPipelineError(f"{d}: not a saved motion pipeline ({e})") from None
    if fmt not in _BY_FORMAT:
        raise MotionPipelineError(f"{d}/pipeline.json: unknown format {fmt!r}; known: {', '.join(sorted(_BY_FORMAT))}")
    return REPRESENTATIONS[_BY_FORMAT[fmt]].load(d)


def representation_name(pipeline: Any) -> str:
    """"expmap" / "positions" for a pipeline object (or its class)."""
    cls = pipeline if isinstance(pipeline, type) else type(pipeline)
    for name, c in REPRESENTATIONS.items():
        if issubclass(cls, c):
            return name
    raise MotionPipelineError(f"{cls.__name__} is not a registered motion representation; known: {_known()}")
