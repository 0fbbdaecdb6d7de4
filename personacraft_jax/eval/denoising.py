"""Held-out denoising losses that show what the control branches contribute.

On a held-out set, at a fixed grid of timesteps with fixed noise (deterministic, the same for every variant),
the UNet's epsilon-prediction error is measured with:
- `scnet`: SCNet's residuals (OBEN's scale 0);
- `scnet_zero_cond`: SCNet fed an all-zero conditioning image (what the geometry itself is worth);
- `scnet_oben`: SCNet + OBEN residuals.
Each reports `mse` (all latent pixels) and `mse_occluded` (pixels weighted by the latent occlusion mask).
One jit-compiled function serves every variant: scales and conditioning are inputs, not constants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from personacraft_jax.sampling import schedulers
from personacraft_jax.train import step as step_lib

TIMESTEPS = (100, 300, 500, 700, 900)


def _variant_inputs(batch: Mapping[str, np.ndarray], variant: str) -> tuple[dict, dict]:
    batch = dict(batch)
    scales = {"scnet": np.float32(1.0), "oben": np.float32(1.0 if variant == "scnet_oben" else 0.0)}
    if variant == "scnet_zero_cond":
        batch["scnet_cond"] = np.zeros_like(batch["scnet_cond"])
    return batch, scales


def heldout_losses(
    nets: step_lib.Networks,
    params: Mapping,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    scaling_factor: float,
    noise_schedule: schedulers.SchedulerConfig | None = None,
    timesteps: tuple[int, ...] = TIMESTEPS,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{variant: {'mse', 'mse_occluded'}} averaged over `batches` (model-input dicts) x `timesteps`.

    `params` holds 'unet', 'scnet' and optionally 'oben'; without OBEN only the first two variants run.
    """
    noise_schedule = noise_schedule or schedulers.SchedulerConfig()
    if noise_schedule.prediction_type != "epsilon":
        raise ValueError(f"heldout_losses compares epsilon predictions; got {noise_schedule.prediction_type!r}")
    variants = ["scnet", "scnet_zero_cond"] + (["scnet_oben"] if "oben" in params else [])

    @jax.jit
    def errors(params, batch, t, noise, scales):
        latents = batch["latent_mean"] * scaling_factor
        noisy = schedulers.add_noise(noise_schedule, latents, noise, t)
        t = jnp.full((latents.shape[0],), t)
        pred = step_lib.predict(
            nets, params, batch, noisy, t, batch["prompt_embeds"], batch["pooled_prompt_embeds"], scales
        )
        error = jnp.mean(jnp.square(pred - noise), axis=-1)
        mask = batch["occlusion_mask"]
        return jnp.sum(error), error.size, jnp.sum(error * mask), jnp.sum(mask)

    totals = {v: np.zeros(4) for v in variants}
    rng = np.random.default_rng(seed)
    for batch in batches:
        for t in timesteps:
            noise = rng.standard_normal(batch["latent_mean"].shape).astype(np.float32)
            for variant in variants:
                inputs, scales = _variant_inputs(batch, variant)
                totals[variant] += np.asarray(jax.device_get(errors(params, inputs, t, noise, scales)), np.float64)
    return {
        v: {"mse": float(s[0] / s[1]), "mse_occluded": float(s[2] / s[3]) if s[3] > 0 else float("nan")}
        for v, s in totals.items()
    }
