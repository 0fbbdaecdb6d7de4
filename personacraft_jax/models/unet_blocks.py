"""Building blocks of the diffusers SDXL UNet / ControlNet, in Flax NNX (activations NHWC).

Attribute names mirror the diffusers module names (`resnets`, `attentions`, `downsamplers`, `to_out.0`,
`ff.net.0.proj`, ...), so every parameter path is its PyTorch state-dict key (see `convert.state_dict`).
Only the configuration SDXL uses is implemented: pre-norm `ResnetBlock2D` with the "default" time-embedding
add, `Transformer2DModel` with LayerNorm `BasicTransformerBlock`s (self-attn, cross-attn, GEGLU feed-forward).

IP-Adapter seam (InstantID): a cross-attention `Attention` built with `ip_adapter=True` owns bias-free
`to_k_ip` / `to_v_ip` and, given `ip_tokens` (B, S, cross_attention_dim), returns
    to_out(Attn(q, K_text, V_text) + ip_scale * Attn(q, to_k_ip(ip_tokens), to_v_ip(ip_tokens))).
Several token sets (one per person): `ip_tokens` (B, P, S, D) and `ip_scale` either a scalar / (B,) or region
weights (B, Hm, Wm, P) on a grid that the layer's token grid divides (e.g. the latent grid); each person's IP
output is then weighted per query token by its weights block-averaged to the layer's (h, w) and summed:
    to_out(Attn_text + sum_p w_p * Attn(q, to_k_ip(ip_tokens[:, p]), to_v_ip(ip_tokens[:, p]))).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from personacraft_jax.models import layers
from personacraft_jax.models.attention import dot_product_attention
from personacraft_jax.models.layers import Precision

Skips = tuple[jax.Array, ...]


@dataclasses.dataclass(frozen=True)
class ResnetSettings:
    """What every ResnetBlock2D of one model shares (diffusers: norm_eps, norm_num_groups, act_fn, ...).

    `output_scale_factor` divides the block output: the mid block's `mid_block_scale_factor`; 1 in the down and
    up blocks (diffusers' DownBlock2D / CrossAttn*Block2D / UpBlock2D never read `resnet_out_scale_factor`).
    """

    temb_channels: int
    eps: float = 1e-5
    groups: int = 32
    act_fn: str = "silu"
    output_scale_factor: float = 1.0


@dataclasses.dataclass(frozen=True)
class AttnSettings:
    """Per-block cross-attention settings. `heads` is the head COUNT (diffusers' `num_attention_heads`)."""

    heads: int
    cross_attention_dim: int
    use_linear_projection: bool = True
    ip_adapter: bool = False


def _scale_shape(scale: float | jax.Array, ndim: int) -> float | jax.Array:
    """A scalar stays; a per-example (B,) scale broadcasts over the other `ndim - 1` axes."""
    scale = jnp.asarray(scale)
    return scale.reshape(scale.shape + (1,) * (ndim - scale.ndim)) if scale.ndim else scale


def region_weights_to_tokens(weights: jax.Array, num_tokens: int) -> jax.Array:
    """Region weights (B, Hm, Wm, P) -> (B, T, P) on a layer's h x w = T token grid (row-major), by block means.

    The grid keeps the weights' aspect ratio: r = sqrt(Hm * Wm / T) must be an integer dividing Hm and Wm.
    """
    b, hm, wm, p = weights.shape
    r = round((hm * wm / num_tokens) ** 0.5)
    if r < 1 or hm % r or wm % r or (hm // r) * (wm // r) != num_tokens:
        raise ValueError(f"IP region weights of grid {hm}x{wm} do not pool to {num_tokens} tokens")
    pooled = weights.reshape(b, hm // r, r, wm // r, r, p).mean(axis=(2, 4))
    return pooled.reshape(b, num_tokens, p)


class ResnetBlock2D(nnx.Module):
    """norm1-act-conv1 (+ time_emb_proj(act(temb))) norm2-act-conv2, plus the (1x1) shortcut; (B,H,W,Cin)->(B,H,W,Cout)."""

    def __init__(self, in_channels: int, out_channels: int, s: ResnetSettings, precision: Precision, rngs: nnx.Rngs):
        self.norm1 = layers.group_norm(in_channels, s.groups, s.eps, precision, rngs)
        self.conv1 = layers.conv2d(in_channels, out_channels, 3, precision, rngs)
        self.time_emb_proj = layers.linear(s.temb_channels, out_channels, precision, rngs, axes=("embed", "conv_out"))
        self.norm2 = layers.group_norm(out_channels, s.groups, s.eps, precision, rngs)
        self.conv2 = layers.conv2d(out_channels, out_channels, 3, precision, rngs)
        self.conv_shortcut = (
            layers.conv2d(in_channels, out_channels, 1, precision, rngs) if in_channels != out_channels else None
        )
        self.act = layers.activation(s.act_fn)
        self.output_scale_factor = s.output_scale_factor

    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time_emb_proj(self.act(temb))[:, None, None, :]
        h = self.conv2(self.act(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Downsample2D(nnx.Module):
    """3x3 stride-2 conv; padding 0 pads (bottom, right) by one as diffusers does. (B,H,W,C)->(B,H/2,W/2,C)."""

    def __init__(self, channels: int, padding: int, precision: Precision, rngs: nnx.Rngs):
        self.padding = padding
        self.conv = layers.conv2d(channels, channels, 3, precision, rngs, stride=2, padding=padding)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.conv(x)


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch `F.interpolate(mode='nearest')` on NHWC: source index floor(dst * in / out)."""
    (h, w), (oh, ow) = x.shape[1:3], size
    if (oh, ow) == (2 * h, 2 * w):
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    rows = jnp.floor(jnp.arange(oh) * (h / oh)).astype(jnp.int32).clip(0, h - 1)
    cols = jnp.floor(jnp.arange(ow) * (w / ow)).astype(jnp.int32).clip(0, w - 1)
    return x[:, rows][:, :, cols]


class Upsample2D(nnx.Module):
    """Nearest 2x (or to `output_size`) then a 3x3 conv. (B,H,W,C)->(B,2H,2W,C)."""

    def __init__(self, channels: int, precision: Precision, rngs: nnx.Rngs):
        self.conv = layers.conv2d(channels, channels, 3, precision, rngs)

    def __call__(self, x: jax.Array, output_size: tuple[int, int] | None = None) -> jax.Array:
        size = output_size or (2 * x.shape[1], 2 * x.shape[2])
        return self.conv(nearest_resize(x, size))


class Attention(nnx.Module):
    """Multi-head attention with to_q/to_k/to_v (no bias) and to_out.0; self-attention when context is None.

    x (B, T, query_dim), context (B, S, cross_attention_dim) -> (B, T, query_dim). With `ip_adapter`, the
    decoupled IP-Adapter branch (module docstring) is added when `ip_tokens` is given.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        precision: Precision,
        rngs: nnx.Rngs,
        *,
        cross_attention_dim: int | None = None,
        ip_adapter: bool = False,
    ):
        inner, kv_dim = heads * dim_head, cross_attention_dim or query_dim
        self.heads, self.dim_head, self.attention = heads, dim_head, precision.attention
        self.to_q = layers.linear(query_dim, inner, precision, rngs, use_bias=False, axes=("embed", "heads"))
        self.to_k = layers.linear(kv_dim, inner, precision, rngs, use_bias=False, axes=("embed", "heads"))
        self.to_v = layers.linear(kv_dim, inner, precision, rngs, use_bias=False, axes=("embed", "heads"))
        self.to_out = nnx.List([layers.linear(inner, query_dim, precision, rngs, axes=("heads", "embed"))])
        if ip_adapter and cross_attention_dim is None:
            raise ValueError("the IP-Adapter branch belongs to a cross-attention (cross_attention_dim is None)")
        ip = lambda: layers.linear(kv_dim, inner, precision, rngs, use_bias=False, axes=("embed", "heads"))
        self.to_k_ip = ip() if ip_adapter else None
        self.to_v_ip = ip() if ip_adapter else None

    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:2], self.heads, self.dim_head)

    def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        out = dot_product_attention(q, self._heads(k), self._heads(v), implementation=self.attention)
        return out.reshape(*out.shape[:2], self.heads * self.dim_head)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        ip_tokens: jax.Array | None = None,
        ip_scale: float | jax.Array = 1.0,
    ) -> jax.Array:
        context = x if context is None else context
        q = self._heads(self.to_q(x))
        out = self._attend(q, self.to_k(context), self.to_v(context))
        if ip_tokens is not None:
            if self.to_k_ip is None:
                raise ValueError("ip_tokens given, but this model was built without the IP-Adapter branch")
            out = out + self._ip_branch(q, ip_tokens, ip_scale)
        return self.to_out[0](out)

    def _ip_branch(self, q: jax.Array, ip_tokens: jax.Array, ip_scale: float | jax.Array) -> jax.Array:
        """The weighted IP-Adapter attention output (B, T, inner); see the module docstring."""
        if ip_tokens.ndim == 3:
            ip = self._attend(q, self.to_k_ip(ip_tokens), self.to_v_ip(ip_tokens))
            return _scale_shape(ip_scale, ip.ndim) * ip
        attend = jax.vmap(lambda k, v: self._attend(q, k, v), in_axes=1, out_axes=1)
        ip = attend(self.to_k_ip(ip_tokens), self.to_v_ip(ip_tokens))  # (B, P, T, inner)
        scale = jnp.asarray(ip_scale)
        if scale.ndim == 4:
            weights = region_weights_to_tokens(scale, q.shape[1]).astype(ip.dtype)  # (B, T, P)
            return jnp.einsum("bptc,btp->btc", ip, weights)
        return _scale_shape(scale, 3) * ip.sum(axis=1)


class GEGLU(nnx.Module):
    """proj to 2*dim_out, split into (hidden, gate), hidden * gelu(gate) (exact gelu). (..., dim_in)->(..., dim_out)."""

    def __init__(self, dim_in: int, dim_out: int, precision: Precision, rngs: nnx.Rngs):
        self.proj = layers.linear(dim_in, 2 * dim_out, precision, rngs, axes=("embed", "mlp"))

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden, gate = jnp.split(self.proj(x), 2, axis=-1)
        return hidden * jax.nn.gelu(gate, approximate=False)


class FeedForward(nnx.Module):
    """net = [GEGLU(dim -> 4 dim), Dropout (None here), Linear(4 dim -> dim)]."""

    def __init__(self, dim: int, precision: Precision, rngs: nnx.Rngs, *, mult: int = 4):
        inner = dim * mult
        self.net = nnx.List(
            [
                GEGLU(dim, inner, precision, rngs),
                None,
                layers.linear(inner, dim, precision, rngs, axes=("mlp", "embed")),
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nnx.Module):
    """x += attn1(norm1 x); x += attn2(norm2 x, context); x += ff(norm3 x). LayerNorm eps 1e-5. (B,T,D)->(B,T,D)."""

    def __init__(self, dim: int, a: AttnSettings, precision: Precision, rngs: nnx.Rngs):
        dim_head = dim // a.heads
        self.norm1 = layers.layer_norm(dim, 1e-5, precision, rngs)
        self.attn1 = Attention(dim, a.heads, dim_head, precision, rngs)
        self.norm2 = layers.layer_norm(dim, 1e-5, precision, rngs)
        self.attn2 = Attention(
            dim, a.heads, dim_head, precision, rngs, cross_attention_dim=a.cross_attention_dim, ip_adapter=a.ip_adapter
        )
        self.norm3 = layers.layer_norm(dim, 1e-5, precision, rngs)
        self.ff = FeedForward(dim, precision, rngs)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array,
        ip_tokens: jax.Array | None = None,
        ip_scale: float | jax.Array = 1.0,
    ) -> jax.Array:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, ip_tokens=ip_tokens, ip_scale=ip_scale)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nnx.Module):
    """GroupNorm(eps 1e-6) -> proj_in -> transformer_blocks -> proj_out, + input. (B,H,W,C)->(B,H,W,C).

    proj_in / proj_out are Linear with `use_linear_projection` (SDXL), else 1x1 convs (SD 1.x).
    """

    def __init__(self, channels: int, depth: int, a: AttnSettings, groups: int, precision: Precision, rngs: nnx.Rngs):
        self.norm = layers.group_norm(channels, groups, 1e-6, precision, rngs)
        if a.use_linear_projection:
            self.proj_in = layers.linear(channels, channels, precision, rngs, axes=("embed", "heads"))
            self.proj_out = layers.linear(channels, channels, precision, rngs, axes=("heads", "embed"))
        else:
            self.proj_in = layers.conv2d(channels, channels, 1, precision, rngs)
            self.proj_out = layers.conv2d(channels, channels, 1, precision, rngs)
        self.transformer_blocks = nnx.List([BasicTransformerBlock(channels, a, precision, rngs) for _ in range(depth)])

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array,
        ip_tokens: jax.Array | None = None,
        ip_scale: float | jax.Array = 1.0,
    ) -> jax.Array:
        b, h, w, c = x.shape
        tokens = self.proj_in(self.norm(x)).reshape(b, h * w, c)  # linear and 1x1 conv commute with the reshape
        for block in self.transformer_blocks:
            tokens = block(tokens, context, ip_tokens, ip_scale)
        return self.proj_out(tokens.reshape(b, h, w, c)) + x


def _depths(depth: int | Sequence[int], num_layers: int) -> list[int]:
    return [depth] * num_layers if isinstance(depth, int) else list(depth)


class DownBlock2D(nnx.Module):
    """`num_layers` resnets then an optional Downsample2D; returns (h, skips: every resnet and downsampler output)."""

    has_cross_attention = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        s: ResnetSettings,
        precision: Precision,
        rngs: nnx.Rngs,
        *,
        add_downsample: bool = True,
        downsample_padding: int = 1,
    ):
        self.resnets = nnx.List(
            [
                ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, s, precision, rngs)
                for i in range(num_layers)
            ]
        )
        self.downsamplers = (
            nnx.List([Downsample2D(out_channels, downsample_padding, precision, rngs)]) if add_downsample else None
        )

    def __call__(self, x: jax.Array, temb: jax.Array) -> tuple[jax.Array, Skips]:
        skips = []
        for resnet in self.resnets:
            x = resnet(x, temb)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, tuple(skips)


class CrossAttnDownBlock2D(nnx.Module):
    """(resnet, Transformer2DModel) x num_layers then an optional Downsample2D; returns (h, skips)."""

    has_cross_attention = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        s: ResnetSettings,
        a: AttnSettings,
        transformer_depth: int | Sequence[int],
        precision: Precision,
        rngs: nnx.Rngs,
        *,
        add_downsample: bool = True,
        downsample_padding: int = 1,
    ):
        depths = _depths(transformer_depth, num_layers)
        self.resnets = nnx.List(
            [
                ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, s, precision, rngs)
                for i in range(num_layers)
            ]
        )
        self.attentions = nnx.List(
            [Transformer2DModel(out_channels, depths[i], a, s.groups, precision, rngs) for i in range(num_layers)]
        )
        self.downsamplers = (
            nnx.List([Downsample2D(out_channels, downsample_padding, precision, rngs)]) if add_downsample else None
        )

    def __call__(
        self,
        x: jax.Array,
        temb: jax.Array,
        context: jax.Array,
        ip_tokens: jax.Array | None = None,
        ip_scale: float | jax.Array = 1.0,
    ) -> tuple[jax.Array, Skips]:
        skips = []
        for resnet, attn in zip(self.resnets, self.attentions):
            x = attn(resnet(x, temb), context, ip_tokens, ip_scale)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, tuple(skips)


class UNetMidBlock2DCrossAttn(nnx.Module):
    """resnet, then (Transformer2DModel, resnet) x num_layers. (B,H,W,C)->(B,H,W,C)."""

    has_cross_attention = True

    def __init__(
        self,
        channels: int,
        s: ResnetSettings,
        a: AttnSettings,
        transformer_depth: int | Sequence[int],
        precision: Precision,
        rngs: nnx.Rngs,
        *,
        num_layers: int = 1,
    ):
        depths = _depths(transformer_depth, num_layers)
        self.resnets = nnx.List([ResnetBlock2D(channels, channels, s, precision, rngs) for _ in range(num_layers + 1)])
        self.attentions = nnx.List(
            [Transformer2DModel(channels, depths[i], a, s.groups, precision, rngs) for i in range(num_layers)]
        )

    def __call__(
        self,
        x: jax.Array,
        temb: jax.Array,
        context: jax.Array,
        ip_tokens: jax.Array | None = None,
        ip_scale: float | jax.Array = 1.0,
    ) -> jax.Array:
        x = self.resnets[0](x, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x, context, ip_tokens, ip_scale), temb)
        return x


def _up_resnets(
    in_channels: int,
    prev_output_channels: int,
    out_channels: int,
    num_layers: int,
    s: ResnetSettings,
    precision: Precision,
    rngs: nnx.Rngs,
) -> nnx.List:
    """Resnet i takes (previous output ++ skip); the last skip comes from the block's input width."""
    resnets = []
    for i in range(num_layers):
        skip = in_channels if i == num_layers - 1 else out_channels
        own = prev_output_channels if i == 0 else out_channels
        resnets.append(ResnetBlock2D(own + skip, out_channels, s, precision, rngs))
    return nnx.List(resnets)


class UpBlock2D(nnx.Module):
    """Per resnet: concat(h, skips.pop()) on channels -> resnet; then an optional Upsample2D. (B,H,W,*)->(B,2H,2W,C)."""

    has_cross_attention = False

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        s: ResnetSettings,
        precision: Precision,
        rngs: nnx.Rngs,
        *,
        add_upsample: bool = True,
    ):
        self.resnets = _up_resnets(in_channels, prev_output_channels, out_channels, num_layers, s, precision, rngs)
        self.upsamplers = nnx.List([Upsample2D(out_channels, precision, rngs)]) if add_upsample else None

    def __call__(
        self, x: jax.Array, skips: Skips, temb: jax.Array, output_size: tuple[int, int] | None = None
    ) -> jax.Array:
        skips = list(skips)
        for resnet in self.resnets:
            x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, output_size)
        return x


class CrossAttnUpBlock2D(nnx.Module):
    """Per layer: concat(h, skips.pop()) -> resnet -> Transformer2DModel; then an optional Upsample2D."""

    has_cross_attention = True

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        s: ResnetSettings,
        a: AttnSettings,
        transformer_depth: int | Sequence[int],
        precision: Precision,
        rngs: nnx.Rngs,
        *,
        add_upsample: bool = True,
    ):
        depths = _depths(transformer_depth, num_layers)
        self.resnets = _up_resnets(in_channels, prev_output_channels, out_channels, num_layers, s, precision, rngs)
        self.attentions = nnx.List(
            [Transformer2DModel(out_channels, depths[i], a, s.groups, precision, rngs) for i in range(num_layers)]
        )
        self.upsamplers = nnx.List([Upsample2D(out_channels, precision, rngs)]) if add_upsample else None

    def __call__(
        self,
        x: jax.Array,
        skips: Skips,
        temb: jax.Array,
        context: jax.Array,
        ip_tokens: jax.Array | None = None,
        ip_scale: float | jax.Array = 1.0,
        output_size: tuple[int, int] | None = None,
    ) -> jax.Array:
        skips = list(skips)
        for resnet, attn in zip(self.resnets, self.attentions):
            x = attn(resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb), context, ip_tokens, ip_scale)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, output_size)
        return x
