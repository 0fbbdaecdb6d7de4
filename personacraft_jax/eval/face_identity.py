"""Face identity preservation: ArcFace cosine similarity between reference and generated faces.

For one generated image with P requested people:

1. Detect faces (insightface SCRFD through `data_prep.faces.FaceDetector`): F detections with 5 keypoints each.
2. Match detections to people by keypoints. Each person has expected keypoints (5, 2) in the generated image
   (the scene's render, `face_kps`; order: subject's right eye, left eye, nose, right and left mouth corner).
   The distance of a detection to a person is the mean Euclidean distance over the 5 keypoint pairs divided by
   the person's expected face size `s = max(|eye_r - eye_l|, |eye_mid - mouth_mid|, 1 px)`. A pair is
   admissible when that relative distance is <= `max_relative_distance` (default 1.0: the detected keypoints
   lie, on average, within one face size of where the face was rendered). Detections and people are matched
   one to one by the Hungarian algorithm over admissible pairs (most matches first, then smallest total
   distance; `personacraft_jax.eval.matching.assign`).
3. Embed each matched face with `FaceEmbedder.embed_face(image, detected_kps)` (raw ArcFace, norm_crop
   alignment, as InstantID) and take the cosine similarity with the person's reference embedding.

Only people that are *evaluated* count: those with a reference embedding and an expected visible face
(`evaluate` mask; in `launch.evaluate`, the sampler's `face_valid`). Per image / over a set of images:
- `mean_similarity`: mean cosine over the evaluated people whose face was found (NaN when none was found);
- `found_fraction`: found / evaluated (NaN when nobody is evaluated);
- `score_with_misses`: sum of cosines over found faces / evaluated people, i.e. a face not found counts as 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from personacraft_jax.eval.matching import NOT_FOUND, assign

EMBEDDING_DIM = 512
DEFAULT_MAX_RELATIVE_DISTANCE = 1.0


class Detector(Protocol):
    """`data_prep.faces.FaceDetector`-like: `detect_faces(rgb).kps` is (F, 5, 2)."""

    def detect_faces(self, image: np.ndarray): ...


class Embedder(Protocol):
    """`data_prep.faces.FaceEmbedder`-like: `embed_face(rgb, kps5)` is the raw (D,) embedding."""

    def embed_face(self, image: np.ndarray, kps5: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class FaceIdentityResult:
    """Per-person results for one image (P people).

    similarity (P,) float64 cosine, NaN where not found or not evaluated; found (P,) bool; evaluated (P,) bool;
    detection (P,) int64 index into the image's detections or -1; distance (P,) relative keypoint distance of the
    matched detection (NaN if none); num_detections: faces detected in the image.
    """

    similarity: np.ndarray
    found: np.ndarray
    evaluated: np.ndarray
    detection: np.ndarray
    distance: np.ndarray
    num_detections: int

    def summary(self) -> dict[str, float | int]:
        """The module docstring's aggregates for this image."""
        return summarize([self])

    def to_json(self, names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict: per-person entries (named by `names` if given) and the summary."""
        names = list(names) if names is not None else [f"person{i}" for i in range(len(self.found))]
        people = [
            {
                "name": name,
                "evaluated": bool(self.evaluated[i]),
                "found": bool(self.found[i]),
                "similarity": _float_or_none(self.similarity[i]),
                "relative_kps_distance": _float_or_none(self.distance[i]),
                "detection": int(self.detection[i]),
            }
            for i, name in enumerate(names)
        ]
        return {"people": people, "num_detections": self.num_detections, **self.summary()}


def _float_or_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def cosine_similarity(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> float:
    """a . b / (|a| |b|) in float64 for two 1-D vectors of the same length; NaN when a norm is below eps."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"vectors have different lengths {a.shape[0]} and {b.shape[0]}")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > eps else float("nan")


def face_size(kps: np.ndarray) -> np.ndarray:
    """(..., 5, 2) keypoints -> (...,) max(eye distance, eye-midpoint to mouth-midpoint distance), at least 1 px."""
    kps = np.asarray(kps, np.float64)
    eyes = np.linalg.norm(kps[..., 0, :] - kps[..., 1, :], axis=-1)
    eye_mid = 0.5 * (kps[..., 0, :] + kps[..., 1, :])
    mouth_mid = 0.5 * (kps[..., 3, :] + kps[..., 4, :])
    return np.maximum(np.maximum(eyes, np.linalg.norm(eye_mid - mouth_mid, axis=-1)), 1.0)


def relative_kps_distance(expected: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """(P, 5, 2) expected and (F, 5, 2) detected keypoints -> (P, F) mean keypoint distance / expected face size."""
    expected, detected = np.asarray(expected, np.float64), np.asarray(detected, np.float64)
    mean_dist = np.linalg.norm(expected[:, None] - detected[None], axis=-1).mean(-1)
    return mean_dist / face_size(expected)[:, None]


def match_faces(
    expected_kps: np.ndarray,
    detected_kps: np.ndarray,
    evaluate: np.ndarray | None = None,
    max_relative_distance: float = DEFAULT_MAX_RELATIVE_DISTANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Assign detections to people (module docstring, step 2).

    expected_kps (P, 5, 2), detected_kps (F, 5, 2), evaluate (P,) bool (default all). Returns the detection index
    per person (P,) int64, -1 when none, and the relative distance of each matched pair (P,), NaN when none.
    """
    expected = _kps(expected_kps, "expected_kps")
    detected = _kps(detected_kps, "detected_kps")
    dist = relative_kps_distance(expected, detected)
    match = assign(dist, max_relative_distance, evaluate)
    rows = np.flatnonzero(match != NOT_FOUND)
    distance = np.full(len(expected), np.nan)
    distance[rows] = dist[rows, match[rows]]
    return match, distance


def _kps(value: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(value, np.float64)
    if array.ndim != 3 or array.shape[1:] != (5, 2):
        raise ValueError(f"{name} must be (N, 5, 2) face keypoints, got shape {array.shape}")
    return array


def _image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image


def evaluate_face_identity(
    image: np.ndarray,
    references: np.ndarray,
    expected_kps: np.ndarray,
    detector: Detector,
    embedder: Embedder,
    evaluate: np.ndarray | None = None,
    max_relative_distance: float = DEFAULT_MAX_RELATIVE_DISTANCE,
    embedding_dim: int = EMBEDDING_DIM,
) -> FaceIdentityResult:
    """Face identity of one generated image.

    image: RGB uint8 (H, W, 3); references: (P, embedding_dim) raw ArcFace embeddings, one per person;
    expected_kps: (P, 5, 2) pixel (x, y) keypoints where each person's face was rendered; evaluate: (P,) bool,
    which people count (default: every person whose reference is non-zero and whose keypoints are finite; an
    evaluated person with non-finite keypoints counts as not found).
    """
    image = _image(image)
    refs = np.asarray(references, np.float64)
    if refs.ndim != 2 or refs.shape[1] != embedding_dim:
        raise ValueError(f"references must be (P, {embedding_dim}) embeddings, got shape {refs.shape}")
    expected = _kps(expected_kps, "expected_kps")
    num = len(refs)
    if len(expected) != num:
        raise ValueError(f"{num} reference embeddings but {len(expected)} people with expected keypoints")
    finite = np.isfinite(expected).all(axis=(1, 2))
    zero = np.linalg.norm(refs, axis=1) == 0
    evaluate = ~zero & finite if evaluate is None else np.asarray(evaluate, bool)
    if evaluate.shape != (num,):
        raise ValueError(f"evaluate must be ({num},) bool, got shape {evaluate.shape}")
    if np.any(evaluate & zero):
        raise ValueError(f"people {np.flatnonzero(evaluate & zero).tolist()} are evaluated but have an all-zero "
                         "reference embedding")  # fmt: skip

    detected = np.asarray(detector.detect_faces(image).kps, np.float64).reshape(-1, 5, 2)
    # an evaluated person without finite expected keypoints can match nothing: it counts as not found
    match, distance = match_faces(np.where(finite[:, None, None], expected, 0.0), detected, evaluate & finite,
                                  max_relative_distance)  # fmt: skip
    similarity = np.full(num, np.nan)
    for i in np.flatnonzero(match != NOT_FOUND):
        embedding = np.asarray(embedder.embed_face(image, detected[match[i]].astype(np.float32))).reshape(-1)
        if embedding.shape != (embedding_dim,):
            raise ValueError(f"the embedder returned shape {embedding.shape}, expected ({embedding_dim},)")
        similarity[i] = cosine_similarity(refs[i], embedding)
    return FaceIdentityResult(
        similarity=similarity,
        found=match != NOT_FOUND,
        evaluated=evaluate,
        detection=match,
        distance=distance,
        num_detections=len(detected),
    )


def summarize(results: Sequence[FaceIdentityResult]) -> dict[str, float | int]:
    """Aggregates over people of one or more images (module docstring): counts, mean_similarity,
    found_fraction, score_with_misses (NaN where undefined)."""
    evaluated = int(sum(int(r.evaluated.sum()) for r in results))
    sims = np.concatenate([r.similarity[r.found] for r in results]) if results else np.zeros(0)
    found = len(sims)
    nan = float("nan")
    return {
        "num_evaluated": evaluated,
        "num_found": found,
        "num_not_found": evaluated - found,
        "mean_similarity": float(sims.mean()) if found else nan,
        "found_fraction": found / evaluated if evaluated else nan,
        "score_with_misses": float(sims.sum()) / evaluated if evaluated else nan,
    }
