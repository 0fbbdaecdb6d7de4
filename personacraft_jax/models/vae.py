"""AutoencoderKL (the SD / SDXL VAE) in Flax NNX, bridged to diffusers' `AutoencoderKL` folders.

Conventions: images are NHWC in [-1, 1]; latents are NHWC (B, H/f, W/f, latent_channels) with
f = 2 ** (len(block_out_channels) - 1). `encode` returns the diagonal Gaussian's (mean, logvar) after
quant_conv, logvar clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution does; the diffusion
model sees `(z - shift_factor) * scaling_factor` (see `latents_to_model` / `latents_from_model`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from personacraft_jax.convert.pretrained import SourceKeyDefaults
from personacraft_jax.models import layers
from personacraft_jax.models.layers import Precision
from personacraft_jax.models.vae_blocks import VAE_EPS, DownEncoderBlock, UpDecoderBlock, VAEMidBlock

_DOWN_BLOCK = "DownEncoderBlock2D"
_UP_BLOCK = "UpDecoderBlock2D"
_SUPPORTED_ACTS = ("silu", "swish", "gelu")


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
    """diffusers `AutoencoderKL` config (same field names and defaults)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = (_DOWN_BLOCK,)
    up_block_types: tuple[str, ...] = (_UP_BLOCK,)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, ...] = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self):
        for key in ("down_block_types", "up_block_types", "block_out_channels"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        for key in ("latents_mean", "latents_std"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(getattr(self, key)))
        if isinstance(self.sample_size, list):
            object.__setattr__(self, "sample_size", tuple(self.sample_size))
        n = len(self.block_out_channels)
        if n == 0:
            raise ValueError("AutoencoderKL config: block_out_channels is empty")
        for key, expected in (("down_block_types", _DOWN_BLOCK), ("up_block_types", _UP_BLOCK)):
            types = getattr(self, key)
            if len(types) != n:
                raise ValueError(f"AutoencoderKL config: {key} has {len(types)} entries, block_out_channels has {n}")
            if any(t != expected for t in types):
                raise ValueError(f"AutoencoderKL config: {key}={list(types)} unsupported; only {expected} is")
        if self.act_fn not in _SUPPORTED_ACTS:
            raise ValueError(
                f"AutoencoderKL config: act_fn={self.act_fn!r} unsupported; expected one of {_SUPPORTED_ACTS}"
            )
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"AutoencoderKL config: norm_num_groups={self.norm_num_groups} does not divide "
                    f"block_out_channels entry {c}"
                )
        if self.layers_per_block < 1:
            raise ValueError(f"AutoencoderKL config: layers_per_block={self.layers_per_block} must be >= 1")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AutoencoderKLConfig:
        """From a diffusers config.json dict; `_`-prefixed metadata is skipped, unknown keys are errors."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in config if not k.startswith("_") and k not in fields)
        if unknown:
            raise ValueError(f"AutoencoderKL config: unsupported keys {unknown}")
        if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
            raise ValueError(f"AutoencoderKL config: _class_name={config['_class_name']!r}, expected 'AutoencoderKL'")
        return cls(**{k: v for k, v in config.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        """The diffusers config fields (lists for tuples, as diffusers writes them)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def preset(name: str) -> ml_collections.ConfigDict:
    """A diffusers AutoencoderKL config: 'sdxl' (SDXL base 1.0 VAE), 'tiny' (CPU tests) or 'demo' (the demo's
    miniature world: 64 x 64 images -> 16 x 16 x 4 latents, trained from nothing on a CPU).

    `diffusers.AutoencoderKL(**preset(name))` builds the same architecture.
    """
    if name == "sdxl":
        cfg = dict(
            block_out_channels=[128, 256, 512, 512],
            down_block_types=[_DOWN_BLOCK] * 4,
            up_block_types=[_UP_BLOCK] * 4,
            layers_per_block=2,
            norm_num_groups=32,
            latent_channels=4,
            sample_size=1024,
            scaling_factor=0.13025,
            force_upcast=True,
        )
    elif name == "tiny":
        cfg = dict(
            block_out_channels=[8, 16],
            down_block_types=[_DOWN_BLOCK] * 2,
            up_block_types=[_UP_BLOCK] * 2,
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=4,
            sample_size=32,
            scaling_factor=0.13025,
        )
    elif name == "demo":
        cfg = dict(
            block_out_channels=[16, 32, 64],
            down_block_types=[_DOWN_BLOCK] * 3,
            up_block_types=[_UP_BLOCK] * 3,
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
            sample_size=64,
            mid_block_add_attention=False,  # fully convolutional: trained on crops, applied to whole images
            scaling_factor=1.0,  # set from the trained latents (train.autoencoder.latent_scaling_factor)
        )
    else:
        raise ValueError(f"unknown AutoencoderKL preset {name!r}; expected 'sdxl', 'tiny' or 'demo'")
    return ml_collections.ConfigDict(dict(in_channels=3, out_channels=3, act_fn="silu", **cfg))


class Encoder(nnx.Module):
    """diffusers vae.Encoder (double_z): (B, H, W, in_channels) -> (B, H/f, W/f, 2 * latent_channels)."""

    def __init__(self, config: AutoencoderKLConfig, precision: Precision, *, rngs: nnx.Rngs):
        ch = config.block_out_channels
        groups = config.norm_num_groups
        self.conv_in = layers.conv2d(config.in_channels, ch[0], 3, precision, rngs)
        self.down_blocks = nnx.List(
            [
                DownEncoderBlock(
                    ch[max(i - 1, 0)],
                    ch[i],
                    config.layers_per_block,
                    groups,
                    config.act_fn,
                    i < len(ch) - 1,
                    precision,
                    rngs=rngs,
                )
                for i in range(len(ch))
            ]
        )
        self.mid_block = VAEMidBlock(
            ch[-1], groups, config.act_fn, config.mid_block_add_attention, precision, rngs=rngs
        )
        self.conv_norm_out = layers.group_norm(ch[-1], groups, VAE_EPS, precision, rngs)
        self.conv_out = layers.conv2d(ch[-1], 2 * config.latent_channels, 3, precision, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))  # diffusers' conv_act is always SiLU


class Decoder(nnx.Module):
    """diffusers vae.Decoder (group norm): (B, h, w, latent_channels) -> (B, h*f, w*f, out_channels)."""

    def __init__(self, config: AutoencoderKLConfig, precision: Precision, *, rngs: nnx.Rngs):
        rev = tuple(reversed(config.block_out_channels))
        groups = config.norm_num_groups
        self.conv_in = layers.conv2d(config.latent_channels, rev[0], 3, precision, rngs)
        self.mid_block = VAEMidBlock(
            rev[0], groups, config.act_fn, config.mid_block_add_attention, precision, rngs=rngs
        )
        self.up_blocks = nnx.List(
            [
                UpDecoderBlock(
                    rev[max(i - 1, 0)],
                    rev[i],
                    config.layers_per_block + 1,
                    groups,
                    config.act_fn,
                    i < len(rev) - 1,
                    precision,
                    rngs=rngs,
                )
                for i in range(len(rev))
            ]
        )
        self.conv_norm_out = layers.group_norm(rev[-1], groups, VAE_EPS, precision, rngs)
        self.conv_out = layers.conv2d(rev[-1], config.out_channels, 3, precision, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


_LEGACY_ATTENTION = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")
_LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class AutoencoderKL(SourceKeyDefaults, nnx.Module):
    """The KL autoencoder; parameter paths mirror diffusers' `AutoencoderKL` state dict."""

    weights_name: ClassVar[str] = "diffusion_pytorch_model"

    def __init__(self, config: AutoencoderKLConfig, precision: Precision | None = None, *, rngs: nnx.Rngs):
        precision = precision or Precision()
        self.config = config
        self.precision = precision
        self.encoder = Encoder(config, precision, rngs=rngs)
        self.decoder = Decoder(config, precision, rngs=rngs)
        lat = config.latent_channels
        self.quant_conv = layers.conv2d(2 * lat, 2 * lat, 1, precision, rngs) if config.use_quant_conv else None
        self.post_quant_conv = layers.conv2d(lat, lat, 1, precision, rngs) if config.use_post_quant_conv else None

    # --- model -----------------------------------------------------------------------------------

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        """0.0 when the config has none (SD / SDXL)."""
        return self.config.shift_factor or 0.0

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, H, W, in_channels) in [-1, 1] -> (mean, logvar), each (B, H/f, W/f, latent_channels)."""
        moments = self.encoder(x.astype(self.precision.dtype))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """z (B, h, w, latent_channels), unscaled -> image (B, h*f, w*f, out_channels), nominally [-1, 1]."""
        z = z.astype(self.precision.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Reconstruction: decode(mean) (or a sample of the posterior when `rng` is given)."""
        mean, logvar = self.encode(x)
        z = mean if rng is None else sample_latent(mean, logvar, rng)
        return self.decode(z)

    def latents_to_model(self, z: jax.Array) -> jax.Array:
        """VAE latent -> diffusion-model latent: (z - shift_factor) * scaling_factor."""
        return (z - self.shift_factor) * self.scaling_factor

    def latents_from_model(self, z: jax.Array) -> jax.Array:
        """Inverse of `latents_to_model`."""
        return z / self.scaling_factor + self.shift_factor

    # --- PretrainedModel protocol -----------------------------------------------------------------

    @classmethod
    def config_from_pretrained(cls, config: Mapping[str, Any]) -> AutoencoderKLConfig:
        return AutoencoderKLConfig.from_dict(config)

    def pretrained_config(self) -> dict[str, Any]:
        return {"_class_name": "AutoencoderKL", **self.config.to_dict()}

    @classmethod
    def rename_source_key(cls, key: str) -> str:
        """Legacy attention names (query/key/value/proj_attn) -> to_q/to_k/to_v/to_out.0, as diffusers does."""
        m = _LEGACY_ATTENTION.match(key)
        if m is None:
            return key
        return f"{m.group(1)}{_LEGACY_NAMES[m.group(2)]}.{m.group(3)}"


def sample_latent(mean: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
    """A draw from N(mean, exp(logvar)) (diffusers' DiagonalGaussianDistribution.sample)."""
    std = jnp.exp(0.5 * logvar)
    return mean + std * jax.random.normal(rng, mean.shape, mean.dtype)
