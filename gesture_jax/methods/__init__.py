"""Method plug-ins: ``cfg.method`` names one; ``get_method(name)`` returns it.

| name | method | folder |
|---|---|---|
| ``persona_gestor`` | Persona-Gestor: WavLM -> fuzzy features -> AdaLN transformer DDPM (the reference) | persona_gestor/ |
| ``kucherenko`` | Kucherenko et al. 2019: motion autoencoder + MFCC speech network (regression) | kucherenko/ |

A new method is a folder with a ``Method`` subclass (methods/base.py) and one line in
``_REGISTRY``; the trainer, generate and evaluate are not edited.
"""
from __future__ import annotations

import difflib
import importlib

from gesture_jax.methods.base import DataDims, Method, MethodError

__all__ = ["DEFAULT_METHOD", "DataDims", "Method", "MethodError", "available", "get_method", "method_name"]

# name -> "module:attribute" (imported on first use: a method's dependencies load only when chosen)
_REGISTRY: dict[str, str] = {
    "persona_gestor": "gesture_jax.methods.persona_gestor.method:PersonaGestor",
    "kucherenko": "gesture_jax.methods.kucherenko.method:Kucherenko",
}
_INSTANCES: dict[str, Method] = {}
# What a config (or a run's config.json) without a ``method`` key means: runs and configs
# written before methods were plug-ins are Persona-Gestor's.
DEFAULT_METHOD = "persona_gestor"


def method_name(cfg) -> str:
    """``cfg.method`` of a ConfigDict or a config.json dict, DEFAULT_METHOD when absent."""
    return str(cfg.get("method", DEFAULT_METHOD) or DEFAULT_METHOD)


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """The method registered as ``name``; MethodError (with the closest names) otherwise."""
    name = str(name)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise MethodError(f"unknown method {name!r} (config key `method`); known methods: "
                          f"{', '.join(available())}.{hint}")
    if name not in _INSTANCES:
        module, attr = _REGISTRY[name].split(":")
        _INSTANCES[name] = getattr(importlib.import_module(module), attr)()
    return _INSTANCES[name]
