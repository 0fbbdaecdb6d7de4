"""InstantID's 5-point face keypoint image (the IdentityNet conditioning), drawn with OpenCV.

Black W x H RGB canvas; keypoint colours 0..4 (RGB): red, green, blue, yellow, magenta; a "limb" from
each of keypoints 0, 1, 3, 4 to the nose (2): a filled ellipse centred at the segment midpoint with
half-axes (length / 2, 4 px), rotated to the segment, in the non-nose endpoint's colour; the whole canvas
is scaled by 0.6 (truncated to uint8); then a filled circle of radius 10 px per keypoint at full colour.
Coordinates are truncated to ints as OpenCV drawing needs them (as in InstantID).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

KEYPOINT_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))
LIMB_HALF_WIDTH = 4
LIMB_INTENSITY = 0.6
DOT_RADIUS = 10


def draw_face_keypoints(width: int, height: int, kps: np.ndarray) -> np.ndarray:
    """kps (5, 2) pixel (x, y) in insightface order -> uint8 H x W x 3 RGB keypoint image."""
    kps = np.asarray(kps, np.float64)
    if kps.shape != (5, 2) or not np.all(np.isfinite(kps)):
        raise ValueError(f"kps must be a finite (5, 2) array, got shape {kps.shape}")
    canvas = np.zeros((height, width, 3), np.float64)
    for start, end in LIMBS:
        (x0, y0), (x1, y1) = kps[start], kps[end]
        length = math.hypot(x0 - x1, y0 - y1)
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, KEYPOINT_COLORS[start])
    image = (canvas * LIMB_INTENSITY).astype(np.uint8)
    for (x, y), color in zip(kps, KEYPOINT_COLORS):
        cv2.circle(image, (int(x), int(y)), DOT_RADIUS, color, -1)
    return image
