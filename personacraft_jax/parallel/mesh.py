"""Device mesh construction from a config: axes ('data', 'fsdp', 'tensor').

The batch is sharded over `data` x `fsdp`; trainable parameters and optimizer state over `fsdp`
(ZeRO-3 style); `tensor` splits matmul output features. One axis size may be -1 (= the remaining devices).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
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


def resolve_dcn_sizes(dcn_axis_sizes: Mapping[str, int] | None, sizes: Mapping[str, int]) -> dict[str, int]:
    """The across-slices / across-nodes factor of each axis (default 1); each must divide the axis size."""
    dcn_axis_sizes = dict(dcn_axis_sizes or {})
    unknown = set(dcn_axis_sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"config mesh_dcn has unknown axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
    dcn = {axis: int(dcn_axis_sizes.get(axis, 1)) for axis in MESH_AXES}
    for axis, size in dcn.items():
        if size < 1 or sizes[axis] % size:
            raise ValueError(f"config mesh_dcn.{axis}={size}: expected a positive divisor of mesh.{axis}={sizes[axis]}")
    return dcn


def node_groups(devices: Sequence[jax.Device], count: int) -> list[list[jax.Device]]:
    """GPU/CPU devices split into `count` nodes: consecutive process indices, equally many per node.

    Covers one process per node and one process per GPU with SLURM's default block distribution of
    ranks (ranks 0..k-1 on the first node, k..2k-1 on the second, ...). Devices keep (process, id) order.
    """
    processes = sorted({d.process_index for d in devices})
    if len(processes) % count:
        raise ValueError(f"{len(processes)} processes cannot be split evenly into {count} nodes")
    per_node = len(processes) // count
    node_of = {p: rank // per_node for rank, p in enumerate(processes)}
    groups: list[list[jax.Device]] = [[] for _ in range(count)]
    for device in sorted(devices, key=lambda d: (d.process_index, d.id)):
        groups[node_of[device.process_index]].append(device)
    return groups


def _hybrid_grid(inner: tuple[int, ...], dcn_shape: tuple[int, ...], devices: Sequence[jax.Device]) -> np.ndarray:
    """An (inner * dcn_shape) device array whose dcn_shape blocks are whole TPU slices or GPU nodes."""
    if devices[0].platform == "tpu":
        return mesh_utils.create_hybrid_device_mesh(inner, dcn_shape, devices)  # groups by slice_index
    groups = node_groups(devices, math.prod(dcn_shape))
    sizes = {len(group) for group in groups}
    if sizes != {math.prod(inner)}:
        raise ValueError(f"nodes hold {sorted(sizes)} devices each, expected {math.prod(inner)}")
    blocks = np.empty(dcn_shape, dtype=object)
    for index, group in zip(np.ndindex(*dcn_shape), groups, strict=True):
        blocks[index] = np.asarray(group, dtype=object).reshape(inner)
    return np.block(blocks.tolist())


def device_grid(
    axis_sizes: Mapping[str, int],
    devices: Sequence[jax.Device],
    dcn_axis_sizes: Mapping[str, int] | None = None,
) -> np.ndarray:
    """`devices` arranged as a ('data', 'fsdp', 'tensor') array.

    `dcn_axis_sizes` (config `mesh_dcn`): how much of each axis spans the slow network, e.g. {'data': 2}
    for two TPU slices (grouped by `slice_index`) or two GPU nodes (see `node_groups`) that each hold a
    data-parallel replica group; the rest of every axis stays on the fast links (ICI / NVLink). Without it,
    a full TPU/GPU device set gets `create_device_mesh`'s topology-aware order, anything else the given order.
    """
    if not devices:
        raise ValueError("no devices to build the mesh from")
    sizes = resolve_axis_sizes(axis_sizes, len(devices))
    dcn = resolve_dcn_sizes(dcn_axis_sizes, sizes)
    shape = tuple(sizes[axis] for axis in MESH_AXES)
    if math.prod(dcn.values()) > 1:
        dcn_shape = tuple(dcn[axis] for axis in MESH_AXES)
        inner = tuple(size // d for size, d in zip(shape, dcn_shape, strict=True))
        try:
            return _hybrid_grid(inner, dcn_shape, devices)
        except ValueError as e:
            granule = "slices" if devices[0].platform == "tpu" else "nodes"
            raise ValueError(f"config mesh_dcn={dcn}: cannot split the devices over {granule} that way ({e})") from e
    if devices[0].platform in ("tpu", "gpu") and len(devices) == jax.device_count():
        return mesh_utils.create_device_mesh(shape, devices)
    return np.asarray(devices).reshape(shape)


def make_mesh(
    axis_sizes: Mapping[str, int],
    devices: Sequence[jax.Device] | None = None,
    dcn_axis_sizes: Mapping[str, int] | None = None,
) -> Mesh:
    """A Mesh over `devices` (default: all) with axes ('data', 'fsdp', 'tensor'); see `device_grid`."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(device_grid(axis_sizes, devices, dcn_axis_sizes), MESH_AXES)
