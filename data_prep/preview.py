"""A PNG contact sheet of one example: image, depth, normal, instances, occlusion, depth edges, face keypoints."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

_PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.uint8,
)


def depth_image(depth: np.ndarray) -> np.ndarray:
    """(H, W) metric depth -> RGB uint8, near = bright over the foreground (DESIGN section 4), background 0."""
    z = np.asarray(depth, np.float32)
    fg = z > 0
    out = np.zeros(z.shape, np.float32)
    if fg.any():
        lo, hi = z[fg].min(), z[fg].max()
        out[fg] = 1.0 - (z[fg] - lo) / max(hi - lo, 1e-6)
        out[fg] = 0.2 + 0.8 * out[fg]  # keep the farthest foreground visible against the background
    return np.repeat((out * 255).astype(np.uint8)[..., None], 3, axis=-1)


def instance_image(instance: np.ndarray) -> np.ndarray:
    """(H, W) person indices (0 = background) -> RGB uint8 with a fixed palette."""
    ids = np.asarray(instance).astype(np.int64)
    return _PALETTE[np.where(ids > 0, (ids - 1) % (len(_PALETTE) - 1) + 1, 0)]


def mask_image(mask: np.ndarray) -> np.ndarray:
    return np.repeat((np.asarray(mask) > 0).astype(np.uint8)[..., None] * 255, 3, axis=-1)


def keypoints_image(
    width: int, height: int, face_kps: np.ndarray, face_visible: np.ndarray, draw: Callable[..., np.ndarray]
) -> np.ndarray:
    """InstantID keypoint drawings of every visible face, combined by maximum."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for kps, visible in zip(np.asarray(face_kps), np.asarray(face_visible)):
        if visible:
            canvas = np.maximum(canvas, np.asarray(draw(width, height, kps), np.uint8))
    return canvas


def contact_sheet(example: Mapping[str, Any], tile: int = 256, draw_keypoints: Callable | None = None) -> Image.Image:
    """One row of labelled tiles; `example` as returned by `dataset.open_split` (image decoded)."""
    if draw_keypoints is None:
        from data_prep.keypoint_image import draw_face_keypoints as draw_keypoints
    image = np.asarray(example["image"], np.uint8)
    height, width = image.shape[:2]
    panels = [
        ("image", image),
        ("depth", depth_image(example["depth"])),
        ("normal", np.asarray(example["normal"], np.uint8)),
        ("instances", instance_image(example["instance"])),
        ("occlusion", mask_image(example["occlusion"])),
        ("depth edges", mask_image(example["depth_edges"])),
        ("face kps", keypoints_image(width, height, example["face_kps"], example["face_visible"], draw_keypoints)),
    ]
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    sheet = Image.new("RGB", (size[0] * len(panels), size[1] + 14), (40, 40, 40))
    pen = ImageDraw.Draw(sheet)
    for i, (label, pixels) in enumerate(panels):
        sheet.paste(Image.fromarray(pixels).resize(size, Image.NEAREST), (i * size[0], 14))
        pen.text((i * size[0] + 3, 1), label, fill=(255, 255, 255))
    return sheet


def write_contact_sheet(example: Mapping[str, Any], path: str | pathlib.Path, tile: int = 256) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(example, tile).save(path)
    return path
