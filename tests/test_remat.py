"""Per-block remat inside a jitted, differentiated step gives the same loss and gradients as no remat."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from personacraft_jax.models import unet as unet_lib
from personacraft_jax.models.layers import Precision


def _loss_and_grads(remat: str):
    config = unet_lib.UNetConfig.from_diffusers(unet_lib.preset("tiny"))
    model = unet_lib.UNet2DConditionModel(config, dataclasses.replace(Precision(), remat=remat), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    text = rng.normal(size=(2, 5, config.cross_attention_dim)).astype(np.float32)
    pooled = rng.normal(size=(2, 16)).astype(np.float32)
    time_ids = np.ones((2, 6), np.float32)

    @jax.jit
    def loss_and_grads(params, x):
        # As in the train step: a frozen network merged inside the differentiated function, its parameters
        # coming from the outer (jit) trace, the gradient taken with respect to its input.
        def loss(x):
            out = nnx.merge(graphdef, params)(x, jnp.array([3, 500]), text, pooled, time_ids)
            return jnp.mean(out**2)

        return jax.value_and_grad(loss)(x)

    return loss_and_grads(params, x)


@pytest.mark.parametrize("policy", ["full", "dots_saveable"])
def test_remat_matches_no_remat(policy):
    loss, grads = _loss_and_grads("none")
    loss_r, grads_r = _loss_and_grads(policy)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
