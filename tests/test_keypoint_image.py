"""InstantID keypoint image: colours at the dots, 0.6-intensity limbs, black elsewhere."""

import numpy as np
import pytest

from data_prep.keypoint_image import draw_face_keypoints

KPS = np.array([[30.0, 30.0], [90.0, 30.0], [60.0, 60.0], [35.0, 95.0], [85.0, 95.0]])
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def test_dots_limbs_and_background():
    image = draw_face_keypoints(128, 120, KPS)
    assert image.shape == (120, 128, 3) and image.dtype == np.uint8
    for (x, y), color in zip(KPS.astype(int), COLORS):
        np.testing.assert_array_equal(image[y, x], color)
        np.testing.assert_array_equal(image[y + 9, x], color)  # inside the radius-10 dot
    for k in (0, 1, 3, 4):  # limb midpoints (outside every dot): 0.6 x the colour, truncated
        x, y = ((KPS[k] + KPS[2]) / 2).astype(int)
        np.testing.assert_array_equal(image[y, x], (np.array(COLORS[k]) * 0.6).astype(np.uint8))
    for x, y in ((5, 5), (120, 5), (5, 115), (120, 115), (60, 110)):
        np.testing.assert_array_equal(image[y, x], 0)


def test_limb_is_four_pixels_half_width():
    image = draw_face_keypoints(128, 128, KPS)
    # Limb 0 runs along the diagonal; step perpendicular to it from the midpoint (45, 45).
    normal = np.array([1.0, -1.0]) / np.sqrt(2)
    inside = (np.array([45.0, 45.0]) + 3 * normal).round().astype(int)
    outside = (np.array([45.0, 45.0]) + 7 * normal).round().astype(int)
    assert image[inside[1], inside[0], 0] == 153
    assert image[outside[1], outside[0]].sum() == 0


def test_rejects_bad_keypoints():
    with pytest.raises(ValueError, match="5, 2"):
        draw_face_keypoints(64, 64, np.zeros((4, 2)))
    with pytest.raises(ValueError):
        draw_face_keypoints(64, 64, np.full((5, 2), np.nan))
