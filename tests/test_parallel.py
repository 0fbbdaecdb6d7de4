"""Mesh construction and logical-axis sharding rules on 8 fake CPU devices."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from personacraft_jax.models import layers
from personacraft_jax.parallel import mesh as mesh_lib
from personacraft_jax.parallel import sharding


def test_resolve_axis_sizes_fills_minus_one():
    assert mesh_lib.resolve_axis_sizes({"data": 2, "fsdp": -1}, 8) == {"data": 2, "fsdp": 4, "tensor": 1}


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"data": 3, "fsdp": 1}, "needs 3 devices"),
        ({"data": -1, "fsdp": -1}, "at most one axis"),
        ({"data": 3, "fsdp": -1}, "not divisible"),
        ({"model": 8}, "unknown axes"),
        ({"data": 0}, "mesh.data=0"),
    ],
)
def test_bad_mesh_config_names_the_field(sizes, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.resolve_axis_sizes(sizes, 8)


def test_make_mesh_shape():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": -1})
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}


@dataclasses.dataclass(frozen=True)
class _FakeDevice:
    """What mesh construction reads of a device: two 'nodes' (processes) or 'slices' of 4 devices each."""

    id: int
    process_index: int
    slice_index: int
    platform: str
    device_kind: str = "fake"
    core_on_chip: int = 0

    @property
    def coords(self) -> tuple[int, int, int]:  # a 2x2x1 slice per group (TPU mesh construction reads it)
        return (self.id % 2, (self.id % 4) // 2, 0)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_hybrid_grid_keeps_each_group_inside_one_node_or_slice(platform):
    devices = [_FakeDevice(i, i // 4, i // 4, platform) for i in (4, 0, 5, 1, 6, 2, 7, 3)]  # interleaved
    group = (lambda d: d.process_index) if platform == "gpu" else (lambda d: d.slice_index)
    # data across nodes: each data replica's FSDP group sits inside one node.
    grid = mesh_lib.device_grid({"data": 2, "fsdp": 4}, devices, {"data": 2})
    assert grid.shape == (2, 4, 1)
    assert [sorted({group(d) for d in grid[i].ravel()}) for i in range(2)] == [[0], [1]]
    # fsdp across nodes: every FSDP group spans both nodes, two devices in each.
    grid = mesh_lib.device_grid({"data": 2, "fsdp": 4}, devices, {"fsdp": 2})
    for i in range(2):
        assert sorted(group(d) for d in grid[i].ravel()) == [0, 0, 1, 1]
    assert sorted(d.id for d in grid.ravel()) == list(range(8))


def test_hybrid_grid_groups_one_process_per_gpu_into_nodes():
    # SLURM with one task per GPU: 8 processes, ranks 0-3 on the first node, 4-7 on the second.
    devices = [_FakeDevice(i, i, 0, "gpu") for i in (6, 1, 4, 3, 0, 7, 2, 5)]
    grid = mesh_lib.device_grid({"data": 2, "fsdp": 4}, devices, {"data": 2})
    assert [[d.process_index for d in grid[i].ravel()] for i in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    uneven = [_FakeDevice(i, p, 0, "gpu") for i, p in enumerate([0, 0, 0, 0, 1, 1, 2, 2])]
    with pytest.raises(ValueError, match=r"mesh_dcn=.*3 processes cannot be split evenly into 2 nodes"):
        mesh_lib.device_grid({"data": 2, "fsdp": 4}, uneven, {"data": 2})
    lopsided = [_FakeDevice(i, p, 0, "gpu") for i, p in enumerate([0, 0, 0, 1, 1, 1, 1, 1])]
    with pytest.raises(ValueError, match=r"nodes hold \[3, 5\] devices each, expected 4"):
        mesh_lib.device_grid({"data": 2, "fsdp": 4}, lopsided, {"data": 2})


@pytest.mark.parametrize(
    "dcn, message",
    [({"data": 3}, r"mesh_dcn\.data=3: expected a positive divisor of mesh\.data=2"), ({"pipe": 2}, "unknown axes"),
     ({"data": 2, "fsdp": 2}, "cannot split the devices over nodes")],
)  # fmt: skip
def test_bad_mesh_dcn_names_the_field(dcn, message):
    devices = [_FakeDevice(i, i // 4, i // 4, "gpu") for i in range(8)]
    with pytest.raises(ValueError, match=message):
        mesh_lib.device_grid({"data": 2, "fsdp": 4}, devices, dcn)


def test_partition_spec_replicates_indivisible_dims():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    rules = sharding.DEFAULT_RULES
    assert sharding.partition_spec((64, 32), ("embed", "mlp"), mesh, rules) == P("fsdp", "tensor")
    assert sharding.partition_spec((6, 32), ("embed", "mlp"), mesh, rules) == P(None, "tensor")
    assert sharding.partition_spec((3, 3, 4, 6), (None, None, "conv_in", "conv_out"), mesh, rules) == P(
        None, None, None, None
    )
    with pytest.raises(ValueError, match="no sharding rule"):
        sharding.partition_spec((8,), ("unknown",), mesh, rules)


class _Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        precision = layers.Precision()
        self.conv = layers.conv2d(4, 16, 3, precision, rngs)
        self.proj = layers.linear(16, 8, precision, rngs)

    def __call__(self, x):
        return self.proj(self.conv(x))


def test_sharded_state_computes_like_replicated():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    model = _Tiny(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    shardings = sharding.state_shardings(state, mesh)
    sharded_state = jax.device_put(state, shardings)
    assert sharded_state["conv"]["kernel"].get_value().sharding.spec == P(None, None, None, "fsdp")
    assert sharded_state["proj"]["kernel"].get_value().sharding.spec == P("fsdp", "tensor")
    x = jax.random.normal(jax.random.key(1), (8, 5, 5, 4))
    x_sharded = jax.device_put(x, sharding.batch_sharding(mesh, 4))

    @jax.jit
    def apply(state, x):
        return nnx.merge(graphdef, state)(x)

    np.testing.assert_allclose(apply(sharded_state, x_sharded), model(x), rtol=1e-5, atol=1e-6)
    assert jnp.all(jnp.isfinite(apply(sharded_state, x_sharded)))
