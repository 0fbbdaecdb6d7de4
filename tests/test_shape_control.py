"""Body-shape control: the interpolation formula (incl. extrapolation) and reference-based transfer."""

import numpy as np
import pytest

from data_prep.fits import PersonFit, SceneFit, multihmr_intrinsics
from personacraft_jax.body.shape_control import apply_shape_control, interpolate_betas, transfer_betas


def _scene(num=3):
    rng = np.random.default_rng(0)
    people = tuple(
        PersonFit(rng.normal(size=10), rng.normal(size=10), rng.normal(size=(53, 3)), rng.normal(size=3))
        for _ in range(num)
    )
    return SceneFit(people, multihmr_intrinsics(64, 64), 64, 64)


@pytest.mark.parametrize("gamma", [0.0, 0.25, 1.0, -0.5, 1.75])
def test_interpolate_formula_and_extrapolation(gamma):
    b1 = np.arange(10, dtype=np.float64)
    b2 = np.linspace(-3, 3, 10)
    expected = [b1[i] + gamma * (b2[i] - b1[i]) for i in range(10)]
    got = interpolate_betas(b1, b2, gamma)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_endpoints_and_validation():
    b1, b2 = np.ones(10), -np.ones(10)
    np.testing.assert_array_equal(interpolate_betas(b1, b2, 0.0), b1)
    np.testing.assert_array_equal(interpolate_betas(b1, b2, 1.0), b2)
    with pytest.raises(ValueError, match="same shape"):
        interpolate_betas(np.ones(10), np.ones(11), 0.5)
    with pytest.raises(ValueError, match="finite"):
        interpolate_betas(b1, b2, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        interpolate_betas(np.full(10, np.inf), b2, 0.5)


def test_transfer_and_apply_shape_control():
    scene = _scene()
    original = [p.betas.copy() for p in scene.people]
    moved = transfer_betas(scene, source_index=2, target_index=0)
    np.testing.assert_array_equal(moved.people[0].betas, original[2])
    np.testing.assert_array_equal(moved.people[0].rotvec, scene.people[0].rotvec)
    np.testing.assert_array_equal(moved.people[1].betas, original[1])
    controlled = apply_shape_control(scene, 1, 1.5, reference_index=0)
    np.testing.assert_allclose(controlled.people[1].betas, -0.5 * original[1] + 1.5 * original[0], rtol=1e-5)
    explicit = apply_shape_control(scene, 1, 0.5, reference_betas=np.zeros(10))
    np.testing.assert_allclose(explicit.people[1].betas, 0.5 * original[1], rtol=1e-6)
    for p, b in zip(scene.people, original):  # inputs untouched
        np.testing.assert_array_equal(p.betas, b)
    with pytest.raises(ValueError, match="target_index"):
        apply_shape_control(scene, 3, 0.5, reference_index=0)
    with pytest.raises(ValueError, match="exactly one"):
        apply_shape_control(scene, 0, 0.5)
    with pytest.raises(ValueError, match="source_index"):
        transfer_betas(scene, -1, 0)
