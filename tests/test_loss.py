"""The occlusion-weighted diffusion loss against a direct numpy computation."""

import numpy as np
import pytest

from personacraft_jax.train import loss as loss_lib


def _numpy_loss(pred, target, mask, lambda_occ, snr=None, gamma=None, kind="epsilon"):
    error = ((pred - target) ** 2).mean(-1)
    per_example = (error * (1 + lambda_occ * mask)).reshape(len(pred), -1).mean(1)
    if gamma is not None:
        weight = np.minimum(snr, gamma) / (snr if kind == "epsilon" else snr + 1)
        per_example = per_example * weight
    return per_example.mean(), (error * mask).sum() / mask.sum()


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_loss_matches_numpy(kind):
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 2, 4, 4, 3)).astype(np.float32)
    mask = (rng.uniform(size=(2, 4, 4)) > 0.6).astype(np.float32)
    snr = np.array([0.5, 9.0], np.float32)
    loss, metrics = loss_lib.diffusion_loss(
        pred, target, mask, lambda_occ=2.0, snr=snr, min_snr_gamma=5.0, prediction_type=kind
    )
    want, want_occ = _numpy_loss(pred, target, mask, 2.0, snr, 5.0, kind)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(metrics["mse_occluded"], want_occ, rtol=1e-6)


def test_occlusion_weight_raises_loss_inside_mask_only():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(2, 1, 4, 4, 2)).astype(np.float32)
    mask = np.zeros((1, 4, 4), np.float32)
    plain, _ = loss_lib.diffusion_loss(pred, target, mask, lambda_occ=10.0)
    np.testing.assert_allclose(plain, ((pred - target) ** 2).mean(), rtol=1e-6)
    mask[0, 0, 0] = 1.0
    weighted, metrics = loss_lib.diffusion_loss(pred, target, mask, lambda_occ=10.0)
    extra = 10.0 * ((pred - target) ** 2).mean(-1)[0, 0, 0] / 16
    np.testing.assert_allclose(weighted - plain, extra, rtol=1e-5)
    assert metrics["mse_occluded"] > 0


def test_min_snr_needs_snr():
    x = np.zeros((1, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="needs the per-example snr"):
        loss_lib.diffusion_loss(x, x, x[..., 0], lambda_occ=0.0, min_snr_gamma=5.0)
