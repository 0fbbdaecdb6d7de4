"""CLIP text encoders (SDXL's CLIP-L and OpenCLIP bigG) in Flax NNX, bridged to transformers folders.

Parameter paths mirror the transformers state dict as real SDXL folders store it:
`text_model.embeddings.{token,position}_embedding`, `text_model.encoder.layers.i.{self_attn.{q,k,v,out}_proj,
layer_norm1, mlp.fc1, mlp.fc2, layer_norm2}`, `text_model.final_layer_norm` (+ `text_projection`).
transformers 5 saves a bare `CLIPTextModel` without the `text_model.` prefix; such keys are renamed on import,
and exports keep the prefix (which transformers 4 and 5 both load).

Inputs are token ids (B, T) with T <= max_position_embeddings; attention is causal and no padding mask is
applied (as in SDXL, which pads to 77 tokens and uses all of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from personacraft_jax.models import layers
from personacraft_jax.models.attention import dot_product_attention
from personacraft_jax.models.layers import Precision

_MODEL_TYPE = "clip_text_model"
_SUPPORTED_ACTS = ("quick_gelu", "gelu")
_LEGACY_EOS_TOKEN_ID = 2  # transformers: configs with eos_token_id == 2 pool at argmax(input_ids).
_BARE_PREFIXES = ("embeddings.", "encoder.", "final_layer_norm.")

# transformers PretrainedConfig keys that do not affect a text encoder's forward pass.
_GENERIC_KEYS = frozenset(
    [
        "architectures",
        "model_type",
        "dtype",
        "torch_dtype",
        "transformers_version",
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "_attn_implementation",
        "dropout",
        "attention_dropout",
        "initializer_range",
        "initializer_factor",
        "pad_token_id",
        "bos_token_id",
        "sep_token_id",
        "decoder_start_token_id",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "torchscript",
        "use_bfloat16",
        "tf_legacy_loss",
        "pruned_heads",
        "tie_word_embeddings",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "is_decoder",
        "cross_attention_hidden_size",
        "add_cross_attention",
        "tie_encoder_decoder",
        "max_length",
        "min_length",
        "do_sample",
        "early_stopping",
        "num_beams",
        "num_beam_groups",
        "diversity_penalty",
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "length_penalty",
        "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size",
        "bad_words_ids",
        "num_return_sequences",
        "output_scores",
        "return_dict_in_generate",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "remove_invalid_values",
        "exponential_decay_length_penalty",
        "suppress_tokens",
        "begin_suppress_tokens",
        "finetuning_task",
        "id2label",
        "label2id",
        "tokenizer_class",
        "prefix",
        "task_specific_params",
        "problem_type",
        "use_cache",
    ]
)


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """transformers `CLIPTextConfig` fields that define the text encoder (same names and defaults)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407
    bos_token_id: int = 49406
    pad_token_id: int = 1

    def __post_init__(self):
        if self.hidden_act not in _SUPPORTED_ACTS:
            raise ValueError(f"CLIPTextConfig: hidden_act={self.hidden_act!r} unsupported; expected {_SUPPORTED_ACTS}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"CLIPTextConfig: hidden_size={self.hidden_size} not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.eos_token_id is None:
            raise ValueError("CLIPTextConfig: eos_token_id is required (it selects the pooled token)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> CLIPTextConfig:
        """From a transformers config.json dict; keys that do not change the forward pass are skipped."""
        if config.get("model_type", _MODEL_TYPE) != _MODEL_TYPE:
            raise ValueError(f"CLIPTextConfig: model_type={config['model_type']!r}, expected {_MODEL_TYPE!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in config if k not in fields and k not in _GENERIC_KEYS)
        if unknown:
            raise ValueError(f"CLIPTextConfig: unsupported keys {unknown}")
        return cls(**{k: v for k, v in config.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset(name: str, encoder: int = 1) -> ml_collections.ConfigDict:
    """A transformers CLIPTextConfig dict for SDXL's text encoder 1 or 2 ('sdxl' real shapes, 'tiny' for tests).

    'sdxl', encoder 1: CLIP-L (768 wide, 12 layers, 12 heads, quick_gelu); encoder 2: OpenCLIP bigG (1280 wide,
    32 layers, 20 heads, gelu, projection 1280); both vocab 49408, 77 positions, eos_token_id 2 as in the SDXL
    base folders (pooling at argmax of the ids). `transformers.CLIPTextConfig(**preset(name, encoder))` builds
    the same architecture.
    """
    base = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2)
    base["pad_token_id"] = 1
    presets = {
        ("sdxl", 1): dict(
            hidden_size=768,
            intermediate_size=3072,
            projection_dim=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            hidden_act="quick_gelu",
        ),
        ("sdxl", 2): dict(
            hidden_size=1280,
            intermediate_size=5120,
            projection_dim=1280,
            num_hidden_layers=32,
            num_attention_heads=20,
            hidden_act="gelu",
        ),
        ("tiny", 1): dict(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            projection_dim=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            hidden_act="quick_gelu",
            bos_token_id=62,
            eos_token_id=63,
        ),
        ("tiny", 2): dict(
            vocab_size=64,
            hidden_size=24,
            intermediate_size=48,
            projection_dim=12,
            num_hidden_layers=3,
            num_attention_heads=2,
            hidden_act="gelu",
            bos_token_id=62,
            eos_token_id=63,
        ),
    }
    if (name, encoder) not in presets:
        raise ValueError(f"unknown CLIP preset {name!r} / encoder {encoder}; expected 'sdxl' or 'tiny', encoder 1 or 2")
    return ml_collections.ConfigDict({**base, **presets[(name, encoder)]})


class CLIPTextEmbeddings(nnx.Module):
    """Token + learned absolute position embeddings: ids (B, T) -> (B, T, D)."""

    def __init__(self, config: CLIPTextConfig, precision: Precision, *, rngs: nnx.Rngs):
        self.token_embedding = layers.embedding(config.vocab_size, config.hidden_size, precision, rngs)
        self.position_embedding = layers.embedding(config.max_position_embeddings, config.hidden_size, precision, rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        if input_ids.shape[-1] > self.position_embedding.num_embeddings:
            raise ValueError(
                f"CLIP: {input_ids.shape[-1]} tokens exceed max_position_embeddings="
                f"{self.position_embedding.num_embeddings}"
            )
        positions = jnp.arange(input_ids.shape[-1])
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class CLIPAttention(nnx.Module):
    """Causal multi-head self-attention with biased q/k/v/out projections: (B, T, D) -> (B, T, D)."""

    def __init__(self, config: CLIPTextConfig, precision: Precision, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.heads = config.num_attention_heads
        self.precision = precision
        self.q_proj = layers.linear(d, d, precision, rngs, axes=("embed", "heads"))
        self.k_proj = layers.linear(d, d, precision, rngs, axes=("embed", "heads"))
        self.v_proj = layers.linear(d, d, precision, rngs, axes=("embed", "heads"))
        self.out_proj = layers.linear(d, d, precision, rngs, axes=("heads", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads)
        out = dot_product_attention(
            split(self.q_proj(x)),
            split(self.k_proj(x)),
            split(self.v_proj(x)),
            implementation=self.precision.attention,
            is_causal=True,
        )
        return self.out_proj(out.reshape(b, t, d))


class CLIPMLP(nnx.Module):
    """fc1 -> hidden_act -> fc2: (B, T, D) -> (B, T, D)."""

    def __init__(self, config: CLIPTextConfig, precision: Precision, *, rngs: nnx.Rngs):
        self.act = layers.activation(config.hidden_act)
        self.fc1 = layers.linear(config.hidden_size, config.intermediate_size, precision, rngs, axes=("embed", "mlp"))
        self.fc2 = layers.linear(config.intermediate_size, config.hidden_size, precision, rngs, axes=("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """Pre-LN transformer layer: x + attn(ln1(x)), then + mlp(ln2(.))."""

    def __init__(self, config: CLIPTextConfig, precision: Precision, *, rngs: nnx.Rngs):
        self.self_attn = CLIPAttention(config, precision, rngs=rngs)
        self.layer_norm1 = layers.layer_norm(config.hidden_size, config.layer_norm_eps, precision, rngs)
        self.mlp = CLIPMLP(config, precision, rngs=rngs)
        self.layer_norm2 = layers.layer_norm(config.hidden_size, config.layer_norm_eps, precision, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    """The layer stack; returns every hidden state (embeddings output first, last layer's output last)."""

    def __init__(self, config: CLIPTextConfig, precision: Precision, *, rngs: nnx.Rngs):
        self.precision = precision
        self.layers = nnx.List(
            [CLIPEncoderLayer(config, precision, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        states = [x]
        for layer in self.layers:
            x = layers.maybe_remat(layer, self.precision, x)
            states.append(x)
        return tuple(states)


class CLIPTextOutput(NamedTuple):
    """last_hidden_state (B, T, D) after final LN; pooler_output (B, D) at the EOS token;
    hidden_states: num_hidden_layers + 1 arrays (B, T, D) before the final LN (transformers' order, so
    hidden_states[-2] is the penultimate layer's output that SDXL uses); text_embeds (B, P) or None."""

    last_hidden_state: jax.Array
    pooler_output: jax.Array
    hidden_states: tuple[jax.Array, ...]
    text_embeds: jax.Array | None = None


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """The pooled token per row, (B, T) -> (B,), exactly as transformers picks it.

    eos_token_id == 2 (legacy configs, e.g. SDXL's): argmax of the ids (the EOS id is the largest in CLIP's
    vocabulary); otherwise the first position holding eos_token_id (0 if none).
    """
    if eos_token_id == _LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax((input_ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPTextTransformer(nnx.Module):
    """embeddings -> causal encoder -> final_layer_norm, plus the EOS pooling."""

    def __init__(self, config: CLIPTextConfig, precision: Precision, *, rngs: nnx.Rngs):
        self.eos_token_id = config.eos_token_id
        self.embeddings = CLIPTextEmbeddings(config, precision, rngs=rngs)
        self.encoder = CLIPEncoder(config, precision, rngs=rngs)
        self.final_layer_norm = layers.layer_norm(config.hidden_size, config.layer_norm_eps, precision, rngs)

    def __call__(self, input_ids: jax.Array) -> CLIPTextOutput:
        hidden_states = self.encoder(self.embeddings(input_ids))
        last = self.final_layer_norm(hidden_states[-1])
        pooled = jnp.take_along_axis(last, eos_positions(input_ids, self.eos_token_id)[:, None, None], axis=1)[:, 0]
        return CLIPTextOutput(last, pooled, hidden_states)


class _CLIPPretrained:
    """PretrainedModel protocol shared by both CLIP classes (transformers folder, `model.safetensors`)."""

    weights_name: ClassVar[str] = "model"
    config: CLIPTextConfig

    @classmethod
    def config_from_pretrained(cls, config: Mapping[str, Any]) -> CLIPTextConfig:
        arch = config.get("architectures")
        if arch and cls.__name__ not in arch:
            raise ValueError(f"{cls.__name__}: config.json architectures={arch} do not include {cls.__name__}")
        return CLIPTextConfig.from_dict(config)

    def pretrained_config(self) -> dict[str, Any]:
        return {"architectures": [type(self).__name__], "model_type": _MODEL_TYPE, **self.config.to_dict()}

    @classmethod
    def rename_source_key(cls, key: str) -> str:
        """transformers 5's bare `CLIPTextModel` keys (`embeddings.*` ...) -> `text_model.embeddings.*`."""
        return f"text_model.{key}" if key.startswith(_BARE_PREFIXES) else key

    @classmethod
    def ignore_source_key(cls, key: str, value: np.ndarray) -> bool:
        """Accepts the `position_ids` buffer only when it holds arange(T) (as (T,) or (1, T))."""
        if key != "text_model.embeddings.position_ids":
            return False
        value = np.asarray(value).reshape(-1)
        return bool(np.array_equal(value, np.arange(value.size)))


class CLIPTextModel(_CLIPPretrained, nnx.Module):
    """transformers CLIPTextModel: ids (B, T) -> CLIPTextOutput (text_embeds None)."""

    def __init__(self, config: CLIPTextConfig, precision: Precision | None = None, *, rngs: nnx.Rngs):
        self.config = config
        self.text_model = CLIPTextTransformer(config, precision or Precision(), rngs=rngs)

    def __call__(self, input_ids: jax.Array) -> CLIPTextOutput:
        return self.text_model(input_ids)


class CLIPTextModelWithProjection(_CLIPPretrained, nnx.Module):
    """transformers CLIPTextModelWithProjection: adds text_embeds = text_projection(pooled) (bias-free)."""

    def __init__(self, config: CLIPTextConfig, precision: Precision | None = None, *, rngs: nnx.Rngs):
        precision = precision or Precision()
        self.config = config
        self.text_model = CLIPTextTransformer(config, precision, rngs=rngs)
        self.text_projection = layers.linear(
            config.hidden_size, config.projection_dim, precision, rngs, use_bias=False, axes=("embed", "mlp")
        )

    def __call__(self, input_ids: jax.Array) -> CLIPTextOutput:
        out = self.text_model(input_ids)
        return out._replace(text_embeds=self.text_projection(out.pooler_output))
