"""Device mesh from the config's ``mesh.shape`` string.

One mesh with three named axes serves every setting (one CPU, a GPU node, a TPU pod):

* ``data``   - pure data parallelism: parameters replicated, batch split.
* ``fsdp``   - data parallelism whose parameters/optimizer state are also split
               (fully-sharded data parallel); the batch is split over it too.
* ``tensor`` - splits single weight matrices (model parallelism inside a layer).

``mesh.shape`` is written ``"data:2,fsdp:2,tensor:2"``; one axis may be ``-1`` and then takes
whatever devices remain; axes left out have size 1. The mesh always has the three axes in
the order data, fsdp, tensor (tensor innermost, so it lands on the fastest links).
Axis types are ``Auto``: ``jax.make_mesh`` defaults to ``Explicit`` axes, which would turn
every sharding mismatch into a type error instead of letting XLA propagate shardings.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from gesture_jax.errors import UserError

AXES: tuple[str, ...] = ("data", "fsdp", "tensor")
BATCH_AXES: tuple[str, ...] = ("data", "fsdp")  # the batch dimension is split over both


class MeshConfigError(UserError, ValueError):
    """``mesh.shape`` cannot be parsed or does not fit the available devices."""


def parse_mesh_shape(spec: str, num_devices: int) -> dict[str, int]:
    """``"data:-1,fsdp:2"`` -> ``{"data": n/2, "fsdp": 2, "tensor": 1}`` for ``n`` devices."""
    sizes: dict[str, int] = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, sep, size = part.partition(":")
        name = name.strip()
        if not sep or name not in AXES:
            raise MeshConfigError(
                f"mesh.shape={spec!r}: entry {part!r} must be NAME:SIZE with NAME in {list(AXES)}")
        if name in sizes:
            raise MeshConfigError(f"mesh.shape={spec!r}: axis {name!r} given twice")
        try:
            sizes[name] = int(size)
        except ValueError:
            raise MeshConfigError(f"mesh.shape={spec!r}: size {size!r} of axis {name!r} is not an integer")
        if sizes[name] == 0 or sizes[name] < -1:
            raise MeshConfigError(f"mesh.shape={spec!r}: axis {name!r} has size {sizes[name]}; use >=1 or -1")
    free = [n for n, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise MeshConfigError(f"mesh.shape={spec!r}: only one axis may be -1, got {free}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise MeshConfigError(
                f"mesh.shape={spec!r}: {num_devices} devices are not divisible by the fixed axes' product {fixed}")
        sizes[free[0]] = num_devices // fixed
    out = {a: sizes.get(a, 1) for a in AXES}
    if math.prod(out.values()) != num_devices:
        raise MeshConfigError(
            f"mesh.shape={spec!r} asks for {math.prod(out.values())} devices ({out}) but "
            f"{num_devices} are available; use -1 on one axis to take the rest")
    return out


def make_mesh(spec: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build the (data, fsdp, tensor) mesh over ``devices`` (default: all global devices)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = parse_mesh_shape(spec, len(devices))
    shape = tuple(sizes[a] for a in AXES)
    axis_types = (AxisType.Auto,) * len(AXES)
    if devices == list(jax.devices()):
        # make_mesh knows the physical topology (TPU/GPU) and orders devices accordingly.
        return jax.make_mesh(shape, AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=axis_types)


def batch_parallelism(mesh: Mesh) -> int:
    """Number of ways the batch dimension is split (data x fsdp)."""
    return int(math.prod(mesh.shape[a] for a in BATCH_AXES))
