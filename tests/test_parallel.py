"""Mesh construction and logical-axis sharding rules on 8 fake CPU devices."""

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
