"""Timestep embeddings of the diffusers UNet / ControlNet (`Timesteps`, `TimestepEmbedding`).

`timestep_embedding` reproduces diffusers' `get_timestep_embedding`: half the channels are sin, half cos
(`flip_sin_to_cos` puts cos first), frequencies exp(-log(max_period) * i / (half - downscale_freq_shift)).
The frequency table is computed in float32 exactly as PyTorch does (float32 arange, float32 exp).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from personacraft_jax.models import layers
from personacraft_jax.models.layers import Precision


def timestep_embedding(
    timesteps: jax.Array,
    dim: int,
    *,
    flip_sin_to_cos: bool = False,
    downscale_freq_shift: float = 1.0,
    scale: float = 1.0,
    max_period: int = 10000,
) -> jax.Array:
    """Sinusoidal embedding of 1-D `timesteps` (N,) (may be fractional) -> (N, dim) float32."""
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D, got shape {timesteps.shape}")
    half = dim // 2
    exponent = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)
    exponent = exponent / np.float32(half - downscale_freq_shift)
    freqs = jnp.asarray(np.exp(exponent))
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :] * scale
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class Timesteps(nnx.Module):
    """Parameter-free sinusoidal projection (diffusers `Timesteps`): (N,) -> (N, num_channels) float32."""

    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float):
        self.num_channels = num_channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = downscale_freq_shift

    def __call__(self, timesteps: jax.Array) -> jax.Array:
        return timestep_embedding(
            timesteps,
            self.num_channels,
            flip_sin_to_cos=self.flip_sin_to_cos,
            downscale_freq_shift=self.downscale_freq_shift,
        )


class TimestepEmbedding(nnx.Module):
    """linear_1 -> act -> linear_2 (diffusers `TimestepEmbedding`): (N, in_channels) -> (N, out_dim)."""

    def __init__(
        self,
        in_channels: int,
        time_embed_dim: int,
        precision: Precision,
        rngs: nnx.Rngs,
        *,
        act_fn: str = "silu",
        out_dim: int | None = None,
    ):
        self.linear_1 = layers.linear(in_channels, time_embed_dim, precision, rngs, axes=("embed", "mlp"))
        self.act = layers.activation(act_fn)
        self.linear_2 = layers.linear(time_embed_dim, out_dim or time_embed_dim, precision, rngs, axes=("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(self.act(self.linear_1(x)))
