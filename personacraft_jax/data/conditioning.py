"""Model inputs derived from the stored conditioning fields (numpy, per example, in the input pipeline).

Conventions (shared with data_prep's renderer):
- SCNet conditioning (H, W, 4) float32 in [0, 1]: channel 0 = foreground depth normalised per image,
  `1 - (z - zmin) / (zmax - zmin)` (near = bright, background 0; a flat foreground is 1), channels 1..3 =
  the normal map's RGB / 255.
- OBEN conditioning (H, W, 2) float32 in {0, 1}: channel 0 = depth edges dilated by `edge_radius` pixels,
  channel 1 = the occlusion mask dilated by `occlusion_radius` pixels.
- Occlusion mask for OA-CFG and the loss (h, w) float32 in [0, 1] on the latent grid: `occlusion` OR the
  dilated depth edges, area-averaged over `factor` x `factor` pixel blocks.
- SDXL `add_time_ids` (6,) = [orig_h, orig_w, crop_top, crop_left, target_h, target_w].
"""

from __future__ import annotations

import numpy as np


def normalized_depth(depth: np.ndarray) -> np.ndarray:
    """(H, W) metric depth, 0 = background -> (H, W) float32 in [0, 1], near = bright, background 0."""
    z = np.asarray(depth, np.float32)
    foreground = z > 0
    if not foreground.any():
        return np.zeros_like(z)
    z_min, z_max = z[foreground].min(), z[foreground].max()
    span = z_max - z_min
    near_is_bright = 1.0 - (z - z_min) / span if span > 0 else np.ones_like(z)
    return np.where(foreground, near_is_bright, 0.0).astype(np.float32)


def scnet_conditioning(depth: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """(H, W) depth + (H, W, 3) uint8 normal -> (H, W, 4) float32 SCNet input in [0, 1]."""
    if depth.shape != normal.shape[:2] or normal.shape[-1] != 3:
        raise ValueError(f"depth {depth.shape} and normal {normal.shape} must be (H, W) and (H, W, 3)")
    return np.concatenate([normalized_depth(depth)[..., None], normal.astype(np.float32) / 255.0], axis=-1)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an (H, W) mask by a disk of `radius` pixels (radius 0 = unchanged)."""
    mask = np.asarray(mask) > 0
    if radius <= 0:
        return mask
    height, width = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[radius + dy : radius + dy + height, radius + dx : radius + dx + width]
    return out


def oben_conditioning(
    depth_edges: np.ndarray, occlusion: np.ndarray, edge_radius: int = 1, occlusion_radius: int = 0
) -> np.ndarray:
    """(H, W) depth edges + (H, W) occlusion -> (H, W, 2) float32 OBEN input in {0, 1}."""
    return np.stack([dilate(depth_edges, edge_radius), dilate(occlusion, occlusion_radius)], -1).astype(np.float32)


def area_downsample(mask: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) -> (H / factor, W / factor) block means; H and W must be multiples of `factor`."""
    height, width = mask.shape
    if height % factor or width % factor:
        raise ValueError(f"mask of shape {mask.shape} is not a multiple of the latent factor {factor}")
    blocks = np.asarray(mask, np.float32).reshape(height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(1, 3))


def latent_occlusion_mask(
    occlusion: np.ndarray, depth_edges: np.ndarray, edge_radius: int = 1, factor: int = 8
) -> np.ndarray:
    """`occlusion` OR dilated `depth_edges`, area-downsampled to the latent grid: (H/f, W/f) float32."""
    return area_downsample((np.asarray(occlusion) > 0) | dilate(depth_edges, edge_radius), factor)


def add_time_ids(
    original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int]
) -> np.ndarray:
    """SDXL micro-conditioning: [orig_h, orig_w, crop_top, crop_left, target_h, target_w] as float32."""
    return np.asarray([*original_size, *crop_top_left, *target_size], np.float32)
