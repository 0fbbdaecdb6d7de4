"""A tiny, seeded, random SDXL-format folder (VAE, two CLIP text encoders, two tokenizers) for tests."""

from __future__ import annotations

import json
import pathlib
import string

import pytest
import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

MAX_LENGTH = 77


def _tokenizer(folder: pathlib.Path) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (letters, with and without the end-of-word suffix, + 2 merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    tokens += ["th", "the</w>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    tok = CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=MAX_LENGTH
    )
    tok.save_pretrained(str(folder))
    return CLIPTokenizer.from_pretrained(str(folder))


def _text_config(hidden: int, projection: int, vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=projection,
        hidden_act="gelu",
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def write_tiny_sdxl(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write `root/{vae,text_encoder,text_encoder_2,tokenizer,tokenizer_2}` (safetensors) and return `root`."""
    torch.manual_seed(seed)
    tok = _tokenizer(root / "tokenizer")
    _tokenizer(root / "tokenizer_2")
    vocab_size = len(tok)
    CLIPTextModel(_text_config(16, 16, vocab_size)).save_pretrained(str(root / "text_encoder"))
    CLIPTextModelWithProjection(_text_config(24, 12, vocab_size)).save_pretrained(str(root / "text_encoder_2"))
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).save_pretrained(str(root / "vae"), safe_serialization=True)
    return root


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    """The tiny SDXL folder, written once per test session."""
    return write_tiny_sdxl(tmp_path_factory.mktemp("sdxl"))
