"""A tiny, randomly initialised SDXL-format folder for the demo: every component SDXL has, at tiny shapes.

`write_standin_sdxl(root, seed)` writes, with the PyTorch libraries' own `save_pretrained` (safetensors):
`unet/` (`personacraft_jax.models.unet.preset('tiny')`), `vae/`, `text_encoder/` (CLIP-L-like),
`text_encoder_2/` (bigG-like, with projection), `tokenizer/` and `tokenizer_2/` (a character-level CLIP BPE
tokenizer), and `scheduler/scheduler_config.json` (SDXL's). The shapes fit together exactly as SDXL's do
(text widths 8 + 16 = the UNet's cross-attention 24; pooled 16 + 6 x 8 time ids = 64). The weights are
random: everything downstream runs for real, but the pictures mean nothing. The VAE's `scaling_factor` is
calibrated so that its latents have unit variance.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile


def _calibrated_scaling_factor(vae) -> float:
    """1 / std of the latent means of smooth random images, as SD's scaling factor was chosen (unit-variance
    latents); SDXL's 0.13025 belongs to SDXL's VAE, not to a random one."""
    import torch

    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(16, 3, 8, 8, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        std = vae.encode(images).latent_dist.mean.std().item()
    return round(1.0 / std, 5)


def write_standin_sdxl(
    root: str | os.PathLike, seed: int = 0, *, unet_preset: str = "tiny", vae_preset: str | None = None
) -> pathlib.Path:
    """Writes the folder atomically (temp folder + rename) unless it exists; returns `root`.

    `unet_preset`: `models.unet.preset` name ('tiny', or 'demo' for the demo's miniature world);
    `vae_preset`: None = the 8x stand-in VAE below, or a `models.vae.preset` name (e.g. 'demo', 4x).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from personacraft_jax.models import unet as unet_lib
    from personacraft_jax.models import vae as vae_lib
    from personacraft_jax.sampling import schedulers
    from personacraft_jax.sampling.models import TINY_CLIP_1, TINY_CLIP_2, TINY_VAE
    from personacraft_jax.sampling.tokenizers import write_tiny_tokenizer

    root = pathlib.Path(root)
    if (root / "model_index.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    try:
        torch.manual_seed(seed)
        UNet2DConditionModel(**unet_lib.preset(unet_preset)).save_pretrained(tmp / "unet")
        vae = AutoencoderKL(**(TINY_VAE if vae_preset is None else dict(vae_lib.preset(vae_preset))))
        vae.register_to_config(scaling_factor=_calibrated_scaling_factor(vae))
        vae.save_pretrained(tmp / "vae")
        CLIPTextModel(CLIPTextConfig(**TINY_CLIP_1)).save_pretrained(tmp / "text_encoder")
        CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP_2)).save_pretrained(tmp / "text_encoder_2")
        write_tiny_tokenizer(tmp / "tokenizer")
        write_tiny_tokenizer(tmp / "tokenizer_2")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(schedulers.SDXL_SCHEDULER_CONFIG, indent=2))
        index = {  # as SDXL base's model_index.json
            "_class_name": "StableDiffusionXLPipeline",
            "_note": "random tiny stand-in (personacraft-jax demo)",
            "force_zeros_for_empty_prompt": True,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
