"""The occlusion-focused diffusion loss.

Per latent pixel: squared error of the prediction, averaged over channels, weighted by
`1 + lambda_occ * M_occ` (M_occ in [0, 1] on the latent grid), averaged over pixels; optionally each
example is re-weighted by min-SNR-gamma (Hang et al. 2023):
  epsilon prediction: min(SNR, gamma) / SNR;  v prediction: min(SNR, gamma) / (SNR + 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def min_snr_weight(snr: jax.Array, gamma: float, prediction_type: str) -> jax.Array:
    """(B,) per-example min-SNR-gamma weights."""
    clipped = jnp.minimum(snr, gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise ValueError(f"prediction_type={prediction_type!r}; expected 'epsilon' or 'v_prediction'")


def diffusion_loss(
    prediction: jax.Array,
    target: jax.Array,
    occlusion_mask: jax.Array,
    *,
    lambda_occ: float,
    snr: jax.Array | None = None,
    min_snr_gamma: float | None = None,
    prediction_type: str = "epsilon",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """prediction, target (B, h, w, C); occlusion_mask (B, h, w) -> (scalar loss, metrics).

    Metrics: `loss` (the optimised scalar), `mse` (unweighted), `mse_occluded` (mean error inside the
    occlusion mask, mask-weighted; 0 when the batch has no occlusion).
    """
    error = jnp.mean(jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
    mask = occlusion_mask.astype(jnp.float32)
    per_example = jnp.mean(error * (1.0 + lambda_occ * mask), axis=(1, 2))
    if min_snr_gamma is not None:
        if snr is None:
            raise ValueError("min_snr_gamma needs the per-example snr")
        per_example = per_example * min_snr_weight(snr, min_snr_gamma, prediction_type)
    mask_total = jnp.sum(mask)
    metrics = {
        "mse": jnp.mean(error),
        "mse_occluded": jnp.where(mask_total > 0, jnp.sum(error * mask) / jnp.maximum(mask_total, 1e-12), 0.0),
    }
    loss = jnp.mean(per_example)
    metrics["loss"] = loss
    return loss, metrics
