"""Body-shape control on SMPL-X betas (pure numpy).

beta(gamma) = (1 - gamma) * beta_1 + gamma * beta_2; gamma in [0, 1] interpolates, outside extrapolates.
"Reference-based" control takes beta_2 from another person (of the same scene or an explicit vector).
Scenes are ``data_prep.fits.SceneFit``-like frozen dataclasses (``.people[i].betas``); new objects are
returned, inputs are never modified.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from data_prep.fits import SceneFit


def _betas(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a 1-D betas vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array


def interpolate_betas(beta_1, beta_2, gamma: float) -> np.ndarray:
    """(1 - gamma) * beta_1 + gamma * beta_2 as float32; shapes must match; gamma any finite float."""
    b1, b2 = _betas(beta_1, "beta_1"), _betas(beta_2, "beta_2")
    if b1.shape != b2.shape:
        raise ValueError(f"beta_1 {b1.shape} and beta_2 {b2.shape} must have the same shape")
    gamma = float(gamma)
    if not math.isfinite(gamma):
        raise ValueError(f"gamma must be finite, got {gamma}")
    return ((1.0 - gamma) * b1.astype(np.float64) + gamma * b2.astype(np.float64)).astype(np.float32)


def _index(scene: SceneFit, index: int, name: str) -> int:
    num = len(scene.people)
    if not isinstance(index, (int, np.integer)) or not 0 <= index < num:
        raise ValueError(f"{name} must be an int in [0, {num}), got {index!r}")
    return int(index)


def _with_betas(scene: SceneFit, index: int, betas: np.ndarray) -> SceneFit:
    people = list(scene.people)
    people[index] = dataclasses.replace(people[index], betas=betas)
    return dataclasses.replace(scene, people=tuple(people))


def transfer_betas(scene: SceneFit, source_index: int, target_index: int) -> SceneFit:
    """The scene with person ``target_index`` given person ``source_index``'s betas."""
    source = _index(scene, source_index, "source_index")
    target = _index(scene, target_index, "target_index")
    return _with_betas(scene, target, np.array(scene.people[source].betas, np.float32))


def apply_shape_control(
    scene: SceneFit,
    target_index: int,
    gamma: float,
    *,
    reference_index: int | None = None,
    reference_betas: np.ndarray | None = None,
) -> SceneFit:
    """Set person ``target_index``'s betas to interpolate_betas(own betas, reference, gamma).

    The reference is exactly one of: ``reference_index`` (another person of the scene) or
    ``reference_betas`` (a vector with the same shape as the person's betas).
    """
    target = _index(scene, target_index, "target_index")
    if (reference_index is None) == (reference_betas is None):
        raise ValueError("give exactly one of reference_index and reference_betas")
    if reference_index is not None:
        reference = scene.people[_index(scene, reference_index, "reference_index")].betas
    else:
        reference = reference_betas
    return _with_betas(scene, target, interpolate_betas(scene.people[target].betas, reference, gamma))
