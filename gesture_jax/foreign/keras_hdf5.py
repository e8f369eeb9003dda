"""Keras 2 HDF5 files (``model.save(...hdf5)`` / ``save_weights``) read with h5py: numbers only.

A ``model.save`` file holds ``model_weights/<layer>/<weight>`` groups listed by the
``layer_names`` / ``weight_names`` attributes, plus the JSON ``model_config`` and the Keras
version; a ``save_weights`` file holds the layer groups at its root and no model_config.
Nothing is unpickled and no Keras is needed; a pickle, zip archive, empty, truncated or damaged
file is a one-line :class:`~gesture_jax.foreign.ForeignCheckpointError` naming it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gesture_jax.foreign import ForeignCheckpointError
from gesture_jax.foreign.sniff import refuse, sniff

__all__ = ["KerasLayer", "KerasModelFile", "read_keras_hdf5", "config_layers", "activation"]

DEFAULT_WHAT = "a Keras model.save(...hdf5) or save_weights file"


@dataclass
class KerasLayer:
    """One layer holding weights; ``kind`` tells dense, bn (BatchNormalization) and recurrent apart."""
    name: str
    weights: dict[str, tuple[str, np.ndarray]]   # short name (kernel, gamma, ...) -> (full weight name, array)

    @property
    def kind(self) -> str:
        k = set(self.weights)
        if {"moving_mean", "moving_variance"} <= k and k <= {"gamma", "beta", "moving_mean", "moving_variance"}:
            return "bn"
        if k == {"kernel", "recurrent_kernel", "bias"} or k == {"kernel", "recurrent_kernel"}:
            return "recurrent"
        if k == {"kernel", "bias"} or k == {"kernel"}:
            return "dense"
        return "other(" + ",".join(sorted(k)) + ")"


@dataclass
class KerasModelFile:
    """What :func:`read_keras_hdf5` found in a file."""
    path: Path
    layers: list[KerasLayer]                     # the layers holding weights, in file order
    model_config: dict[str, Any] | None          # JSON of model.save; None for save_weights files
    keras_version: str
    backend: str


def _text(v: Any) -> str:
    return v.decode("utf8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def read_keras_hdf5(path: str | Path, what: str = DEFAULT_WHAT) -> KerasModelFile:
    """Every weighted layer of a Keras 2 ``model.save`` / ``save_weights`` HDF5 file (numbers only).
    ``what`` names the expected file in errors (e.g. which model, which flag)."""
    path = Path(path)
    if not path.is_file():
        raise ForeignCheckpointError(f"{path}: no such file; expected {what}")
    kind = sniff(path)
    if kind != "hdf5":
        raise refuse(path, kind, what)
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise ForeignCheckpointError(f"{path}: cannot be opened as HDF5 ({e}); the file is truncated or "
                                     f"damaged") from None
    try:
        attrs = dict(f.attrs)
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ForeignCheckpointError(f"{path}: no 'layer_names' attribute in {root.name}: not a Keras model or "
                                         f"weights file ({what})")
        layers = []
        for lname in (_text(n) for n in root.attrs["layer_names"]):
            if lname not in root:
                raise ForeignCheckpointError(f"{path}: layer {lname!r} is listed in layer_names but has no group "
                                             f"(truncated or damaged file)")
            g = root[lname]
            weights: dict[str, tuple[str, np.ndarray]] = {}
            for wname in (_text(n) for n in g.attrs.get("weight_names", [])):
                if wname not in g or not isinstance(g[wname], h5py.Dataset):
                    raise ForeignCheckpointError(f"{path}: tensor {lname}/{wname} is listed in weight_names but "
                                                 f"missing (truncated or damaged file)")
                ds = g[wname]
                if ds.dtype.kind not in "fiu":
                    raise ForeignCheckpointError(f"{path}: tensor {lname}/{wname} has dtype {ds.dtype}, not numbers")
                try:
                    arr = np.asarray(ds[()])
                except (OSError, RuntimeError, ValueError) as e:
                    raise ForeignCheckpointError(f"{path}: tensor {lname}/{wname} cannot be read ({e}); the file is "
                                                 f"truncated or damaged") from None
                short = wname.split("/")[-1].split(":")[0]
                if short in weights:
                    raise ForeignCheckpointError(f"{path}: layer {lname} holds two tensors named {short!r}")
                weights[short] = (wname, arr)
            if weights:
                layers.append(KerasLayer(lname, weights))
        cfg = attrs.get("model_config")
        model_config = None
        if cfg is not None:
            try:
                model_config = json.loads(_text(cfg))
            except ValueError as e:
                raise ForeignCheckpointError(f"{path}: model_config is not valid JSON ({e})") from None
        version = _text(attrs.get("keras_version", root.attrs.get("keras_version", "unknown")))
        backend = _text(attrs.get("backend", root.attrs.get("backend", "unknown")))
    except (OSError, RuntimeError, KeyError) as e:
        raise ForeignCheckpointError(f"{path}: cannot be read ({e}); the file is truncated or damaged") from None
    finally:
        f.close()
    return KerasModelFile(path=path, layers=layers, model_config=model_config, keras_version=version,
                          backend=backend)


def config_layers(model_config: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(class_name, config) of every layer of a Sequential / functional model_config."""
    c = model_config.get("config")
    layers = c if isinstance(c, list) else (c or {}).get("layers", [])
    out = []
    for layer in layers:
        if isinstance(layer, Mapping) and "class_name" in layer:
            out.append((str(layer["class_name"]), dict(layer.get("config") or {})))
    return out


def activation(cfg: Mapping[str, Any], key: str = "activation") -> str:
    """A layer config's activation name ('linear' when absent), whatever the Keras version's serialization."""
    a = cfg.get(key, "linear")
    if isinstance(a, Mapping):   # tf.keras >= 2.? serializes activations as {"class_name": ..., "config": ...}
        a = a.get("config", {}).get("name") or a.get("class_name")
    return str(a)

