"""Save and load MotionPipeline.file_stats results without pickles.

Preparation caches one stats object per training file (so a restarted run, or another
machine, does not recompute it) and fits the pipeline from all of them. The stats are
whatever MotionPipeline.file_stats returns: nested dicts / lists / tuples / dataclasses of
numpy arrays and numbers. They are flattened to an ``.npz`` (arrays, numbers) plus a JSON
description of the structure, stored inside the same npz, so loading rebuilds the same
nested value; dataclasses are rebuilt from their import path, restricted to the
``gesture_jax`` package so a cache file cannot name arbitrary code.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
import json
from typing import Any

import numpy as np

_ALLOWED_PREFIX = "gesture_jax."


def _flatten(x: Any, arrays: dict[str, np.ndarray]) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        cls = type(x)
        fields = {f.name: _flatten(getattr(x, f.name), arrays) for f in dataclasses.fields(x)}
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            return {"__intdict__": [[_flatten(k, arrays), _flatten(v, arrays)] for k, v in x.items()]}
        return {"__dict__": {k: _flatten(v, arrays) for k, v in x.items()}}
    if isinstance(x, (list, tuple)):
        return {"__list__" if isinstance(x, list) else "__tuple__": [_flatten(v, arrays) for v in x]}
    if isinstance(x, np.ndarray) or isinstance(x, np.generic):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(x)
        return {"__array__": key, "scalar": isinstance(x, np.generic)}
    if x is None or isinstance(x, (bool, int, float, str)):
        return {"__value__": x}
    raise TypeError(f"cannot serialize {type(x).__name__} in motion stats")


def _unflatten(d: Any, arrays: Any) -> Any:
    if "__dataclass__" in d:
        mod, _, qual = d["__dataclass__"].partition(":")
        if not mod.startswith(_ALLOWED_PREFIX):
            raise ValueError(f"stats cache names class {d['__dataclass__']!r} outside gesture_jax")
        cls: Any = importlib.import_module(mod)
        for part in qual.split("."):
            cls = getattr(cls, part)
        return cls(**{k: _unflatten(v, arrays) for k, v in d["fields"].items()})
    if "__dict__" in d:
        return {k: _unflatten(v, arrays) for k, v in d["__dict__"].items()}
    if "__intdict__" in d:
        return {_unflatten(k, arrays): _unflatten(v, arrays) for k, v in d["__intdict__"]}
    if "__list__" in d:
        return [_unflatten(v, arrays) for v in d["__list__"]]
    if "__tuple__" in d:
        return tuple(_unflatten(v, arrays) for v in d["__tuple__"])
    if "__array__" in d:
        a = arrays[d["__array__"]]
        return a[()] if d["scalar"] else a
    return d["__value__"]


def stats_to_bytes(stats: Any) -> bytes:
    """npz bytes holding ``stats`` (see module docstring). Deterministic for equal input."""
    arrays: dict[str, np.ndarray] = {}
    tree = _flatten(stats, arrays)
    buf = io.BytesIO()
    np.savez(buf, __tree__=np.frombuffer(json.dumps(tree, sort_keys=True).encode(), np.uint8), **arrays)
    return buf.getvalue()


def stats_from_bytes(data: bytes) -> Any:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    tree = json.loads(arrays.pop("__tree__").tobytes().decode())
    return _unflatten(tree, arrays)
