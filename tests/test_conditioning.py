"""Input-pipeline conditioning against direct, independent computations."""

import numpy as np
import pytest

from personacraft_jax.data import conditioning


def test_normalized_depth_near_is_bright():
    depth = np.array([[0.0, 2.0], [3.0, 4.0]], np.float16)
    out = conditioning.normalized_depth(depth)
    np.testing.assert_allclose(out, [[0.0, 1.0], [0.5, 0.0]])


def test_normalized_depth_flat_foreground_and_empty():
    np.testing.assert_array_equal(conditioning.normalized_depth(np.array([[0, 2.0]])), [[0, 1]])
    np.testing.assert_array_equal(conditioning.normalized_depth(np.zeros((2, 2))), np.zeros((2, 2)))


def test_scnet_conditioning_channels():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (8, 8)).astype(np.float16)
    normal = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = conditioning.scnet_conditioning(depth, normal)
    assert out.shape == (8, 8, 4) and out.dtype == np.float32
    z = depth.astype(np.float32)
    np.testing.assert_allclose(out[..., 0], (z.max() - z) / (z.max() - z.min()), atol=1e-6)
    np.testing.assert_allclose(out[..., 1:] * 255.0, normal, atol=1e-4)
    with pytest.raises(ValueError, match="must be"):
        conditioning.scnet_conditioning(depth, normal[:4])


def test_dilate_matches_distance_definition():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    out = conditioning.dilate(mask, 2)
    yy, xx = np.mgrid[:9, :9]
    np.testing.assert_array_equal(out, (yy - 4) ** 2 + (xx - 4) ** 2 <= 4)
    np.testing.assert_array_equal(conditioning.dilate(mask, 0), mask)


def test_latent_mask_is_area_fraction():
    occlusion = np.zeros((16, 16), np.uint8)
    occlusion[:8, :4] = 1  # half of the top-left 8x8 block
    edges = np.zeros((16, 16), np.uint8)
    out = conditioning.latent_occlusion_mask(occlusion, edges, edge_radius=1, factor=8)
    np.testing.assert_allclose(out, [[0.5, 0.0], [0.0, 0.0]])
    edges[12, 12] = 1  # a single edge pixel dilated by radius 1 covers 5 pixels of the last block
    out = conditioning.latent_occlusion_mask(occlusion, edges, edge_radius=1, factor=8)
    np.testing.assert_allclose(out[1, 1], 5 / 64)
    with pytest.raises(ValueError, match="multiple of the latent factor"):
        conditioning.area_downsample(np.zeros((10, 16)), 8)


def test_oben_conditioning_and_time_ids():
    edges = np.zeros((5, 5), np.uint8)
    edges[2, 2] = 1
    occlusion = np.eye(5, dtype=np.uint8)
    out = conditioning.oben_conditioning(edges, occlusion, edge_radius=1)
    assert out.shape == (5, 5, 2)
    assert out[..., 0].sum() == 5 and np.array_equal(out[..., 1], occlusion)
    np.testing.assert_array_equal(
        conditioning.add_time_ids((768, 1024), (0, 128), (1024, 1024)), [768, 1024, 0, 128, 1024, 1024]
    )
