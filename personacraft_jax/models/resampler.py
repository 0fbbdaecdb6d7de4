"""The perceiver Resampler of IP-Adapter / InstantID in Flax NNX: a face embedding -> face tokens.

Structure (IP-Adapter's `resampler.py`, which InstantID loads as `image_proj`):
    latents (1, Q, dim) learned queries; x = proj_in(embeds)                 embeds (B, N, embedding_dim)
    per layer:  latents += PerceiverAttention(x, latents); latents += FeedForward(latents)
    out = norm_out(proj_out(latents))                                         (B, Q, output_dim)
PerceiverAttention: norm1(x), norm2(latents); q = to_q(latents); k, v = split(to_kv(concat[x, latents] over
tokens)); multi-head softmax attention (scale dim_head^-1/2); to_out. to_q / to_kv / to_out are bias-free.
FeedForward: LayerNorm -> Linear(dim, mult*dim, no bias) -> exact GELU -> Linear(mult*dim, dim, no bias).

Parameter paths are the `image_proj` keys of an ip-adapter file: `latents`, `proj_in.{weight,bias}`,
`proj_out.*`, `norm_out.*`, `layers.i.0.{norm1,norm2,to_q,to_kv,to_out}.*`, `layers.i.1.{0,1,3}.*`.
InstantID feeds one 512-d ArcFace embedding as one token (N = 1); its unconditional branch is Resampler(zeros).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from personacraft_jax.models import layers
from personacraft_jax.models.attention import dot_product_attention
from personacraft_jax.models.layers import Precision


@dataclasses.dataclass(frozen=True)
class ResamplerConfig:
    """IP-Adapter Resampler hyper-parameters (its constructor's names); defaults are InstantID's."""

    dim: int = 1280
    depth: int = 4
    dim_head: int = 64
    heads: int = 20
    num_queries: int = 16
    embedding_dim: int = 512
    output_dim: int = 2048
    ff_mult: int = 4

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, np.ndarray], dim_head: int = 64) -> ResamplerConfig:
        """Infers the config from `image_proj` tensor shapes (dim_head is not recoverable; default 64)."""
        try:
            _, queries, dim = tensors["latents"].shape
            inner = tensors["layers.0.0.to_q.weight"].shape[0]
            hidden = tensors["layers.0.1.1.weight"].shape[0]
            embedding_dim = tensors["proj_in.weight"].shape[1]
            output_dim = tensors["proj_out.weight"].shape[0]
        except KeyError as e:
            raise ValueError(
                f"image_proj: missing key {e.args[0]!r} (not an IP-Adapter Resampler state dict)"
            ) from None
        depth = len({k.split(".")[1] for k in tensors if k.startswith("layers.")})
        if inner % dim_head or hidden % dim:
            raise ValueError(f"image_proj: to_q width {inner} / dim_head {dim_head} or ff width {hidden} / dim {dim}")
        return cls(dim, depth, dim_head, inner // dim_head, queries, embedding_dim, output_dim, hidden // dim)


def preset(name: str) -> ResamplerConfig:
    """'instantid' (REFERENCE_FACTS) or 'tiny' (CPU tests; output 24 = the tiny UNet's cross-attention width).

    'tiny' keeps dim_head 64 and depth 4 because diffusers' `IPAdapterPlusImageProjection` conversion assumes them.
    """
    if name == "instantid":
        return ResamplerConfig()
    if name == "tiny":
        return ResamplerConfig(dim=32, depth=4, dim_head=64, heads=1, num_queries=4, embedding_dim=512, output_dim=24)
    raise ValueError(f"unknown Resampler preset {name!r}; expected 'instantid' or 'tiny'")


class PerceiverAttention(nnx.Module):
    """Latents attend to concat[x, latents]: x (B, N, dim), latents (B, Q, dim) -> (B, Q, dim)."""

    def __init__(self, c: ResamplerConfig, precision: Precision, rngs: nnx.Rngs):
        inner = c.heads * c.dim_head
        self.heads, self.dim_head, self.attention = c.heads, c.dim_head, precision.attention
        self.norm1 = layers.layer_norm(c.dim, 1e-5, precision, rngs)
        self.norm2 = layers.layer_norm(c.dim, 1e-5, precision, rngs)
        self.to_q = layers.linear(c.dim, inner, precision, rngs, use_bias=False, axes=("embed", "heads"))
        self.to_kv = layers.linear(c.dim, 2 * inner, precision, rngs, use_bias=False, axes=("embed", "heads"))
        self.to_out = layers.linear(inner, c.dim, precision, rngs, use_bias=False, axes=("heads", "embed"))

    def __call__(self, x: jax.Array, latents: jax.Array) -> jax.Array:
        x, latents = self.norm1(x), self.norm2(latents)
        heads = lambda t: t.reshape(*t.shape[:2], self.heads, self.dim_head)
        k, v = jnp.split(self.to_kv(jnp.concatenate([x, latents], axis=1)), 2, axis=-1)
        out = dot_product_attention(heads(self.to_q(latents)), heads(k), heads(v), implementation=self.attention)
        return self.to_out(out.reshape(*out.shape[:2], -1))


def _feed_forward(c: ResamplerConfig, precision: Precision, rngs: nnx.Rngs) -> nnx.List:
    """[LayerNorm, Linear (no bias), GELU (no parameters: None), Linear (no bias)] = indices 0, 1, 2, 3."""
    hidden = c.dim * c.ff_mult
    return nnx.List(
        [
            layers.layer_norm(c.dim, 1e-5, precision, rngs),
            layers.linear(c.dim, hidden, precision, rngs, use_bias=False, axes=("embed", "mlp")),
            None,
            layers.linear(hidden, c.dim, precision, rngs, use_bias=False, axes=("mlp", "embed")),
        ]
    )


class Resampler(nnx.Module):
    """embeds (B, N, embedding_dim) (or (B, embedding_dim) = one token) -> tokens (B, num_queries, output_dim)."""

    def __init__(self, config: ResamplerConfig, precision: Precision | None = None, *, rngs: nnx.Rngs):
        c = self.config = config
        p = precision or Precision()
        init = jax.random.normal(rngs.params(), (1, c.num_queries, c.dim), jnp.float32) / c.dim**0.5
        self.latents = nnx.Param(init.astype(p.param_dtype))
        self.dtype = p.dtype
        self.proj_in = layers.linear(c.embedding_dim, c.dim, p, rngs, axes=("embed", "mlp"))
        self.proj_out = layers.linear(c.dim, c.output_dim, p, rngs, axes=("mlp", "embed"))
        self.norm_out = layers.layer_norm(c.output_dim, 1e-5, p, rngs)
        self.layers = nnx.List(
            [nnx.List([PerceiverAttention(c, p, rngs), _feed_forward(c, p, rngs)]) for _ in range(c.depth)]
        )

    def __call__(self, embeds: jax.Array) -> jax.Array:
        if embeds.ndim == 2:
            embeds = embeds[:, None, :]
        x = self.proj_in(embeds)
        latents = jnp.broadcast_to(self.latents.get_value(), (embeds.shape[0], *self.latents.shape[1:]))
        latents = latents.astype(self.dtype)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff[3](jax.nn.gelu(ff[1](ff[0](latents)), approximate=False)) + latents
        return self.norm_out(self.proj_out(latents))


def load_resampler(tensors: Mapping[str, Any], precision: Precision | None = None, *, dim_head: int = 64) -> Resampler:
    """A Resampler filled strictly from `image_proj` tensors (PyTorch layout); config inferred from the shapes."""
    from personacraft_jax.convert import state_dict as sd

    config = ResamplerConfig.from_state_dict(tensors, dim_head)
    abstract = nnx.eval_shape(lambda: Resampler(config, precision, rngs=nnx.Rngs(0)))
    return sd.load_state_dict(abstract, {k: np.asarray(v) for k, v in tensors.items()}, source="image_proj")
