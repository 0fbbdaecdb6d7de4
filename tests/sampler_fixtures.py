"""Tiny, seeded, random diffusers / transformers models saved as folders, for the sampler parity tests."""

from __future__ import annotations

import pathlib

import diffusers
import torch
import transformers

from personacraft_jax.models import controlnet as controlnet_lib
from personacraft_jax.models import unet as unet_lib
from personacraft_jax.sampling.models import TINY_CLIP_1, TINY_CLIP_2, TINY_VAE
from personacraft_jax.sampling.tokenizers import write_tiny_tokenizer
from tests.tiny_diffusers import randomize_torch


def write_tiny_pipeline(root: pathlib.Path, seed: int = 0) -> dict:
    """Writes `root/{unet,vae,text_encoder,text_encoder_2,tokenizer,tokenizer_2,scnet,oben}`; returns the torch
    modules (name -> module) and tokenizers."""
    torch.manual_seed(seed)
    mods = {
        "unet": diffusers.UNet2DConditionModel(**unet_lib.preset("tiny")),
        "vae": diffusers.AutoencoderKL(**TINY_VAE),
        "text_encoder": transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_CLIP_1)),
        "text_encoder_2": transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**TINY_CLIP_2)),
        "scnet": diffusers.ControlNetModel(**controlnet_lib.preset("tiny", conditioning_channels=4)),
        "oben": diffusers.ControlNetModel(**controlnet_lib.preset("tiny", conditioning_channels=2)),
    }
    for i, (name, module) in enumerate(mods.items()):
        randomize_torch(module, seed=seed + 10 + i)
        module.save_pretrained(str(root / name), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        write_tiny_tokenizer(root / name)
        mods[name] = transformers.CLIPTokenizer.from_pretrained(str(root / name))
    return mods
