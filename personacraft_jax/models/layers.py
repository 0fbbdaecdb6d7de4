"""Layer factories shared by every model: dtype policy, logical sharding axes, PyTorch-equivalent numerics.

Every parameter is created through these helpers so that
- its dtype follows `Precision.param_dtype` and its computation `Precision.dtype`;
- it carries logical sharding axis names (mapped to mesh axes by rules in the training config);
- its attribute name mirrors the PyTorch module name (`kernel`/`scale`/`embedding` map to `weight`).

Activations are NHWC. Logical axis names used by the models:
  `embed` (a linear layer's input features), `mlp` (its output features), `heads` (attention projections'
  output features), `conv_in` / `conv_out` (a conv kernel's input / output channels), `vocab`, `norm`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any

ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "reference")
REMAT_POLICIES = ("none", "full", "dots_saveable", "nothing_saveable")


@dataclasses.dataclass(frozen=True)
class Precision:
    """How a model computes and stores its parameters; not part of the architecture.

    dtype: activation / matmul dtype (fp32 for parity tests, bf16 on accelerators).
    param_dtype: storage dtype of the parameters (fp32 trainable, bf16 frozen).
    attention: implementation passed to `attention.dot_product_attention`.
    remat: per-block rematerialisation policy (see `REMAT_POLICIES`).
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "xla"
    remat: str = "none"

    def __post_init__(self):
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"Precision.attention={self.attention!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"Precision.remat={self.remat!r}; expected one of {REMAT_POLICIES}")

    @classmethod
    def from_config(cls, cfg: Any) -> Precision:
        """Builds from a config mapping with string dtypes ('float32', 'bfloat16')."""
        return cls(
            dtype=jnp.dtype(cfg.get("dtype", "float32")),
            param_dtype=jnp.dtype(cfg.get("param_dtype", "float32")),
            attention=cfg.get("attention", "xla"),
            remat=cfg.get("remat", "none"),
        )


def _axes(names: Sequence[str | None]) -> dict[str, Any]:
    # Lazy (non-eager) sharding: the logical names are metadata until the trainer applies mesh rules.
    return {"out_sharding": tuple(names), "eager_sharding": False}


def linear(
    in_features: int,
    out_features: int,
    precision: Precision,
    rngs: nnx.Rngs,
    *,
    use_bias: bool = True,
    axes: tuple[str, str] = ("embed", "mlp"),
    zero_init: bool = False,
) -> nnx.Linear:
    """torch.nn.Linear equivalent; kernel (in, out) = torch weight transposed."""
    kwargs = {"kernel_init": nnx.initializers.zeros} if zero_init else {}
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=precision.dtype,
        param_dtype=precision.param_dtype,
        precision=jax.lax.Precision.HIGHEST,
        kernel_metadata=_axes(axes),
        bias_metadata=_axes(axes[1:]),
        rngs=rngs,
        **kwargs,
    )


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    precision: Precision,
    rngs: nnx.Rngs,
    *,
    stride: int = 1,
    padding: int | None = None,
    zero_init: bool = False,
) -> nnx.Conv:
    """torch.nn.Conv2d equivalent on NHWC; kernel HWIO = torch OIHW transposed; padding defaults to k // 2."""
    pad = kernel_size // 2 if padding is None else padding
    kwargs = {"kernel_init": nnx.initializers.zeros} if zero_init else {}
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dtype=precision.dtype,
        param_dtype=precision.param_dtype,
        precision=jax.lax.Precision.HIGHEST,
        kernel_metadata=_axes((None, None, "conv_in", "conv_out")),
        bias_metadata=_axes(("conv_out",)),
        rngs=rngs,
        **kwargs,
    )


def group_norm(channels: int, groups: int, eps: float, precision: Precision, rngs: nnx.Rngs) -> nnx.GroupNorm:
    """torch.nn.GroupNorm equivalent on NHWC (statistics in fp32, two-pass variance)."""
    if channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels are not divisible into {groups} groups")
    return nnx.GroupNorm(
        channels,
        num_groups=groups,
        epsilon=eps,
        dtype=precision.dtype,
        param_dtype=precision.param_dtype,
        use_fast_variance=False,
        scale_metadata=_axes(("norm",)),
        bias_metadata=_axes(("norm",)),
        rngs=rngs,
    )


def layer_norm(features: int, eps: float, precision: Precision, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """torch.nn.LayerNorm equivalent over the last axis."""
    return nnx.LayerNorm(
        features,
        epsilon=eps,
        dtype=precision.dtype,
        param_dtype=precision.param_dtype,
        use_fast_variance=False,
        scale_metadata=_axes(("norm",)),
        bias_metadata=_axes(("norm",)),
        rngs=rngs,
    )


def embedding(num: int, features: int, precision: Precision, rngs: nnx.Rngs) -> nnx.Embed:
    """torch.nn.Embedding equivalent."""
    return nnx.Embed(
        num,
        features,
        dtype=precision.dtype,
        param_dtype=precision.param_dtype,
        embedding_metadata=_axes(("vocab", "embed")),
        rngs=rngs,
    )


ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation(name: str):
    """The activation named as in diffusers / transformers configs (`act_fn`, `hidden_act`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def remat_policy(name: str):
    """Maps `Precision.remat` to a jax.checkpoint policy (None = save nothing extra)."""
    return {
        "full": None,
        "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
        "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[name]


def maybe_remat(module: nnx.Module, precision: Precision, *args, **kwargs):
    """Calls `module(*args, **kwargs)`, rematerialised per `precision.remat` (one block = one checkpoint).

    The block runs as a pure function of its parameters (split outside, merged inside `jax.checkpoint`), so
    it also works for modules merged inside an outer trace (a jitted / differentiated train step). Blocks
    must not mutate their state during a call (none of the models here do).
    """
    if precision.remat == "none":
        return module(*args, **kwargs)
    graphdef, state = nnx.split(module)

    def pure(state, *args):
        return nnx.merge(graphdef, state)(*args, **kwargs)

    return jax.checkpoint(pure, policy=remat_policy(precision.remat))(state, *args)
