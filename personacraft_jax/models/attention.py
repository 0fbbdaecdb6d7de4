"""The one attention function every model calls.

Shapes: q (B, Tq, N, D), k and v (B, Tk, N, D) -> (B, Tq, N, D). Implementations:
- "xla": `jax.nn.dot_product_attention(implementation='xla')`, any backend;
- "cudnn": the cuDNN flash-attention kernel (NVIDIA GPUs, bf16/fp16);
- "reference": explicit fp32 softmax(q k^T * scale) v, for debugging and parity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    implementation: str = "xla",
    is_causal: bool = False,
    scale: float | None = None,
) -> jax.Array:
    """Multi-head scaled dot-product attention, scale defaults to 1 / sqrt(D)."""
    if implementation == "reference":
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        logits = jnp.einsum("bqnd,bknd->bnqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
        if is_causal:
            mask = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("bnqk,bknd->bqnd", weights, v.astype(jnp.float32)).astype(q.dtype)
    if implementation not in ("xla", "cudnn"):
        raise ValueError(f"unknown attention implementation {implementation!r}")
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=is_causal, implementation=implementation)
