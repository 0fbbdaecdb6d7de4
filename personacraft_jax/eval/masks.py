"""Mask and boundary agreement measures for generated images (numpy, host side).

All masks are boolean (H, W) (or (N, H, W) where stated). A boundary map is a mask of boundary pixels;
boundaries are compared with a pixel tolerance (a predicted pixel counts if a reference pixel lies within
`tolerance` pixels in the chessboard metric, and vice versa), the usual BSDS-style boundary F-measure
with a square matching window instead of a bipartite assignment.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage, stats

from personacraft_jax.data.conditioning import dilate


def iou(predicted: np.ndarray, reference: np.ndarray) -> float:
    """|P & R| / |P | R| of two boolean masks; 1.0 when both are empty."""
    predicted, reference = np.asarray(predicted, bool), np.asarray(reference, bool)
    union = np.logical_or(predicted, reference).sum()
    return 1.0 if union == 0 else float(np.logical_and(predicted, reference).sum() / union)


def _grow(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """Chessboard dilation by `tolerance` pixels."""
    mask = np.asarray(mask, bool)
    if tolerance <= 0:
        return mask
    return ndimage.binary_dilation(mask, np.ones((2 * tolerance + 1,) * 2, bool))


@dataclasses.dataclass
class BoundaryCounts:
    """Matched / total boundary pixels, summed over images (micro-averaged F-measure)."""

    predicted_matched: int = 0
    predicted: int = 0
    reference_matched: int = 0
    reference: int = 0

    def add(self, predicted: np.ndarray, reference: np.ndarray, region: np.ndarray, tolerance: int = 1) -> None:
        """Counts boundary pixels of (H, W) `predicted` and `reference` inside `region` (H, W)."""
        region = np.asarray(region, bool)
        p, r = np.asarray(predicted, bool) & region, np.asarray(reference, bool) & region
        self.predicted_matched += int((p & _grow(r, tolerance)).sum())
        self.predicted += int(p.sum())
        self.reference_matched += int((r & _grow(p, tolerance)).sum())
        self.reference += int(r.sum())

    @property
    def precision(self) -> float:
        return self.predicted_matched / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.reference_matched / self.reference if self.reference else 0.0

    @property
    def f_score(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f_score": self.f_score,
                "reference_pixels": self.reference}  # fmt: skip


def occlusion_region(occlusion: np.ndarray, radius: int = 2) -> np.ndarray:
    """Where occlusion boundaries are judged: the overlap of two or more people's full silhouettes, dilated by
    `radius` pixels (the boundary of the front person runs along the overlap's edge)."""
    return dilate(np.asarray(occlusion) > 0, radius)


def silhouette_width(mask: np.ndarray, rows: tuple[float, float] = (0.3, 0.6)) -> float:
    """Mean horizontal extent (pixels) of `mask` (H, W) over the band of rows between the fractions `rows` of
    its own vertical extent (0 = top): the torso band for an upright person. 0.0 for an empty mask."""
    mask = np.asarray(mask, bool)
    occupied = np.flatnonzero(mask.any(axis=1))
    if occupied.size == 0:
        return 0.0
    top, bottom = occupied[0], occupied[-1] + 1
    lo = top + round(rows[0] * (bottom - top))
    hi = max(top + round(rows[1] * (bottom - top)), lo + 1)
    return float(mask[lo:hi].sum(axis=1).mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D sequences (scipy's; NaN if either is constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)
