"""SDXL encodings match diffusers' own `encode_prompt` and `AutoencoderKL.encode` on tiny random models."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from data_prep import sdxl_encoders
from tests.fixtures_sdxl import MAX_LENGTH, tiny_sdxl_dir  # noqa: F401  (pytest fixture)


def test_text_matches_diffusers_encode_prompt(tiny_sdxl_dir):  # noqa: F811
    sdxl_dir = tiny_sdxl_dir
    prompts = ["the cat the dog", "three people in a park"]
    embeds, pooled = sdxl_encoders.SDXLTextEncoder(sdxl_dir).encode(prompts)
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_pretrained(sdxl_dir / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(sdxl_dir / "text_encoder"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(sdxl_dir / "text_encoder_2"),
        tokenizer=CLIPTokenizer.from_pretrained(sdxl_dir / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(sdxl_dir / "tokenizer_2"),
        unet=None,
        scheduler=None,
        add_watermarker=False,
    )
    with torch.no_grad():
        ref_embeds, _, ref_pooled, _ = pipe.encode_prompt(
            prompts, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    assert embeds.shape == (2, MAX_LENGTH, 16 + 24)
    assert pooled.shape == (2, 12)
    np.testing.assert_allclose(embeds, ref_embeds.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled, ref_pooled.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(embeds[0], embeds[1])  # different prompts give different embeddings


def test_vae_moments_match_latent_dist(tiny_sdxl_dir):  # noqa: F811
    sdxl_dir = tiny_sdxl_dir
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    mean, logvar = sdxl_encoders.SDXLVaeEncoder(sdxl_dir).encode(image)
    assert mean.shape == logvar.shape == (4, 4, 6)
    vae = AutoencoderKL.from_pretrained(sdxl_dir / "vae")
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] * (2.0 / 255.0) - 1.0
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(x)) if vae.quant_conv is not None else vae.encoder(x)
    ref_mean, ref_logvar = torch.chunk(moments, 2, dim=1)
    np.testing.assert_allclose(mean, ref_mean[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logvar, torch.clamp(ref_logvar[0], -30.0, 20.0).numpy(), rtol=1e-4, atol=1e-5)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        sdxl_encoders.SDXLTextEncoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="vae"):
        sdxl_encoders.SDXLVaeEncoder(tmp_path)
