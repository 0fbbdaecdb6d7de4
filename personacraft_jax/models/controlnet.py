"""SDXL ControlNet in Flax NNX, parameter-for-parameter the diffusers `ControlNetModel`.

The ControlNet is the UNet's down path (conv_in, time / added embeddings, down blocks, mid block) plus
- `controlnet_cond_embedding`: conv_in -> [3x3 conv, 3x3 stride-2 conv] per width step -> conv_out, SiLU
  between, mapping the conditioning image (B, 8H, 8W, Cc) NHWC in [0, 1] to (B, H, W, C0), added to conv_in(sample);
- `controlnet_down_blocks`: one 1x1 conv per down-path skip (conv_in output, every resnet / attention output,
  every downsampler output), `controlnet_mid_block`: a 1x1 conv on the mid-block output.
Outputs are the residuals times `conditioning_scale`, ready for `UNet2DConditionModel`'s residual inputs.
All controlnet_* 1x1 convs and the conditioning embedding's conv_out start at zero (as diffusers), so a fresh
ControlNet (or `from_unet`) adds exactly nothing to the UNet.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from personacraft_jax.convert.pretrained import SourceKeyDefaults
from personacraft_jax.models import layers
from personacraft_jax.models import unet as unet_lib
from personacraft_jax.models.layers import Precision, maybe_remat
from personacraft_jax.models.unet import (
    ADDITION_EMBED_TYPES,
    DOWN_BLOCK_TYPES,
    MID_BLOCK_TYPES,
    UNet2DConditionModel,
    UNetConfig,
    check_act_fn,
    check_choice,
    diffusers_dict,
    parse_diffusers_config,
    per_block,
)

CONTROLNET_FIXED_KEYS: dict[str, tuple[Any, ...]] = {
    "only_cross_attention": (False,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "resnet_time_scale_shift": ("default",),
}

# The UNet's down-path parameters that `from_unet` copies (as diffusers' ControlNetModel.from_unet).
COPIED_FROM_UNET = ("conv_in", "time_embedding", "add_embedding", "down_blocks", "mid_block")


@dataclasses.dataclass(frozen=True)
class ControlNetConfig(unet_lib.BlockLayout):
    """diffusers `ControlNetModel` config (field names and defaults as diffusers); see `preset`."""

    in_channels: int = 4
    conditioning_channels: int = 3
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 1280
    transformer_layers_per_block: int | tuple = 1
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    use_linear_projection: bool = False
    addition_embed_type: str | None = None
    addition_time_embed_dim: int | None = None
    projection_class_embeddings_input_dim: int | None = None
    controlnet_conditioning_channel_order: str = "rgb"
    conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    global_pool_conditions: bool = False
    addition_embed_type_num_heads: int = 64
    upcast_attention: bool | None = False  # no effect here, as in the UNet (see `unet`'s module docstring)

    # Fixed by diffusers' ControlNetModel (not a config key there); read by `unet.build_down_path`.
    conv_in_kernel: ClassVar[int] = 3

    def __post_init__(self):
        n = len(self.down_block_types)
        check_act_fn(self)
        check_choice("upcast_attention", self.upcast_attention, (False, True, None))
        for t in self.down_block_types:
            check_choice("down_block_types", t, DOWN_BLOCK_TYPES)
        check_choice("mid_block_type", self.mid_block_type, MID_BLOCK_TYPES)
        check_choice("addition_embed_type", self.addition_embed_type, ADDITION_EMBED_TYPES)
        check_choice(
            "controlnet_conditioning_channel_order", self.controlnet_conditioning_channel_order, ("rgb", "bgr")
        )
        if len(self.block_out_channels) != n:
            raise ValueError("config keys 'down_block_types' and 'block_out_channels' differ in length")
        if not isinstance(self.layers_per_block, int):
            raise ValueError("config key 'layers_per_block' must be an int for a ControlNet")
        if not isinstance(self.cross_attention_dim, int):
            raise ValueError("config key 'cross_attention_dim' must be an int for a ControlNet")
        if self.addition_embed_type == "text_time" and None in (
            self.addition_time_embed_dim,
            self.projection_class_embeddings_input_dim,
        ):
            raise ValueError(
                "addition_embed_type 'text_time' needs 'addition_time_embed_dim' and "
                "'projection_class_embeddings_input_dim'"
            )
        for c, h in zip(self.block_out_channels, self.heads):
            if c % h or c % self.norm_num_groups:
                raise ValueError(f"block width {c} is not divisible by its head count {h} or by 'norm_num_groups'")
        per_block(self.transformer_layers_per_block, n, "transformer_layers_per_block")

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> ControlNetConfig:
        """Validated config from a diffusers ControlNet config dict (config.json or `preset`)."""
        return parse_diffusers_config(cls, config, CONTROLNET_FIXED_KEYS)

    def to_diffusers(self) -> dict[str, Any]:
        """The config.json dict `diffusers.ControlNetModel` reads."""
        return diffusers_dict(self, CONTROLNET_FIXED_KEYS, "ControlNetModel")

    @classmethod
    def from_unet_config(
        cls,
        u: UNetConfig,
        *,
        conditioning_channels: int = 3,
        conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        controlnet_conditioning_channel_order: str = "rgb",
    ) -> ControlNetConfig:
        """The config diffusers' `ControlNetModel.from_unet` derives from a UNet config."""
        unsupported = {
            "conv_in_kernel": (u.conv_in_kernel, 3),
            "time_embedding_dim": (u.time_embedding_dim, None),
        }
        for key, (value, needed) in unsupported.items():
            if value != needed:
                raise ValueError(f"ControlNet from a UNet with {key}={value!r}: diffusers' ControlNet needs {needed!r}")
        return cls(
            in_channels=u.in_channels,
            conditioning_channels=conditioning_channels,
            flip_sin_to_cos=u.flip_sin_to_cos,
            freq_shift=u.freq_shift,
            down_block_types=u.down_block_types,
            mid_block_type=u.mid_block_type,
            block_out_channels=u.block_out_channels,
            layers_per_block=u.layers_per_block,
            downsample_padding=u.downsample_padding,
            mid_block_scale_factor=u.mid_block_scale_factor,
            act_fn=u.act_fn,
            norm_num_groups=u.norm_num_groups,
            norm_eps=u.norm_eps,
            cross_attention_dim=u.cross_attention_dim,
            transformer_layers_per_block=u.transformer_layers_per_block,
            attention_head_dim=u.attention_head_dim,
            use_linear_projection=u.use_linear_projection,
            addition_embed_type=u.addition_embed_type,
            addition_time_embed_dim=u.addition_time_embed_dim,
            projection_class_embeddings_input_dim=u.projection_class_embeddings_input_dim,
            controlnet_conditioning_channel_order=controlnet_conditioning_channel_order,
            conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels),
            addition_embed_type_num_heads=u.addition_embed_type_num_heads,
            upcast_attention=u.upcast_attention,
        )

    @property
    def heads(self) -> tuple[int, ...]:
        """Head COUNT per block: num_attention_heads, else (diffusers' quirk) attention_head_dim."""
        value = self.num_attention_heads if self.num_attention_heads is not None else self.attention_head_dim
        return per_block(value, self.num_blocks, "attention_head_dim")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]


class ControlNetConditioningEmbedding(nnx.Module):
    """Conditioning image (B, 8H, 8W, Cc) -> (B, H, W, C0): conv_in, SiLU, [conv, SiLU, stride-2 conv, SiLU]..., conv_out."""

    def __init__(
        self,
        out_channels: int,
        conditioning_channels: int,
        widths: tuple[int, ...],
        precision: Precision,
        rngs: nnx.Rngs,
    ):
        self.conv_in = layers.conv2d(conditioning_channels, widths[0], 3, precision, rngs)
        blocks = []
        for cin, cout in itertools.pairwise(widths):
            blocks.append(layers.conv2d(cin, cin, 3, precision, rngs))
            blocks.append(layers.conv2d(cin, cout, 3, precision, rngs, stride=2))
        self.blocks = nnx.List(blocks)
        self.conv_out = layers.conv2d(widths[-1], out_channels, 3, precision, rngs, zero_init=True)

    def __call__(self, cond: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.conv_in(cond))
        for conv in self.blocks:
            h = jax.nn.silu(conv(h))
        return self.conv_out(h)


def _zero_conv(channels: int, precision: Precision, rngs: nnx.Rngs) -> nnx.Conv:
    return layers.conv2d(channels, channels, 1, precision, rngs, zero_init=True)


class ControlNetModel(SourceKeyDefaults, nnx.Module):
    """The SDXL ControlNet; `__call__` returns (down residuals, mid residual), NHWC (see the module docstring)."""

    weights_name: ClassVar[str] = "diffusion_pytorch_model"

    def __init__(self, config: ControlNetConfig, precision: Precision | None = None, *, rngs: nnx.Rngs):
        c = self.config = config
        p = self.precision = precision or Precision()
        ch = c.block_out_channels
        unet_lib.build_down_path(self, c, p, rngs)
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(
            ch[0], c.conditioning_channels, c.conditioning_embedding_out_channels, p, rngs
        )
        convs = [_zero_conv(ch[0], p, rngs)]
        for i in range(c.num_blocks):
            convs += [_zero_conv(ch[i], p, rngs) for _ in range(c.layers_per_block)]
            if i < c.num_blocks - 1:
                convs.append(_zero_conv(ch[i], p, rngs))
        self.controlnet_down_blocks = nnx.List(convs)
        self.controlnet_mid_block = _zero_conv(ch[-1], p, rngs)

    # PretrainedModel protocol.
    @classmethod
    def config_from_pretrained(cls, config: Mapping[str, Any]) -> ControlNetConfig:
        return ControlNetConfig.from_diffusers(config)

    def pretrained_config(self) -> dict[str, Any]:
        return self.config.to_diffusers()

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        *,
        conditioning_channels: int = 3,
        conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        controlnet_conditioning_channel_order: str = "rgb",
        precision: Precision | None = None,
        rngs: nnx.Rngs,
    ) -> ControlNetModel:
        """As diffusers' `ControlNetModel.from_unet`: copies conv_in, time / added embeddings, down blocks and
        mid block from `unet` (fresh buffers, in this model's param dtype); every controlnet_* conv and the
        conditioning embedding's conv_out are zero, so all residuals are exactly zero."""
        config = ControlNetConfig.from_unet_config(
            unet.config,
            conditioning_channels=conditioning_channels,
            conditioning_embedding_out_channels=conditioning_embedding_out_channels,
            controlnet_conditioning_channel_order=controlnet_conditioning_channel_order,
        )
        model = cls(config, precision or unet.precision, rngs=rngs)
        for name in COPIED_FROM_UNET:
            target = getattr(model, name)
            if target is not None:
                _copy_params(getattr(unet, name), target, name)
        return model

    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array | float,
        encoder_hidden_states: jax.Array,
        controlnet_cond: jax.Array,
        text_embeds: jax.Array | None = None,
        time_ids: jax.Array | None = None,
        conditioning_scale: float | jax.Array = 1.0,
    ) -> tuple[tuple[jax.Array, ...], jax.Array]:
        """sample (B,H,W,C), controlnet_cond (B,8H,8W,Cc) -> (down residuals, mid residual), times the scale.

        `conditioning_scale`: a scalar or a per-example (B,) array.
        """
        c, p = self.config, self.precision
        if c.controlnet_conditioning_channel_order == "bgr":
            controlnet_cond = controlnet_cond[..., ::-1]
        emb = unet_lib.time_conditioning(self, timesteps, sample.shape[0], text_embeds, time_ids, p.dtype)
        h = self.conv_in(sample) + self.controlnet_cond_embedding(controlnet_cond)
        h, skips = unet_lib.run_down_path(self, h, emb, encoder_hidden_states, None, 1.0)
        h = maybe_remat(self.mid_block, p, h, emb, encoder_hidden_states)
        scale = jnp.asarray(conditioning_scale)
        scale = scale.reshape(-1, 1, 1, 1) if scale.ndim else scale
        down = tuple(conv(s) * scale for conv, s in zip(self.controlnet_down_blocks, skips, strict=True))
        mid = self.controlnet_mid_block(h) * scale
        if c.global_pool_conditions:
            down = tuple(d.mean(axis=(1, 2), keepdims=True) for d in down)
            mid = mid.mean(axis=(1, 2), keepdims=True)
        return down, mid


def _copy_params(source: nnx.Module, target: nnx.Module, name: str) -> None:
    """Copies every parameter of `target` from the same path in `source` (fresh buffers, target dtype)."""
    src = dict(nnx.to_flat_state(nnx.state(source, nnx.Param)))
    new = []
    for path, var in nnx.to_flat_state(nnx.state(target, nnx.Param)):
        if path not in src:
            raise ValueError(f"from_unet: the UNet has no parameter {name}.{'.'.join(map(str, path))}")
        value, old = src[path].get_value(), var.get_value()
        if value.shape != old.shape:
            raise ValueError(
                f"from_unet: {name}.{'.'.join(map(str, path))} is {value.shape} in the UNet, {old.shape} here"
            )
        new.append((path, var.replace(jnp.array(value, dtype=old.dtype, copy=True))))
    nnx.update(target, nnx.from_flat_state(new))


# Conditioning-embedding widths per preset: one stride-2 conv per step after the first, so len - 1 = log2 of
# the VAE factor the preset's UNet works with (8 for SDXL and the tiny tests, 4 for the demo world).
CONDITIONING_EMBEDDING_WIDTHS = {"sdxl": (16, 32, 96, 256), "tiny": (8, 8, 16, 16), "demo": (16, 32, 32)}


def preset(name: str, conditioning_channels: int = 4) -> ml_collections.ConfigDict:
    """A diffusers ControlNet config ('tiny', 'demo' or 'sdxl'), i.e. what `from_unet` makes of
    `unet.preset(name)`. `diffusers.ControlNetModel(**preset(name))` builds it. SCNet's default is 4
    conditioning channels.
    """
    ucfg = UNetConfig.from_diffusers(unet_lib.preset(name))
    widths = CONDITIONING_EMBEDDING_WIDTHS[name]
    cfg = ControlNetConfig.from_unet_config(
        ucfg, conditioning_channels=conditioning_channels, conditioning_embedding_out_channels=widths
    )
    out = {k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_") and k not in CONTROLNET_FIXED_KEYS}
    return ml_collections.ConfigDict(out)
