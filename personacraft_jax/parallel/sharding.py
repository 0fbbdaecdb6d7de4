"""Logical-axis -> mesh-axis rules and the shardings they give parameters and batches.

Parameters carry logical axis names (see `models/layers.py`). A rule maps a logical name to a mesh axis
(or a tuple of axes, or None = replicated). A dimension whose size is not divisible by its mesh axes is
replicated instead: tiny layers (a 4-channel conv) stay whole while the large ones are split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Mapping[str, str | tuple[str, ...] | None]

# ZeRO-3 style: every large parameter is split over `fsdp` along one axis; `tensor` splits features.
DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "conv_in": None,
    "conv_out": "fsdp",
    "vocab": None,
    "norm": None,
}


def _axis_size(mesh: Mesh, axes: str | tuple[str, ...] | None) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def partition_spec(
    shape: Sequence[int], logical_axes: Sequence[str | None] | None, mesh: Mesh, rules: Rules
) -> PartitionSpec:
    """The PartitionSpec of an array with `logical_axes`, replicating dimensions the mesh does not divide."""
    if not logical_axes:
        return PartitionSpec()
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not fit an array of shape {tuple(shape)}")
    spec, used = [], set()
    for size, name in zip(shape, logical_axes, strict=True):
        if name is not None and name not in rules:
            raise ValueError(f"no sharding rule for logical axis {name!r}; rules cover {sorted(rules)}")
        axes = rules[name] if name is not None else None
        flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        if not flat or used & set(flat) or size % _axis_size(mesh, axes):
            spec.append(None)
            continue
        used |= set(flat)
        spec.append(axes)
    return PartitionSpec(*spec)


def state_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for an `nnx.State` (concrete or abstract), from each Variable's logical axes."""

    def one(variable: nnx.Variable) -> nnx.Variable:
        value = variable.get_value()
        axes = variable.get_metadata().get("out_sharding")
        return variable.replace(NamedSharding(mesh, partition_spec(value.shape, axes, mesh, rules)))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """Sharding of a batch-major array of rank `ndim`: the leading axis over the `batch` rule's mesh axes."""
    return NamedSharding(mesh, PartitionSpec(rules["batch"], *([None] * (ndim - 1))))
