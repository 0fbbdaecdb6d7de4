"""SDXL prompt conditioning from the two Flax CLIP text encoders (diffusers' `encode_prompt` convention)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from personacraft_jax.models.clip import CLIPTextModel, CLIPTextModelWithProjection


def sdxl_text_embeddings(
    enc1: CLIPTextModel,
    enc2: CLIPTextModelWithProjection,
    ids1: jax.Array,
    ids2: jax.Array,
    *,
    clip_skip: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """ids1, ids2 (B, 77) int -> (prompt_embeds (B, 77, D1 + D2), pooled_prompt_embeds (B, P2)).

    prompt_embeds concatenates on the last axis each encoder's hidden state `-(clip_skip + 2)` (the penultimate
    layer's output, before the final LayerNorm, when clip_skip is None); pooled = enc2's projected pooled output.
    """
    index = -2 if clip_skip is None else -(clip_skip + 2)
    out1 = enc1(ids1)
    out2 = enc2(ids2)
    prompt_embeds = jnp.concatenate([out1.hidden_states[index], out2.hidden_states[index]], axis=-1)
    return prompt_embeds, out2.text_embeds
