"""Mask / boundary measures (`eval.masks`) on hand-made cases, and the person reader learning to read shapes
it was not trained on (`eval.person_reader`)."""

from __future__ import annotations

import numpy as np
import pytest

from personacraft_jax.eval import masks
from personacraft_jax.eval import person_reader as reader_lib


def _box(top, left, h, w, size=16):
    m = np.zeros((size, size), bool)
    m[top : top + h, left : left + w] = True
    return m


def test_iou_of_boxes():
    assert masks.iou(_box(0, 0, 4, 4), _box(0, 2, 4, 4)) == pytest.approx(8 / 24)
    assert masks.iou(_box(0, 0, 4, 4), _box(8, 8, 4, 4)) == 0.0
    assert masks.iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0


def test_boundary_counts_with_tolerance():
    reference = np.zeros((8, 8), bool)
    reference[:, 4] = True  # a vertical boundary
    shifted = np.zeros((8, 8), bool)
    shifted[:, 5] = True  # one pixel off
    far = np.zeros((8, 8), bool)
    far[:, 7] = True
    everywhere = np.ones((8, 8), bool)
    exact = masks.BoundaryCounts()
    exact.add(shifted, reference, everywhere, tolerance=0)
    assert exact.f_score == 0.0
    tolerant = masks.BoundaryCounts()
    tolerant.add(shifted, reference, everywhere, tolerance=1)
    assert tolerant.precision == tolerant.recall == tolerant.f_score == 1.0
    half = masks.BoundaryCounts()
    half.add(shifted | far, reference, everywhere, tolerance=1)  # half the predicted pixels are wrong
    assert half.precision == pytest.approx(0.5) and half.recall == 1.0 and half.f_score == pytest.approx(2 / 3)
    inside = masks.BoundaryCounts()  # only the top half counts
    region = np.zeros((8, 8), bool)
    region[:4] = True
    inside.add(far, reference, region, tolerance=1)
    assert inside.reference == 4 and inside.predicted == 4 and inside.f_score == 0.0


def test_silhouette_width_and_rank_correlation():
    person = np.zeros((20, 20), bool)
    person[0:20, 8:12] = True  # 4 px wide everywhere
    person[6:12, 5:15] = True  # 10 px wide over rows 6-11 (the 30-60% band)
    assert masks.silhouette_width(person) == pytest.approx(10.0)
    assert masks.silhouette_width(np.zeros((5, 5), bool)) == 0.0
    assert masks.spearman([0, 1, 2, 3], [1.0, 5.0, 7.0, 20.0]) == pytest.approx(1.0)
    assert masks.spearman([0, 1, 2, 3], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert np.isnan(masks.spearman([0, 1, 2], [1.0, 1.0, 1.0]))


def _shapes(n: int, seed: int, size: int = 16):
    """Random ellipses (people stand-ins) on two-tone backgrounds: images, foreground, boundary."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.uint8)
    fg = np.zeros((n, size, size), bool)
    for i in range(n):
        horizon = rng.integers(4, size - 4)
        images[i] = np.where((yy < horizon)[..., None], rng.integers(60, 200, 3), rng.integers(40, 160, 3))
        cy, cx, ry, rx = rng.uniform(4, size - 4), rng.uniform(3, size - 3), rng.uniform(3, 6), rng.uniform(1.5, 3)
        fg[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        images[i][fg[i]] = rng.integers(0, 256, 3)
    inner = fg.copy()
    inner[:, 1:-1, 1:-1] = fg[:, :-2, 1:-1] & fg[:, 2:, 1:-1] & fg[:, 1:-1, :-2] & fg[:, 1:-1, 2:] & fg[:, 1:-1, 1:-1]
    return images, fg, fg & ~inner


def test_reader_learns_to_read_unseen_shapes():
    images, fg, edges = _shapes(256, 0)
    settings = reader_lib.ReaderTraining(widths=(8, 16, 16), steps=250, batch_size=32, learning_rate=3e-3)
    reader, history = reader_lib.train_reader(images, fg, edges, settings)
    test_images, test_fg, test_edges = _shapes(64, 1)
    predicted_fg, predicted_edges = reader_lib.read(reader, test_images)
    assert np.mean([masks.iou(p, t) for p, t in zip(predicted_fg, test_fg)]) >= 0.8
    counts = masks.BoundaryCounts()
    for p, t in zip(predicted_edges, test_edges):
        counts.add(p, t, np.ones_like(t), tolerance=1)
    assert counts.f_score >= 0.6
    assert history[-1]["loss"] < history[0]["loss"]
    with pytest.raises(ValueError, match="multiple of 4"):
        reader_lib.read(reader, test_images[:, :14, :14])


def test_first_rendition_fraction_sets_the_share_of_photos_in_the_batches():
    """With two renditions, `first_rendition_fraction` is the share of training examples drawn from the first
    one: a reader trained on photos (ellipses) and a blank second rendition at fraction 0.9 reads the photos far
    better than one trained at 0.1. Out-of-range fractions are refused."""
    images, fg, edges = _shapes(128, 0)
    blank = np.full_like(images, 128)
    test_images, test_fg, _ = _shapes(32, 1)

    def iou_at(fraction: float) -> float:
        settings = reader_lib.ReaderTraining(widths=(8, 8, 8), steps=60, batch_size=32, learning_rate=5e-3,
                                             first_rendition_fraction=fraction)  # fmt: skip
        reader, _ = reader_lib.train_reader((images, blank), fg, edges, settings)
        return float(np.mean([masks.iou(p, t) for p, t in zip(reader_lib.read(reader, test_images)[0], test_fg)]))

    assert iou_at(0.9) > iou_at(0.1) + 0.1
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="first_rendition_fraction"):
            reader_lib.ReaderTraining(steps=1, first_rendition_fraction=bad)
    with pytest.raises(ValueError, match="min_saturation"):
        reader_lib.ReaderTraining(min_saturation=1.5)
