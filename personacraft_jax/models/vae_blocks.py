"""Building blocks of the AutoencoderKL (diffusers' VAE): NHWC, no time embedding.

Attribute names mirror the diffusers state-dict names (`resnets.0.norm1`, `downsamplers.0.conv`,
`attentions.0.to_out.0` ...), so the weight bridge is a mechanical mapping.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from personacraft_jax.models import layers
from personacraft_jax.models.attention import dot_product_attention
from personacraft_jax.models.layers import Precision

VAE_EPS = 1e-6  # diffusers' Encoder / Decoder pass resnet_eps=1e-6 to every block.
_CUDNN_MAX_HEAD_DIM = 128


class VAEResnetBlock(nnx.Module):
    """diffusers ResnetBlock2D without time embedding: (B, H, W, Cin) -> (B, H, W, Cout).

    out = shortcut(x) + conv2(act(norm2(conv1(act(norm1(x)))))); the shortcut is a 1x1 conv iff Cin != Cout.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, act_fn: str, precision: Precision, *, rngs):
        self.act: Callable[[jax.Array], jax.Array] = layers.activation(act_fn)
        self.norm1 = layers.group_norm(in_channels, groups, VAE_EPS, precision, rngs)
        self.conv1 = layers.conv2d(in_channels, out_channels, 3, precision, rngs)
        self.norm2 = layers.group_norm(out_channels, groups, VAE_EPS, precision, rngs)
        self.conv2 = layers.conv2d(out_channels, out_channels, 3, precision, rngs)
        self.conv_shortcut = (
            layers.conv2d(in_channels, out_channels, 1, precision, rngs) if in_channels != out_channels else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class VAEAttention(nnx.Module):
    """diffusers' mid-block spatial self-attention: (B, H, W, C) -> (B, H, W, C), residual included.

    group_norm -> to_q / to_k / to_v (with biases) over the H*W tokens -> softmax attention with
    C // head_dim heads (one head in every diffusers VAE) -> to_out.0 -> + input. With
    `Precision.attention == 'cudnn'` and a head wider than 128 it falls back to 'xla'.
    """

    def __init__(self, channels: int, head_dim: int, groups: int, precision: Precision, *, rngs):
        if channels % head_dim:
            raise ValueError(f"VAE attention: {channels} channels are not divisible by head dim {head_dim}")
        self.heads = channels // head_dim
        self.precision = precision
        self.group_norm = layers.group_norm(channels, groups, VAE_EPS, precision, rngs)
        self.to_q = layers.linear(channels, channels, precision, rngs, axes=("embed", "heads"))
        self.to_k = layers.linear(channels, channels, precision, rngs, axes=("embed", "heads"))
        self.to_v = layers.linear(channels, channels, precision, rngs, axes=("embed", "heads"))
        self.to_out = nnx.List([layers.linear(channels, channels, precision, rngs, axes=("heads", "embed"))])

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        tokens = self.group_norm(x).reshape(b, h * w, c)
        split = lambda t: t.reshape(b, h * w, self.heads, c // self.heads)
        impl = self.precision.attention
        if impl == "cudnn" and c // self.heads > _CUDNN_MAX_HEAD_DIM:
            impl = "xla"  # cuDNN flash attention does not take the VAE's 512-wide head.
        out = dot_product_attention(
            split(self.to_q(tokens)), split(self.to_k(tokens)), split(self.to_v(tokens)), implementation=impl
        )
        out = self.to_out[0](out.reshape(b, h * w, c))
        return x + out.reshape(b, h, w, c)


class Downsample(nnx.Module):
    """diffusers Downsample2D(padding=0): zero-pad right/bottom by 1, 3x3 conv stride 2; (B, H, W, C) -> (B, H/2, W/2, C)."""

    def __init__(self, channels: int, precision: Precision, *, rngs):
        self.conv = layers.conv2d(channels, channels, 3, precision, rngs, stride=2, padding=0)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))


class Upsample(nnx.Module):
    """diffusers Upsample2D(use_conv=True): nearest 2x, 3x3 conv; (B, H, W, C) -> (B, 2H, 2W, C)."""

    def __init__(self, channels: int, precision: Precision, *, rngs):
        self.conv = layers.conv2d(channels, channels, 3, precision, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class DownEncoderBlock(nnx.Module):
    """diffusers DownEncoderBlock2D: `num_layers` resnets, then an optional downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        groups: int,
        act_fn: str,
        add_downsample: bool,
        precision: Precision,
        *,
        rngs,
    ):
        self.precision = precision
        self.resnets = nnx.List(
            [
                VAEResnetBlock(
                    in_channels if i == 0 else out_channels, out_channels, groups, act_fn, precision, rngs=rngs
                )
                for i in range(num_layers)
            ]
        )
        self.downsamplers = nnx.List([Downsample(out_channels, precision, rngs=rngs)]) if add_downsample else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = layers.maybe_remat(resnet, self.precision, x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock(nnx.Module):
    """diffusers UpDecoderBlock2D: `num_layers` resnets, then an optional upsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        groups: int,
        act_fn: str,
        add_upsample: bool,
        precision: Precision,
        *,
        rngs,
    ):
        self.precision = precision
        self.resnets = nnx.List(
            [
                VAEResnetBlock(
                    in_channels if i == 0 else out_channels, out_channels, groups, act_fn, precision, rngs=rngs
                )
                for i in range(num_layers)
            ]
        )
        self.upsamplers = nnx.List([Upsample(out_channels, precision, rngs=rngs)]) if add_upsample else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = layers.maybe_remat(resnet, self.precision, x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class VAEMidBlock(nnx.Module):
    """diffusers UNetMidBlock2D as the VAE uses it: resnet, [attention], resnet (width preserved)."""

    def __init__(self, channels: int, groups: int, act_fn: str, add_attention: bool, precision: Precision, *, rngs):
        self.precision = precision
        self.attentions = (
            nnx.List([VAEAttention(channels, channels, groups, precision, rngs=rngs)]) if add_attention else None
        )
        self.resnets = nnx.List(
            [VAEResnetBlock(channels, channels, groups, act_fn, precision, rngs=rngs) for _ in range(2)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = layers.maybe_remat(self.resnets[0], self.precision, x)
        if self.attentions is not None:
            x = layers.maybe_remat(self.attentions[0], self.precision, x)
        return layers.maybe_remat(self.resnets[1], self.precision, x)
