"""Optional, precomputed SDXL inputs (PyTorch side): VAE latent moments and text-encoder outputs.

Weights come from a user-provided diffusers-format SDXL folder (`vae/`, `text_encoder/`, `text_encoder_2/`,
`tokenizer/`, `tokenizer_2/`), loaded with `use_safetensors=True` and `local_files_only=True` (never a
pickle, never a download).

Conventions (those of diffusers' `StableDiffusionXLPipeline.encode_prompt` with `clip_skip=None`):
- `prompt_embeds` (77, D1 + D2): the penultimate hidden states of `text_encoder` (CLIP-L, D1 = 768) and
  `text_encoder_2` (bigG, D2 = 1280), concatenated on the last axis -> (77, 2048) for real SDXL;
  tokens padded to `max_length = tokenizer.model_max_length` and truncated.
- `pooled_prompt_embeds` (P,): the projected pooled output (`text_embeds`) of `text_encoder_2`, P = 1280.
- `latent_mean`, `latent_logvar` (C, H/8, W/8), C = 4: the moments of `AutoencoderKL.encode(x).latent_dist`
  for x = image / 127.5 - 1 in [-1, 1], NCHW. They are *unscaled*: the training pipeline samples
  `mean + exp(logvar / 2) * noise` and multiplies by `vae.config.scaling_factor` (0.13025 for SDXL).
All outputs are float32 numpy arrays.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch


def _subfolder(root: pathlib.Path, name: str) -> pathlib.Path:
    path = root / name
    if not (path / "config.json").is_file() and not any(path.glob("*.json")):
        raise FileNotFoundError(
            f"expected a diffusers-format subfolder {path} (with config/tokenizer JSON files) under the SDXL "
            f"folder {root}; nothing is downloaded"
        )
    return path


class SDXLTextEncoder:
    """Both SDXL text encoders and tokenizers, for `encode(prompts)`."""

    def __init__(self, folder: str | pathlib.Path, dtype: torch.dtype = torch.float32):
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        root = pathlib.Path(folder).expanduser()
        kwargs = {"local_files_only": True}
        self.tokenizers = [
            CLIPTokenizer.from_pretrained(str(_subfolder(root, "tokenizer")), **kwargs),
            CLIPTokenizer.from_pretrained(str(_subfolder(root, "tokenizer_2")), **kwargs),
        ]
        self.text_encoders = [
            CLIPTextModel.from_pretrained(
                str(_subfolder(root, "text_encoder")), use_safetensors=True, dtype=dtype, **kwargs
            ).eval(),
            CLIPTextModelWithProjection.from_pretrained(
                str(_subfolder(root, "text_encoder_2")), use_safetensors=True, dtype=dtype, **kwargs
            ).eval(),
        ]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`prompt_embeds` (B, 77, D1 + D2) and `pooled_prompt_embeds` (B, P) for B prompts."""
        hidden = []
        outputs = []
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = tokenizer(
                list(prompts),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            outputs.append(out)
        prompt_embeds = torch.cat(hidden, dim=-1)
        pooled = outputs[1].text_embeds  # text_encoder_2's projected pooled output
        return prompt_embeds.float().numpy(), pooled.float().numpy()


class SDXLVaeEncoder:
    """The SDXL VAE encoder, for `encode(image)` -> latent moments."""

    def __init__(self, folder: str | pathlib.Path, subfolder: str | None = "vae", dtype: torch.dtype = torch.float32):
        from diffusers import AutoencoderKL

        root = pathlib.Path(folder).expanduser()
        path = _subfolder(root, subfolder) if subfolder else root
        self.vae = AutoencoderKL.from_pretrained(
            str(path), use_safetensors=True, local_files_only=True, torch_dtype=dtype
        ).eval()
        self.dtype = dtype
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)  # 8 for SDXL's VAE

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3), H and W multiples of the VAE's factor f (8 for SDXL) -> (`latent_mean`,
        `latent_logvar`), each (C, H/f, W/f)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        if image.shape[0] % self.factor or image.shape[1] % self.factor:
            raise ValueError(f"image size {image.shape[:2]} is not a multiple of the VAE's factor {self.factor}")
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].to(self.dtype) / 127.5 - 1.0  # a writable copy
        dist = self.vae.encode(x).latent_dist
        return dist.mean[0].float().numpy(), dist.logvar[0].float().numpy()
