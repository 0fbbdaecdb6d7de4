"""Body shape preservation: SMPL-X betas fitted to a generated image vs the betas that were requested.

Inputs: the requested people (betas (P, 10) after shape control, and their camera-frame head positions
`transl` (P, 3) with the scene's K and size) and a fit of the generated image (`data_prep.fits.SceneFit`,
Multi-HMR format: `transl` is the HEAD joint in the camera frame, K at the fit's image size).

Matching (`match="position"`, default): every head is projected with its own K and divided by its image's
(W, H), so positions are fractions of the image and fits made at another resolution still compare. The cost
of a (requested, fitted) pair is the distance between these normalised positions; pairs farther apart than
`max_distance` (default 0.15, i.e. 15 % of the image side) are not admissible; the Hungarian algorithm then
matches one to one (most matches first, then smallest total distance). `match="order"`: person i <-> fitted
person i (for fits that keep the requested order); extra fitted people are ignored, missing ones not found.

Scores per matched person (betas a = requested, b = fitted):
- `cosine` = a . b / (|a| |b|), in [-1, 1]; 1 = the same shape direction in PCA space. This is the
  headline "body shape preservation" number *(our choice; the paper reports a 0..1 score without its
  definition)*. Undefined (NaN, left out of the mean) when |a| or |b| < 1e-6, i.e. for the mean body.
- `l2` = |a - b| and `mean_abs_error` = mean_k |a_k - b_k|: magnitude-sensitive errors in betas units, always
  defined (the mean body included).
Image aggregates: `mean_cosine` (over matched people with a defined cosine), `mean_l2`, `mean_abs_error`
(over matched people), `found_fraction` = matched / requested.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from personacraft_jax.eval.matching import NOT_FOUND, assign

NUM_BETAS = 10
DEFAULT_MAX_DISTANCE = 0.15
MATCH_MODES = ("position", "order")
_COSINE_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class BodyShapeResult:
    """Per-person results (P requested people): fitted (P,) int64 index into the fit's people or -1; cosine,
    l2, mean_abs_error (P,) float64 (NaN where not found / undefined); fitted_betas (P, 10) (NaN rows where not
    found); num_fitted: people in the fit."""

    fitted: np.ndarray
    cosine: np.ndarray
    l2: np.ndarray
    mean_abs_error: np.ndarray
    fitted_betas: np.ndarray
    num_fitted: int

    @property
    def found(self) -> np.ndarray:
        return self.fitted != NOT_FOUND

    def summary(self) -> dict[str, float | int]:
        return summarize([self])

    def to_json(self, names: Sequence[str] | None = None) -> dict:
        """JSON-ready per-person entries (named by `names` if given) plus the summary."""
        names = list(names) if names is not None else [f"person{i}" for i in range(len(self.fitted))]
        people = []
        for i, name in enumerate(names):
            entry = {"name": name, "found": bool(self.found[i]), "fitted_index": int(self.fitted[i])}
            for key in ("cosine", "l2", "mean_abs_error"):
                value = getattr(self, key)[i]
                entry[key] = float(value) if np.isfinite(value) else None
            entry["fitted_betas"] = self.fitted_betas[i].tolist() if self.found[i] else None
            people.append(entry)
        return {"people": people, "num_fitted": self.num_fitted, **self.summary()}


def betas_scores(requested: np.ndarray, fitted: np.ndarray) -> tuple[float, float, float]:
    """(cosine, l2, mean_abs_error) of two (10,) betas vectors (module docstring); cosine NaN if undefined."""
    a, b = np.asarray(requested, np.float64), np.asarray(fitted, np.float64)
    diff = a - b
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    small = min(np.linalg.norm(a), np.linalg.norm(b)) < _COSINE_EPS
    cosine = float("nan") if small else float(a @ b / norms)
    return cosine, float(np.linalg.norm(diff)), float(np.abs(diff).mean())


def normalized_head_positions(transl: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 3) camera-frame head joints -> (N, 2) projected pixel positions / (W, H); rows behind the camera
    (z <= 0) are NaN."""
    points = np.asarray(transl, np.float64).reshape(-1, 3)
    uvw = points @ np.asarray(K, np.float64).T
    z = uvw[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.where(z > 0, uvw[:, :2] / z, np.nan)
    return uv / np.array([width, height], np.float64)


def match_people(
    requested_positions: np.ndarray,
    fitted_positions: np.ndarray,
    max_distance: float = DEFAULT_MAX_DISTANCE,
) -> np.ndarray:
    """(P, 2) and (Q, 2) normalised head positions -> (P,) fitted index per requested person, -1 if none."""
    req, fit = np.asarray(requested_positions, np.float64), np.asarray(fitted_positions, np.float64)
    if req.ndim != 2 or req.shape[1] != 2 or fit.ndim != 2 or fit.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got {req.shape} and {fit.shape}")
    cost = np.linalg.norm(req[:, None] - fit[None], axis=-1)
    return assign(np.where(np.isfinite(cost), cost, np.inf), max_distance)


def evaluate_body_shape(
    requested_betas: np.ndarray,
    fit,
    *,
    requested_transl: np.ndarray | None = None,
    K: np.ndarray | None = None,
    width: int | None = None,
    height: int | None = None,
    match: str = "position",
    max_distance: float = DEFAULT_MAX_DISTANCE,
) -> BodyShapeResult:
    """Compare the betas of `fit` (a `SceneFit` of the generated image) with `requested_betas` (P, 10).

    `match="position"` needs the requested people's `requested_transl` (P, 3) and the scene's `K`, `width`,
    `height` (the generated image's camera); `match="order"` needs none of them.
    """
    req = np.asarray(requested_betas, np.float64)
    if req.ndim != 2 or req.shape[1] != NUM_BETAS or len(req) == 0:
        raise ValueError(f"requested_betas must be (P, {NUM_BETAS}) with P >= 1, got shape {req.shape}")
    if not np.isfinite(req).all():
        raise ValueError("requested_betas contains NaN or inf")
    num = len(req)
    fitted_betas = np.stack([np.asarray(p.betas, np.float64) for p in fit.people])
    if match == "order":
        assignment = np.where(np.arange(num) < len(fitted_betas), np.arange(num), NOT_FOUND)
    elif match == "position":
        if requested_transl is None or K is None or width is None or height is None:
            raise ValueError("match='position' needs requested_transl, K, width and height")
        transl = np.asarray(requested_transl, np.float64)
        if transl.shape != (num, 3):
            raise ValueError(f"requested_transl must be ({num}, 3) for {num} requested people, got {transl.shape}")
        req_pos = normalized_head_positions(transl, K, width, height)
        fit_pos = normalized_head_positions(np.stack([p.transl for p in fit.people]), fit.K, fit.width, fit.height)
        assignment = match_people(req_pos, fit_pos, max_distance)
    else:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")

    scores = np.full((num, 3), np.nan)
    betas = np.full((num, NUM_BETAS), np.nan)
    for i in np.flatnonzero(assignment != NOT_FOUND):
        betas[i] = fitted_betas[assignment[i]]
        scores[i] = betas_scores(req[i], betas[i])
    return BodyShapeResult(
        fitted=assignment.astype(np.int64),
        cosine=scores[:, 0],
        l2=scores[:, 1],
        mean_abs_error=scores[:, 2],
        fitted_betas=betas,
        num_fitted=len(fitted_betas),
    )


def summarize(results: Sequence[BodyShapeResult]) -> dict[str, float | int]:
    """Aggregates over the people of one or more images (module docstring)."""
    requested = sum(len(r.fitted) for r in results)
    found = [r.found for r in results]
    num_found = int(sum(int(f.sum()) for f in found))

    def mean(key: str) -> float:
        values = np.concatenate([getattr(r, key)[f] for r, f in zip(results, found)]) if results else np.zeros(0)
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else float("nan")

    return {
        "num_requested": requested,
        "num_found": num_found,
        "num_not_found": requested - num_found,
        "found_fraction": num_found / requested if requested else float("nan"),
        "mean_cosine": mean("cosine"),
        "mean_l2": mean("l2"),
        "mean_abs_error": mean("mean_abs_error"),
    }
