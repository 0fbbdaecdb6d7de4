"""Model folders: diffusers' / transformers' variant weight files (single and sharded), the error for a folder
whose weights are of another variant, and `model.variant` in the sampling and training configs."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
import transformers

from configs import sample_tiny, train_tiny
from personacraft_jax.convert import state_dict as sd
from personacraft_jax.convert.pretrained import load_pretrained
from personacraft_jax.models import unet as unet_lib
from personacraft_jax.models import vae as vae_lib
from personacraft_jax.models.clip import CLIPTextModel
from personacraft_jax.models.vae import AutoencoderKL
from personacraft_jax.sampling.models import TINY_CLIP_1, TINY_CLIP_2, TINY_VAE, load_models
from personacraft_jax.train.networks import build_unet
from tests.tiny_diffusers import randomize_torch

INDEX = "diffusion_pytorch_model.safetensors.index.fp16.json"  # diffusers' name for a sharded fp16 variant


def _assert_same_weights(model, ref: torch.nn.Module) -> None:
    unprefixed = lambda key: key.removeprefix("text_model.")  # transformers 5 state dicts drop it, files keep it
    ours = {unprefixed(k): v for k, v in sd.state_dict(model).items()}
    theirs = {unprefixed(k): v.float().numpy() for k, v in ref.state_dict().items()}
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_variant_files_load_as_diffusers_loads_them(tmp_path, sharded):
    torch.manual_seed(0)
    vae = randomize_torch(diffusers.AutoencoderKL(**vae_lib.preset("tiny")), seed=0).to(torch.float16)
    vae.save_pretrained(tmp_path, variant="fp16", **({"max_shard_size": "20KB"} if sharded else {}))
    files = {p.name for p in tmp_path.iterdir()}
    expected = (
        {INDEX, "diffusion_pytorch_model.fp16-00001-of-"} if sharded else {"diffusion_pytorch_model.fp16.safetensors"}
    )
    assert all(any(f.startswith(e) for f in files) for e in expected), files
    ref = diffusers.AutoencoderKL.from_pretrained(tmp_path, variant="fp16")
    _assert_same_weights(load_pretrained(AutoencoderKL, tmp_path, variant="fp16"), ref)


def test_transformers_variant_files_load(tmp_path):
    torch.manual_seed(0)
    ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_CLIP_1)).eval()
    ref.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "model.fp16.safetensors").is_file()
    _assert_same_weights(load_pretrained(CLIPTextModel, tmp_path, variant="fp16"), ref)


def test_a_folder_of_another_variant_is_named_with_its_files(tmp_path):
    diffusers.AutoencoderKL(**vae_lib.preset("tiny")).save_pretrained(tmp_path, variant="fp16")
    for variant in (None, "ema"):
        with pytest.raises(FileNotFoundError) as info:
            load_pretrained(AutoencoderKL, tmp_path, variant=variant)
        message = str(info.value)
        assert f"no weights found for variant={variant!r}" in message
        assert "it has weights for variant='fp16'" in message
        assert "files found: ['config.json', 'diffusion_pytorch_model.fp16.safetensors']" in message


@pytest.fixture(scope="module")
def fp16_sdxl_folder(tmp_path_factory):
    """A tiny SDXL-layout folder holding only fp16 variant weights (what a `variant="fp16"` download gives)."""
    root = tmp_path_factory.mktemp("sdxl_fp16")
    torch.manual_seed(0)
    modules = {
        "unet": diffusers.UNet2DConditionModel(**unet_lib.preset("tiny")),
        "vae": diffusers.AutoencoderKL(**TINY_VAE),
        "text_encoder": transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_CLIP_1)),
        "text_encoder_2": transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**TINY_CLIP_2)),
    }
    for name, module in modules.items():
        module.to(torch.float16).save_pretrained(root / name, variant="fp16")
    return root, modules


def test_model_variant_reaches_every_sdxl_component(fp16_sdxl_folder):
    root, modules = fp16_sdxl_folder
    sample = sample_tiny.get_config().model
    sample.sdxl_folder = str(root)
    sample.use_scnet = sample.use_oben = False
    with pytest.raises(FileNotFoundError, match="pass that variant"):
        load_models(sample)
    sample.variant = "fp16"
    models = load_models(sample)
    for name, ref in modules.items():
        _assert_same_weights(getattr(models, name), ref)
    train = train_tiny.get_config().model
    train.sdxl_folder, train.variant = str(root), "fp16"
    _assert_same_weights(build_unet(train, seed=0), modules["unet"])
