"""VAE training from images (`train.autoencoder`): the loss against diffusers' own KL, learning, the latent
scaling factor against diffusers' encoder, and the trained VAE written into a pipeline folder."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from personacraft_jax.convert.pretrained import load_pretrained, save_pretrained
from personacraft_jax.models.vae import AutoencoderKL, AutoencoderKLConfig, preset
from personacraft_jax.train import autoencoder as ae


def _images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Flat backgrounds with one coloured rectangle each (uint8)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = rng.integers(0, 256, 3)
        top, left = rng.integers(0, size // 2, 2)
        out[i, top : top + size // 2, left : left + size // 3] = rng.integers(0, 256, 3)
    return out


def _vae(seed: int = 0) -> AutoencoderKL:
    config = dict(preset("demo"))
    config.update(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=4)  # fmt: skip
    return AutoencoderKL(AutoencoderKLConfig.from_dict(config), rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def trained():
    images = _images(32)
    settings = ae.AutoencoderTraining(steps=120, batch_size=8, learning_rate=3e-3, warmup_steps=10, crop_size=8)
    vae, history = ae.train_autoencoder(_vae(), images, settings)
    return vae, history, images


def test_kl_term_matches_diffusers(tmp_path):
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    vae = _vae()
    images = ae.to_model_range(_images(2))
    mean, logvar = vae.encode(images)
    _, metrics = ae.autoencoder_loss(vae, images, jax.random.key(0), kl_weight=1.0)
    moments = torch.from_numpy(np.concatenate([np.asarray(mean), np.asarray(logvar)], -1)).permute(0, 3, 1, 2)
    theirs = DiagonalGaussianDistribution(moments).kl()  # per example, summed over latent elements
    per_element = theirs.sum().item() / np.asarray(mean).size
    np.testing.assert_allclose(float(metrics["kl"]), per_element, rtol=1e-5)


def test_training_reduces_the_reconstruction_error(trained):
    _, history, _ = trained
    first = np.mean([r["l1"] for r in history[:10]])
    last = np.mean([r["l1"] for r in history[-10:]])
    assert last < 0.8 * first, (first, last)
    assert all(np.isfinite(r["loss"]) for r in history)


def test_reconstructions_keep_the_colours(trained):
    """Each rectangle's colour comes back: the chroma (per-pixel deviation from the channel mean) of the
    reconstructions is most of the images' (a VAE that only learned brightness gives grey images)."""
    vae, _, images = trained
    x = ae.to_model_range(images)
    r = np.asarray(vae(x))
    chroma = lambda a: np.std(a - a.mean(-1, keepdims=True))
    assert chroma(r) > 0.5 * chroma(x), (chroma(r), chroma(x))


def test_scaling_factor_gives_unit_variance_latents_in_diffusers(trained, tmp_path):
    from diffusers import AutoencoderKL as TorchVAE

    vae, _, images = trained
    factor = ae.latent_scaling_factor(vae, images)
    folder = save_pretrained(ae.with_scaling_factor(vae, factor), tmp_path / "vae")
    theirs = TorchVAE.from_pretrained(str(folder)).eval()
    assert theirs.config.scaling_factor == pytest.approx(factor)
    with torch.no_grad():
        x = torch.from_numpy(ae.to_model_range(images)).permute(0, 3, 1, 2)
        latents = theirs.encode(x).latent_dist.mean * theirs.config.scaling_factor
    assert float(latents.std()) == pytest.approx(1.0, rel=1e-3)
    assert load_pretrained(AutoencoderKL, folder).config.scaling_factor == pytest.approx(factor)


def test_crop_size_must_fit_the_factor():
    with pytest.raises(ValueError, match="crop_size=5"):
        ae.train_autoencoder(_vae(), _images(4), ae.AutoencoderTraining(steps=1, batch_size=2, crop_size=5))
    with pytest.raises(ValueError, match="no larger than the images"):
        ae.train_autoencoder(_vae(), _images(4), ae.AutoencoderTraining(steps=1, batch_size=2, crop_size=32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        ae.train_autoencoder(_vae(), _images(4).astype(np.float32), ae.AutoencoderTraining(steps=1))
    with pytest.raises(ValueError, match=r"vae\.steps"):
        dataclasses.replace(ae.AutoencoderTraining(), steps=0)
