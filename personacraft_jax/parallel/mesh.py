"""Device mesh construction from a config: axes ('data', 'fsdp', 'tensor').

The batch is sharded over `data` x `fsdp`; trainable parameters and optimizer state over `fsdp`
(ZeRO-3 style); `tensor` splits matmul output features. One axis size may be -1 (= the remaining devices).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_axis_sizes(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills in a -1 axis and checks that the sizes multiply to `num_devices` (errors name `mesh.<axis>`)."""
    unknown = set(axis_sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"config mesh has unknown axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
    sizes = {axis: int(axis_sizes.get(axis, 1)) for axis in MESH_AXES}
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"config mesh: at most one axis may be -1, got {free}")
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ValueError(f"config mesh.{axis}={size}; expected a positive size or -1")
    known = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % known:
            raise ValueError(
                f"config mesh: {num_devices} devices are not divisible by the fixed axes' product {known} "
                f"({sizes}), so mesh.{free[0]}=-1 cannot be resolved"
            )
        sizes[free[0]] = num_devices // known
    elif known != num_devices:
        raise ValueError(f"config mesh {sizes} needs {known} devices, but {num_devices} are available")
    return sizes


def make_mesh(axis_sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh over `devices` (default: all) with axes ('data', 'fsdp', 'tensor')."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_axis_sizes(axis_sizes, len(devices))
    shape = tuple(sizes[axis] for axis in MESH_AXES)
    if devices and devices[0].platform in ("tpu", "gpu") and len(devices) == jax.device_count():
        device_array = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
    else:
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)
