"""Training the KL autoencoder (the SDXL-format VAE) from images: reconstruction + KL, one jitted step.

A small dedicated loop for base-model stages that start from nothing (the demo's miniature world); real runs
bring SDXL's trained VAE. Per step, on a batch x (B, H, W, 3) in [-1, 1]:

    mean, logvar = encode(x);  z = mean + exp(logvar / 2) * eps;  x_hat = decode(z)
    loss = mean |x_hat - x| + kl_weight * mean 0.5 * (mean^2 + exp(logvar) - 1 - logvar)

(both terms are per-element means: pixels x channels and latent elements). After training,
`latent_scaling_factor` sets the config's `scaling_factor` = 1 / std of the latent means over a set of images,
the rule SD's and SDXL's factors were chosen by, so the diffusion model sees unit-variance latents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from personacraft_jax.models.vae import AutoencoderKL, sample_latent


@dataclasses.dataclass(frozen=True)
class AutoencoderTraining:
    """Settings of `train_autoencoder` (the demo config's `vae` section)."""

    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    kl_weight: float = 1e-3
    grad_clip_norm: float = 1.0
    crop_size: int | None = None  # train on random square crops of this size (None = whole images)
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"vae.{name}={getattr(self, name)}; expected >= 1")
        if not self.learning_rate > 0 or self.kl_weight < 0:
            raise ValueError(f"vae.learning_rate={self.learning_rate} must be > 0, vae.kl_weight >= 0")


def autoencoder_loss(
    vae: AutoencoderKL, images: jax.Array, rng: jax.Array, kl_weight: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """images (B, H, W, 3) in [-1, 1] -> (loss, {'loss', 'l1', 'kl', 'latent_std'})."""
    mean, logvar = vae.encode(images)
    reconstruction = vae.decode(sample_latent(mean, logvar, rng))
    l1 = jnp.mean(jnp.abs(reconstruction.astype(jnp.float32) - images))
    kl = jnp.mean(0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar))
    loss = l1 + kl_weight * kl
    return loss, {"loss": loss, "l1": l1, "kl": kl, "latent_std": jnp.std(mean)}


def make_optimizer(settings: AutoencoderTraining) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, settings.learning_rate, settings.warmup_steps, max(settings.steps, settings.warmup_steps + 1),
        end_value=settings.learning_rate * 0.05,
    )  # fmt: skip
    adam = optax.adam(schedule)
    return optax.chain(optax.clip_by_global_norm(settings.grad_clip_norm), adam) if settings.grad_clip_norm else adam


def to_model_range(images_uint8: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 -> float32 in [-1, 1] (the VAE's image range)."""
    return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def train_autoencoder(
    vae: AutoencoderKL,
    images: np.ndarray,
    settings: AutoencoderTraining,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[AutoencoderKL, list[dict[str, float]]]:
    """Trains `vae` on `images` (N, H, W, 3) uint8 (random batches with horizontal flips and, with
    `settings.crop_size`, random crops at multiples of the VAE's factor; seeded); returns the trained model and
    the per-step metrics. `on_step(step, metrics)` is called after each step (progress).

    Cropping makes a step cheaper by the area ratio; a VAE without mid-block attention is fully
    convolutional, so it applies to whole images unchanged."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    crop, factor = settings.crop_size, vae.config.downsample_factor
    if crop is not None and (crop % factor or crop > min(images.shape[1:3])):
        raise ValueError(f"vae.crop_size={crop}: expected a multiple of {factor} no larger than the images")
    graphdef, params, rest = nnx.split(vae, nnx.Param, ...)
    optimizer = make_optimizer(settings)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
        def loss_fn(p):
            return autoencoder_loss(nnx.merge(graphdef, p, rest), batch, rng, settings.kl_weight)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    data_rng = np.random.default_rng(settings.seed)
    key = jax.random.key(settings.seed)
    history: list[dict[str, float]] = []
    pending = None
    for i in range(settings.steps):
        index = data_rng.integers(0, len(images), settings.batch_size)
        flip = data_rng.random(settings.batch_size) < 0.5
        batch = images[index]
        batch = np.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
        if crop is not None:
            top, left = (factor * data_rng.integers(0, (size - crop) // factor + 1) for size in images.shape[1:3])
            batch = batch[:, top : top + crop, left : left + crop]
        params, opt_state, metrics = step(params, opt_state, to_model_range(batch), jax.random.fold_in(key, i))
        if pending is not None:  # read step i - 1 while step i runs
            history.append(_record(*pending, on_step))
        pending = (i + 1, metrics)
    if pending is not None:
        history.append(_record(*pending, on_step))
    return nnx.merge(graphdef, params, rest), history


def _record(step: int, metrics, on_step) -> dict[str, float]:
    record = {"step": step, **{k: float(v) for k, v in jax.device_get(metrics).items()}}
    if on_step is not None:
        on_step(step, record)
    return record


def encode_means(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, h, w, C) latent means (unscaled)."""
    encode = jax.jit(lambda x: vae.encode(x)[0])
    return np.concatenate(
        [np.asarray(encode(to_model_range(images[i : i + batch_size]))) for i in range(0, len(images), batch_size)]
    )


def latent_scaling_factor(vae: AutoencoderKL, images: np.ndarray) -> float:
    """1 / std of the latent means of `images` (N, H, W, 3) uint8 (see the module docstring)."""
    std = float(np.std(encode_means(vae, images)))
    if not std > 0:
        raise ValueError(f"the latent means have std {std}; the autoencoder did not train")
    return 1.0 / std


def with_scaling_factor(vae: AutoencoderKL, scaling_factor: float) -> AutoencoderKL:
    """`vae` with its config's `scaling_factor` replaced (the value diffusers pipelines read)."""
    vae.config = dataclasses.replace(vae.config, scaling_factor=float(scaling_factor))
    return vae
