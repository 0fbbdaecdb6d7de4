"""SDXL UNet2DConditionModel in Flax NNX, parameter-for-parameter the diffusers model.

Layout: `sample` (B, H, W, C) NHWC; `encoder_hidden_states` (B, T, cross_attention_dim); `timesteps` (B,) or a
scalar; SDXL's added conditioning `text_embeds` (B, P) and `time_ids` (B, 6). ControlNet residuals are NHWC,
one per down-path skip (conv_in output, every resnet / attention output, every downsampler output), plus
the mid-block residual; each may be given alone (both are simply added).

`UNetConfig` carries the diffusers config field names; `UNetConfig.from_diffusers` validates a config.json
dict: a key this implementation does not support (e.g. `class_embed_type`) with a value other than the one
it implements raises a ValueError naming the key and the supported value; keys starting with '_' are
ignored; unknown keys raise. Naming quirk kept from diffusers: `attention_head_dim` holds the number of
attention HEADS per block (SDXL's [5, 10, 20]); `num_attention_heads` must be None.

Keys accepted with any valid value because diffusers reads them nowhere in the block types implemented here
(same weights, same outputs; kept in the config so that it round-trips): `resnet_out_scale_factor` and
`resnet_skip_time_act` (only ResnetDownsampleBlock2D / SimpleCrossAttn* / ResnetUpsampleBlock2D use them),
`cross_attention_norm` (only SimpleCrossAttn* blocks), `mid_block_only_cross_attention` (only
UNetMidBlock2DSimpleCrossAttn), `dropout` (identity outside training; the UNet is only ever frozen here) and
`upcast_attention` (fp32 q k^T in diffusers' classic attention processor, a no-op in fp32; its default SDPA
processor ignores it, and the attention here computes logits and softmax in fp32 at any compute dtype).
`act_fn` takes diffusers' activations (`get_activation`: silu / swish, mish, gelu, relu; any case).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from personacraft_jax.convert.pretrained import SourceKeyDefaults
from personacraft_jax.models import layers
from personacraft_jax.models.embeddings import TimestepEmbedding, Timesteps
from personacraft_jax.models.layers import Precision, maybe_remat
from personacraft_jax.models.unet_blocks import (
    AttnSettings,
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    DownBlock2D,
    ResnetSettings,
    UNetMidBlock2DCrossAttn,
    UpBlock2D,
)

DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn",)
ADDITION_EMBED_TYPES = (None, "text_time")

# diffusers config keys whose value must be one this implementation supports (the first is written out).
UNET_FIXED_KEYS: dict[str, tuple[Any, ...]] = {
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "time_embedding_type": ("positional",),
    "resnet_time_scale_shift": ("default",),
    "attention_type": ("default",),
    "dual_cross_attention": (False,),
    "only_cross_attention": (False,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "class_embeddings_concat": (False,),
    "num_attention_heads": (None,),
}
# diffusers' `get_activation` names (it lower-cases `act_fn` first).
DIFFUSERS_ACTIVATIONS = ("silu", "swish", "mish", "gelu", "relu")
# Values diffusers documents for `cross_attention_norm` (read by no block type implemented here).
CROSS_ATTENTION_NORMS = (None, "layer_norm", "group_norm")

C = TypeVar("C")


class BlockLayout:
    """Per-down-block views of the diffusers fields a UNet and a ControlNet config share."""

    down_block_types: tuple[str, ...]
    layers_per_block: Any
    cross_attention_dim: Any
    transformer_layers_per_block: Any

    @property
    def num_blocks(self) -> int:
        return len(self.down_block_types)

    @property
    def layers(self) -> tuple[int, ...]:
        return per_block(self.layers_per_block, self.num_blocks, "layers_per_block")

    @property
    def cross_attention_dims(self) -> tuple[int, ...]:
        return per_block(self.cross_attention_dim, self.num_blocks, "cross_attention_dim")

    @property
    def transformer_depths(self) -> tuple[Any, ...]:
        return per_block(self.transformer_layers_per_block, self.num_blocks, "transformer_layers_per_block")


def _freeze(value: Any) -> Any:
    """JSON lists -> tuples (recursively), so configs are hashable."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list | tuple) else value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _accepted(value: Any, supported: tuple[Any, ...]) -> bool:
    if isinstance(value, list | tuple):  # per-block form of a flag, e.g. only_cross_attention [False, False]
        return all(_accepted(v, supported) for v in value)
    return value in supported


def parse_diffusers_config(cls: type[C], config: Mapping[str, Any], fixed: Mapping[str, tuple[Any, ...]]) -> C:
    """Builds the dataclass `cls` from a diffusers config dict, strictly (see the module docstring)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key in fixed:
            if not _accepted(value, fixed[key]):
                raise ValueError(
                    f"{cls.__name__}: config key {key!r}={value!r} is not supported; supported value: {fixed[key][0]!r}"
                )
        elif key in names:
            kwargs[key] = _freeze(value)
        else:
            raise ValueError(f"{cls.__name__}: unknown config key {key!r}")
    return cls(**kwargs)


def diffusers_dict(config: Any, fixed: Mapping[str, tuple[Any, ...]], class_name: str) -> dict[str, Any]:
    """The config.json dict of a config dataclass: its fields plus the fixed keys at their supported value."""
    out = {k: _thaw(v) for k, v in dataclasses.asdict(config).items()}
    out.update({k: v[0] for k, v in fixed.items()})
    return {"_class_name": class_name, **out}


def per_block(value: Any, n: int, key: str) -> tuple[Any, ...]:
    """An int-or-per-block config value as one entry per block (errors name the key)."""
    if isinstance(value, tuple):
        if len(value) != n:
            raise ValueError(f"config key {key!r} has {len(value)} entries; expected one per block ({n})")
        return value
    return (value,) * n


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r}={value!r} is not supported; supported values: {list(choices)}")


def check_act_fn(config: Any) -> None:
    """Validates `config.act_fn` against diffusers' activations and stores it lower-cased (as diffusers reads it)."""
    value = config.act_fn
    check_choice("act_fn", value.lower() if isinstance(value, str) else value, DIFFUSERS_ACTIVATIONS)
    object.__setattr__(config, "act_fn", value.lower())


def check_no_op_options(config: Any) -> None:
    """Types / ranges of the keys diffusers ignores for these block types (module docstring)."""
    if isinstance(config.dropout, bool) or not isinstance(config.dropout, int | float) or not 0 <= config.dropout <= 1:
        raise ValueError(f"config key 'dropout'={config.dropout!r} is not supported; expected a number in [0, 1]")
    check_choice("cross_attention_norm", config.cross_attention_norm, CROSS_ATTENTION_NORMS)
    for key, choices in (
        ("upcast_attention", (False, True, None)),
        ("resnet_skip_time_act", (False, True)),
        ("mid_block_only_cross_attention", (None, False, True)),
    ):
        check_choice(key, getattr(config, key), choices)


@dataclasses.dataclass(frozen=True)
class UNetConfig(BlockLayout):
    """diffusers `UNet2DConditionModel` config (field names and defaults as diffusers); see `preset`."""

    sample_size: int | None = None
    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int | tuple[int, ...] = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int | tuple[int, ...] = 1280
    transformer_layers_per_block: int | tuple = 1
    reverse_transformer_layers_per_block: tuple | None = None
    attention_head_dim: int | tuple[int, ...] = 8
    use_linear_projection: bool = False
    addition_embed_type: str | None = None
    addition_time_embed_dim: int | None = None
    projection_class_embeddings_input_dim: int | None = None
    addition_embed_type_num_heads: int = 64
    time_embedding_dim: int | None = None
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    # Read by no block type implemented here (module docstring); the model never uses them.
    resnet_out_scale_factor: float = 1.0
    resnet_skip_time_act: bool = False
    cross_attention_norm: str | None = None
    mid_block_only_cross_attention: bool | None = None
    dropout: float = 0.0
    upcast_attention: bool | None = False

    def __post_init__(self):
        n = len(self.down_block_types)
        check_act_fn(self)
        check_no_op_options(self)
        for t in self.down_block_types:
            check_choice("down_block_types", t, DOWN_BLOCK_TYPES)
        for t in self.up_block_types:
            check_choice("up_block_types", t, UP_BLOCK_TYPES)
        check_choice("mid_block_type", self.mid_block_type, MID_BLOCK_TYPES)
        check_choice("addition_embed_type", self.addition_embed_type, ADDITION_EMBED_TYPES)
        if len(self.up_block_types) != n or len(self.block_out_channels) != n:
            raise ValueError("config keys 'down_block_types', 'up_block_types', 'block_out_channels' differ in length")
        if self.norm_num_groups is None:
            raise ValueError("config key 'norm_num_groups'=None is not supported; supported: an int")
        if self.addition_embed_type == "text_time" and None in (
            self.addition_time_embed_dim,
            self.projection_class_embeddings_input_dim,
        ):
            raise ValueError(
                "addition_embed_type 'text_time' needs 'addition_time_embed_dim' and "
                "'projection_class_embeddings_input_dim'"
            )
        depths = self.transformer_layers_per_block
        per_layer = isinstance(depths, tuple) and any(isinstance(d, tuple) for d in depths)
        if per_layer and self.reverse_transformer_layers_per_block is None:
            raise ValueError("per-layer 'transformer_layers_per_block' needs 'reverse_transformer_layers_per_block'")
        for c, h in zip(self.block_out_channels, self.heads):
            if c % h or c % self.norm_num_groups:
                raise ValueError(
                    f"block width {c} is not divisible by its head count {h} ('attention_head_dim') "
                    f"or by 'norm_num_groups'={self.norm_num_groups}"
                )
        for key in ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block"):
            per_block(getattr(self, key), n, key)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> UNetConfig:
        """Validated config from a diffusers config dict (config.json or `preset`)."""
        return parse_diffusers_config(cls, config, UNET_FIXED_KEYS)

    def to_diffusers(self) -> dict[str, Any]:
        """The config.json dict `diffusers.UNet2DConditionModel` reads."""
        return diffusers_dict(self, UNET_FIXED_KEYS, "UNet2DConditionModel")

    @property
    def heads(self) -> tuple[int, ...]:
        """Attention head COUNT per down block (diffusers: num_attention_heads = attention_head_dim)."""
        return per_block(self.attention_head_dim, self.num_blocks, "attention_head_dim")

    @property
    def up_transformer_depths(self) -> tuple[Any, ...]:
        if self.reverse_transformer_layers_per_block is not None:
            return per_block(
                self.reverse_transformer_layers_per_block, self.num_blocks, "reverse_transformer_layers_per_block"
            )
        return tuple(reversed(self.transformer_depths))

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]


def time_conditioning(
    model: Any,
    timesteps: jax.Array | float,
    batch: int,
    text_embeds: jax.Array | None,
    time_ids: jax.Array | None,
    dtype: Any,
) -> jax.Array:
    """emb = time_embedding(time_proj(t)) [+ add_embedding(text_embeds ++ add_time_proj(time_ids))], (B, E).

    `model` has `time_proj`, `time_embedding` and, for SDXL's 'text_time', `add_time_proj` / `add_embedding`
    (None otherwise). time_ids (B, K) are embedded one value at a time and concatenated after text_embeds.
    """
    t = jnp.broadcast_to(jnp.asarray(timesteps).reshape(-1), (batch,))
    emb = model.time_embedding(model.time_proj(t).astype(dtype))
    if model.add_embedding is not None:
        if text_embeds is None or time_ids is None:
            raise ValueError("addition_embed_type 'text_time' needs text_embeds and time_ids")
        time_embeds = model.add_time_proj(time_ids.reshape(-1)).reshape(batch, -1)
        add = jnp.concatenate([text_embeds.astype(jnp.float32), time_embeds], axis=-1).astype(dtype)
        emb = emb + model.add_embedding(add)
    return emb


def build_down_path(model: Any, c: Any, precision: Precision, rngs: nnx.Rngs, *, ip_adapter: bool = False) -> None:
    """Sets conv_in, time_proj, time_embedding, add_time_proj, add_embedding, down_blocks, mid_block on `model`.

    `c` is a `UNetConfig` or a `ControlNetConfig` (same field names); shared so that ControlNet.from_unet is a copy.
    """
    ch, ted = c.block_out_channels, c.time_embed_dim
    model.conv_in = layers.conv2d(c.in_channels, ch[0], c.conv_in_kernel, precision, rngs)
    model.time_proj = Timesteps(ch[0], c.flip_sin_to_cos, c.freq_shift)
    model.time_embedding = TimestepEmbedding(ch[0], ted, precision, rngs, act_fn=c.act_fn)
    text_time = c.addition_embed_type == "text_time"
    model.add_time_proj = Timesteps(c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift) if text_time else None
    model.add_embedding = (
        TimestepEmbedding(c.projection_class_embeddings_input_dim, ted, precision, rngs) if text_time else None
    )
    res = ResnetSettings(ted, c.norm_eps, c.norm_num_groups, c.act_fn)
    blocks = []
    for i, kind in enumerate(c.down_block_types):
        cin, cout, last = ch[max(i - 1, 0)], ch[i], i == len(ch) - 1
        common = dict(add_downsample=not last, downsample_padding=c.downsample_padding)
        if kind == "DownBlock2D":
            blocks.append(DownBlock2D(cin, cout, c.layers[i], res, precision, rngs, **common))
        else:
            attn = AttnSettings(c.heads[i], c.cross_attention_dims[i], c.use_linear_projection, ip_adapter)
            depth = c.transformer_depths[i]
            blocks.append(CrossAttnDownBlock2D(cin, cout, c.layers[i], res, attn, depth, precision, rngs, **common))
    model.down_blocks = nnx.List(blocks)
    mid_res = dataclasses.replace(res, output_scale_factor=c.mid_block_scale_factor)
    mid_attn = AttnSettings(c.heads[-1], c.cross_attention_dims[-1], c.use_linear_projection, ip_adapter)
    model.mid_block = UNetMidBlock2DCrossAttn(ch[-1], mid_res, mid_attn, c.transformer_depths[-1], precision, rngs)


def run_down_path(
    model: Any,
    h: jax.Array,
    emb: jax.Array,
    context: jax.Array,
    ip_tokens: jax.Array | None,
    ip_scale: float | jax.Array,
) -> tuple[jax.Array, list[jax.Array]]:
    """Down blocks (each rematerialised per `model.precision.remat`); returns (h, skips incl. the input h)."""
    skips = [h]
    for block in model.down_blocks:
        if block.has_cross_attention:
            h, res = maybe_remat(block, model.precision, h, emb, context, ip_tokens, ip_scale)
        else:
            h, res = maybe_remat(block, model.precision, h, emb)
        skips.extend(res)
    return h, skips


class UNet2DConditionModel(SourceKeyDefaults, nnx.Module):
    """The SDXL UNet; `__call__` maps a noisy NHWC latent to the NHWC prediction (see the module docstring).

    `ip_adapter_tokens` > 0 adds the IP-Adapter branch (to_k_ip / to_v_ip) to every cross-attention; those
    parameters are not part of the diffusers UNet folder (they come from the ip-adapter file).
    """

    weights_name: ClassVar[str] = "diffusion_pytorch_model"

    def __init__(
        self,
        config: UNetConfig,
        precision: Precision | None = None,
        *,
        rngs: nnx.Rngs,
        ip_adapter_tokens: int = 0,
    ):
        c = self.config = config
        p = self.precision = precision or Precision()
        self.ip_adapter_tokens = ip_adapter_tokens
        ip = ip_adapter_tokens > 0
        build_down_path(self, c, p, rngs, ip_adapter=ip)
        ch, rev = c.block_out_channels, tuple(reversed(c.block_out_channels))
        res = ResnetSettings(c.time_embed_dim, c.norm_eps, c.norm_num_groups, c.act_fn)
        heads, layers_, cross = (tuple(reversed(x)) for x in (c.heads, c.layers, c.cross_attention_dims))
        blocks = []
        for i, kind in enumerate(c.up_block_types):
            prev, cout, cin = rev[max(i - 1, 0)], rev[i], rev[min(i + 1, len(ch) - 1)]
            n, up = layers_[i] + 1, i < len(ch) - 1
            if kind == "UpBlock2D":
                blocks.append(UpBlock2D(cin, prev, cout, n, res, p, rngs, add_upsample=up))
            else:
                attn = AttnSettings(heads[i], cross[i], c.use_linear_projection, ip)
                depth = c.up_transformer_depths[i]
                blocks.append(CrossAttnUpBlock2D(cin, prev, cout, n, res, attn, depth, p, rngs, add_upsample=up))
        self.up_blocks = nnx.List(blocks)
        self.conv_norm_out = layers.group_norm(ch[0], c.norm_num_groups, c.norm_eps, p, rngs)
        self.conv_act = layers.activation(c.act_fn)
        self.conv_out = layers.conv2d(ch[0], c.out_channels, c.conv_out_kernel, p, rngs)

    # PretrainedModel protocol.
    @classmethod
    def config_from_pretrained(cls, config: Mapping[str, Any]) -> UNetConfig:
        return UNetConfig.from_diffusers(config)

    def pretrained_config(self) -> dict[str, Any]:
        return self.config.to_diffusers()

    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array | float,
        encoder_hidden_states: jax.Array,
        text_embeds: jax.Array | None = None,
        time_ids: jax.Array | None = None,
        *,
        down_block_additional_residuals: Sequence[jax.Array] | None = None,
        mid_block_additional_residual: jax.Array | None = None,
        ip_tokens: jax.Array | None = None,
        ip_scale: float | jax.Array = 1.0,
    ) -> jax.Array:
        """sample (B,H,W,C_in) -> (B,H,W,C_out). `ip_scale`: a scalar or per-example (B,) IP-Adapter weight.

        Per-person IP (see `unet_blocks`): ip_tokens (B, P, S, D), ip_scale scalar / (B,) / region weights (B, h, w, P).
        """
        c, p = self.config, self.precision
        self._check_ip_tokens(ip_tokens, sample.shape[0])
        if c.center_input_sample:
            sample = 2 * sample - 1.0
        emb = time_conditioning(self, timesteps, sample.shape[0], text_embeds, time_ids, p.dtype)
        context = encoder_hidden_states
        h, skips = run_down_path(self, self.conv_in(sample), emb, context, ip_tokens, ip_scale)
        if down_block_additional_residuals is not None:
            if len(down_block_additional_residuals) != len(skips):
                raise ValueError(
                    f"{len(down_block_additional_residuals)} down residuals given; the UNet has {len(skips)} skips"
                )
            skips = [s + r for s, r in zip(skips, down_block_additional_residuals)]
        h = maybe_remat(self.mid_block, p, h, emb, context, ip_tokens, ip_scale)
        if mid_block_additional_residual is not None:
            h = h + mid_block_additional_residual
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = tuple(skips[-n:]), skips[:-n]
            size = tuple(skips[-1].shape[1:3]) if i < len(self.up_blocks) - 1 else None
            if block.has_cross_attention:
                h = maybe_remat(block, p, h, res, emb, context, ip_tokens, ip_scale, output_size=size)
            else:
                h = maybe_remat(block, p, h, res, emb, output_size=size)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))

    def _check_ip_tokens(self, ip_tokens: jax.Array | None, batch: int) -> None:
        if ip_tokens is None:
            return
        if not self.ip_adapter_tokens:
            raise ValueError("ip_tokens given, but the UNet was built with ip_adapter_tokens=0")
        expected = (batch, self.ip_adapter_tokens, self.config.cross_attention_dims[0])
        if ip_tokens.ndim == 4:  # one token set per person: (B, P, S, D)
            expected = (batch, ip_tokens.shape[1], *expected[1:])
        if tuple(ip_tokens.shape) != expected:
            raise ValueError(f"ip_tokens shape {tuple(ip_tokens.shape)}; expected {expected}")


_PRESETS: dict[str, dict[str, Any]] = {
    # The real SDXL base 1.0 UNet (stabilityai/stable-diffusion-xl-base-1.0/unet/config.json).
    "sdxl": dict(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        norm_num_groups=32,
        norm_eps=1e-5,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
    ),
    # Same block types and add-embedding scheme, CPU-test sized: text_embeds 16 + 6 time ids x 8 = 64.
    "tiny": dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(1, 2),
        cross_attention_dim=24,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64,
        norm_num_groups=8,
        norm_eps=1e-5,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
    ),
    # The demo's miniature world (configs/demo.py): SDXL's three block types at 16 x 16 latents (64 x 64
    # pixels with a 4x VAE), trained from nothing on a CPU in minutes; the tiny text encoders' widths.
    "demo": dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 1),
        attention_head_dim=(1, 2, 2),
        cross_attention_dim=24,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64,
        norm_num_groups=8,
        norm_eps=1e-5,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
    ),
}


def preset(name: str) -> ml_collections.ConfigDict:
    """A diffusers UNet config ('tiny', 'demo' or 'sdxl'): `diffusers.UNet2DConditionModel(**preset(name))`
    builds it."""
    if name not in _PRESETS:
        raise ValueError(f"unknown UNet preset {name!r}; expected one of {sorted(_PRESETS)}")
    return ml_collections.ConfigDict(_PRESETS[name])
