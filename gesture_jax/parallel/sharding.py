"""Sharding rules: which mesh axes split which parameter, and where activations live.

Rules come from the config (``mesh.rules``) as ``(regex, tactic)`` pairs, big_vision style.
A parameter's *path* is its nnx state path joined with ``/`` (``blocks/3/attn/qkv/kernel``);
optimizer-state and EMA leaves have paths that end with the parameter's path
(``0/mu/blocks/3/attn/qkv/kernel``), so one rule set shards params, Adam moments and EMA
identically. The first rule whose regex ``re.search``-es the path wins. Tactics:

* ``"replicate"``    every device holds the whole array.
* ``"fsdp"``         the largest dimension that the ``fsdp`` axis divides is split over it.
* ``"fsdp+tensor"``  the last dimension (a dense/conv layer's output features) is split over
                     ``tensor`` and the largest remaining dimension over ``fsdp``.
* ``"a,b,c"``        an explicit PartitionSpec, one entry per dimension: an axis name,
                     ``None``/``-`` (not split) or ``x+y`` (split over both axes).

An axis whose size does not divide the dimension it was given is dropped (that dimension
is replicated over it), so one rule set works for every mesh shape. Arrays with fewer than
``mesh.min_shard_size`` elements are replicated: splitting a bias costs more in
communication than it saves.

Activations: the batch dimension is split over ``("data", "fsdp")``. The train step pins
its inputs, the conditioning and the outputs with :func:`constrain_batch` - without these
pins, XLA's sharding propagation on a (2,2,2) mesh produced silently wrong numbers
(DESIGN.md, "Known pitfalls").
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gesture_jax.errors import UserError
from gesture_jax.parallel.mesh import AXES, BATCH_AXES

Rule = tuple[str, str]
DEFAULT_RULES: tuple[Rule, ...] = (
    (r"(kernel|embedding|weight)$", "fsdp+tensor"),
    (r".*", "replicate"),
)


class ShardingRuleError(UserError, ValueError):
    """A sharding rule that cannot be parsed or applied."""


def path_to_str(path: Sequence[Any]) -> str:
    """jax key path -> ``a/b/0/kernel`` (nnx's trailing ``.value`` is dropped)."""
    parts: list[str] = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    if parts and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def _axis_size(mesh: Mesh, axes: str | tuple[str, ...] | None) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return int(math.prod(mesh.shape[a] for a in axes))


def _parse_explicit(tactic: str, ndim: int, path: str) -> list[str | tuple[str, ...] | None]:
    entries = [e.strip() for e in tactic.split(",")]
    if len(entries) != ndim:
        raise ShardingRuleError(
            f"sharding rule {tactic!r} has {len(entries)} entries but {path} has {ndim} dimensions")
    spec: list[str | tuple[str, ...] | None] = []
    for e in entries:
        if e in ("", "-", "None", "none"):
            spec.append(None)
            continue
        names = tuple(n.strip() for n in e.split("+"))
        for n in names:
            if n not in AXES:
                raise ShardingRuleError(f"sharding rule {tactic!r}: unknown mesh axis {n!r} (axes: {AXES})")
        spec.append(names[0] if len(names) == 1 else names)
    return spec


def spec_for(path: str, shape: Sequence[int], mesh: Mesh, rules: Iterable[Rule],
             min_size: int = 0) -> P:
    """PartitionSpec for one array (see the module docstring for the tactics)."""
    ndim = len(shape)
    if ndim == 0 or math.prod(shape) < min_size:
        return P()
    for regex, tactic in rules:
        if re.search(regex, path):
            break
    else:
        return P()
    tactic = tactic.strip()
    spec: list[str | tuple[str, ...] | None] = [None] * ndim
    if tactic == "replicate":
        return P()
    if tactic in ("fsdp", "fsdp+tensor"):
        taken: set[int] = set()
        if tactic == "fsdp+tensor" and ndim >= 2 and mesh.shape["tensor"] > 1:
            if shape[-1] % mesh.shape["tensor"] == 0:
                spec[-1] = "tensor"
                taken.add(ndim - 1)
        n = mesh.shape["fsdp"]
        if n > 1:
            # Largest dimension that fsdp divides (ties: the earliest, i.e. input features).
            candidates = [i for i in range(ndim) if i not in taken and shape[i] % n == 0]
            if candidates:
                best = max(candidates, key=lambda i: (shape[i], -i))
                spec[best] = "fsdp"
    else:
        spec = _parse_explicit(tactic, ndim, path)
        for i, axes in enumerate(spec):
            if axes is not None and shape[i] % _axis_size(mesh, axes) != 0:
                spec[i] = None  # does not divide: replicate this dimension
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def tree_shardings(tree: Any, mesh: Mesh, rules: Iterable[Rule] = DEFAULT_RULES,
                   min_size: int = 0) -> Any:
    """A pytree of NamedShardings matching ``tree`` (arrays or ShapeDtypeStructs)."""
    rules = list(rules)

    def one(path, leaf):
        shape = getattr(leaf, "shape", ())
        return NamedSharding(mesh, spec_for(path_to_str(path), shape, mesh, rules, min_size))

    return jax.tree_util.tree_map_with_path(one, tree)


def describe(tree: Any, shardings: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """``[(path, shape, spec)]`` for logging which rule placed what."""
    out = []
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    specs = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    for (path, leaf), sh in zip(leaves, specs):
        out.append((path_to_str(path), tuple(getattr(leaf, "shape", ())), str(sh.spec)))
    return out


def rules_from_config(mesh_cfg: Any) -> list[Rule]:
    """``mesh.rules`` as a list of (regex, tactic) pairs, validated."""
    rules = [tuple(r) for r in (mesh_cfg.get("rules") or DEFAULT_RULES)]
    for r in rules:
        if len(r) != 2 or not all(isinstance(x, str) for x in r):
            raise ShardingRuleError(f"mesh.rules entries must be (regex, tactic) string pairs; got {r!r}")
        try:
            re.compile(r[0])
        except re.error as e:
            raise ShardingRuleError(f"mesh.rules: bad regex {r[0]!r}: {e}") from e
    return rules  # type: ignore[return-value]


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Batch-major arrays: dimension 0 split over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Pin an activation's batch dimension to (data, fsdp); a no-op without a mesh."""
    if mesh is None or x.ndim == 0:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim))


def without_axis(shardings: Any, axis: str) -> Any:
    """The same shardings with ``axis`` removed from every spec (that dimension is gathered)."""
    def drop(sh: NamedSharding) -> NamedSharding:
        spec = []
        for entry in sh.spec:
            if entry == axis:
                entry = None
            elif isinstance(entry, tuple):
                rest = tuple(a for a in entry if a != axis)
                entry = rest[0] if len(rest) == 1 else (rest or None)
            spec.append(entry)
        return NamedSharding(sh.mesh, P(*spec))
    return jax.tree_util.tree_map(drop, shardings, is_leaf=lambda x: isinstance(x, NamedSharding))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
