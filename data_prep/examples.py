"""Validation of one scene's inputs and assembly of one dataset example (DESIGN section 5).

An example is a flat dict of numpy arrays / bytes / str, keyed as in `dataset.features()`:

- `image_id` str, `image` encoded PNG/JPEG bytes (RGB, H x W), `caption` str
- section 4 fields: `depth` float16 (H, W), `normal` uint8 (H, W, 3), `instance` uint8 (H, W),
  `amodal` uint8 (N, H, W), `occlusion` uint8 (H, W), `depth_edges` uint8 (H, W),
  `face_kps` float32 (N, 5, 2), `face_visible` bool (N,): the face is visible (the renderer's visibility:
  in frame, turned to the camera, not occluded; `data_prep.render`), whether or not a face model is used
- `num_people` int32, `betas` (N, 10), `expression` (N, 10), `pose` (N, 53, 3) axis-angle
  (Multi-HMR `rotvec` order), `transl` (N, 3), `K` (3, 3), `face_embedding` (N, 512), all float32;
  `has_face_embedding` bool (N,): whether `face_embedding` holds the ArcFace embedding of the face at
  `face_kps` (only visible faces are embedded, and only with a face model); otherwise the embedding is zero
- `original_size` int32 (2,) = (height, width), `crop_top_left` int32 (2,) = (top, left)
- optional (only when SDXL encoders are configured): `latent_mean`, `latent_logvar` float32 (4, H/8, W/8),
  `prompt_embeds` float32 (77, 2048), `pooled_prompt_embeds` float32 (1280,)

Bad inputs raise `SkipExample(reason)` with a short, countable reason (`SKIP_REASONS`).
Per-person face problems do not skip the example; they give a reason from `FACE_REASONS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data_prep.faces import kps_in_frame

EMBEDDING_DIM = 512
NUM_BETAS = 10
NUM_EXPRESSION = 10
NUM_POSE_JOINTS = 53

SKIP_REASONS = (
    "missing_fit",
    "malformed_fit",
    "unreadable_image",
    "missing_caption",
    "zero_people",
    "too_many_people",
    "nonfinite_params",
    "bad_shape",
    "size_mismatch",
    "behind_camera",
    "missing_image",
    "bad_intrinsics",
)
FACE_REASONS = ("out_of_frame", "hidden", "no_face_model")
MIN_FOV_DEG, MAX_FOV_DEG = 1.0, 170.0  # plausible camera fields of view (`validate_camera`)


class SkipExample(Exception):
    """The example cannot be written; `reason` is one of `SKIP_REASONS`, `detail` says why."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class SdxlInputs:
    """Precomputed SDXL inputs for one example (see `sdxl_encoders` for conventions)."""

    latent_mean: np.ndarray
    latent_logvar: np.ndarray
    prompt_embeds: np.ndarray
    pooled_prompt_embeds: np.ndarray


def _array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SkipExample("bad_shape", f"{what} is not numeric ({err})") from err
    if array.shape != shape:
        raise SkipExample("bad_shape", f"{what} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise SkipExample("nonfinite_params", f"{what} has NaN or inf")
    return array


def validate_camera(K: np.ndarray, width: int, height: int) -> None:
    """Check that the intrinsics K (3, 3) describe a camera for this W x H image; raises `SkipExample`.

    The principal point must lie in the image and the focal lengths (pixels) must give a field of view
    between `MIN_FOV_DEG` and `MAX_FOV_DEG` on each axis (a focal length in mm or normalised units does not).
    """
    k = np.asarray(K, np.float64)
    cx, cy = k[0, 2], k[1, 2]
    if not (0.0 <= cx <= width and 0.0 <= cy <= height):
        raise SkipExample(
            "bad_intrinsics", f"principal point ({cx:.1f}, {cy:.1f}) px is outside the {width}x{height} image"
        )
    for axis, focal, size in (("x", k[0, 0], width), ("y", k[1, 1], height)):
        if not focal > 0:
            raise SkipExample("bad_intrinsics", f"focal length f{axis} = {focal} px is not positive")
        fov = math.degrees(2.0 * math.atan(size / (2.0 * focal)))
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            raise SkipExample(
                "bad_intrinsics",
                f"focal length f{axis} = {focal:.4g} px gives a {fov:.3g} deg field of view over {size} px "
                f"(expected {MIN_FOV_DEG:g}..{MAX_FOV_DEG:g}; focal lengths are in pixels)",
            )


def validate_scene(fit: Any, width: int, height: int, max_people: int) -> None:
    """Check a SceneFit against the image it belongs to; raises `SkipExample`."""
    people = tuple(getattr(fit, "people", ()) or ())
    if not people:
        raise SkipExample("zero_people", "the fit has no people")
    if len(people) > max_people:
        raise SkipExample("too_many_people", f"{len(people)} people > max_people={max_people}")
    k = _array(fit.K, (3, 3), "K")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1 or np.any(k[2, :2] != 0):
        raise SkipExample("bad_shape", f"K is not an OpenCV intrinsics matrix: {k.tolist()}")
    if (int(fit.width), int(fit.height)) != (int(width), int(height)):
        raise SkipExample("size_mismatch", f"fit is for {fit.width}x{fit.height}, image is {width}x{height}")
    for i, person in enumerate(people):
        _array(person.betas, (NUM_BETAS,), f"person {i} betas")
        _array(person.expression, (NUM_EXPRESSION,), f"person {i} expression")
        _array(person.rotvec, (NUM_POSE_JOINTS, 3), f"person {i} rotvec")
        transl = _array(person.transl, (3,), f"person {i} transl")
        if transl[2] <= 0:
            raise SkipExample("behind_camera", f"person {i} has camera z = {transl[2]:.3f} <= 0")


def face_reasons(
    face_kps: np.ndarray, render_visible: np.ndarray, width: int, height: int, have_model: bool
) -> list[str | None]:
    """Per person: None if the face can be embedded, else a reason from `FACE_REASONS`.

    Out of frame wins over hidden (the renderer's `face_visible`), which wins over a missing face model.
    """
    reasons: list[str | None] = []
    for kps, visible in zip(np.asarray(face_kps), np.asarray(render_visible, dtype=bool)):
        if not kps_in_frame(kps, width, height):
            reasons.append("out_of_frame")
        elif not visible:
            reasons.append("hidden")
        elif not have_model:
            reasons.append("no_face_model")
        else:
            reasons.append(None)
    return reasons


_RENDER_FIELDS = {
    # name: (dtype, shape given N, H, W)
    "depth": (np.float16, lambda n, h, w: (h, w)),
    "normal": (np.uint8, lambda n, h, w: (h, w, 3)),
    "instance": (np.uint8, lambda n, h, w: (h, w)),
    "amodal": (np.uint8, lambda n, h, w: (n, h, w)),
    "occlusion": (np.uint8, lambda n, h, w: (h, w)),
    "depth_edges": (np.uint8, lambda n, h, w: (h, w)),
    "face_kps": (np.float32, lambda n, h, w: (n, 5, 2)),
}


def assemble_example(
    *,
    image_id: str,
    image_bytes: bytes,
    caption: str,
    fit: Any,
    renders: Mapping[str, np.ndarray],
    face_embeddings: Sequence[np.ndarray | None],
    sdxl: SdxlInputs | None = None,
    original_size: tuple[int, int] | None = None,
    crop_top_left: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """One example dict (module docstring); `face_embeddings[i]` is None where person i has no usable face.

    `original_size` (height, width) defaults to the image's own size.
    """
    n, h, w = len(fit.people), int(fit.height), int(fit.width)
    example: dict[str, Any] = {"image_id": str(image_id), "image": bytes(image_bytes), "caption": str(caption)}
    for name, (dtype, shape_fn) in _RENDER_FIELDS.items():
        value = np.asarray(renders[name])
        if value.shape != shape_fn(n, h, w):
            raise ValueError(f"render field {name} has shape {value.shape}, expected {shape_fn(n, h, w)}")
        example[name] = value.astype(dtype)
    if len(face_embeddings) != n:
        raise ValueError(f"{len(face_embeddings)} face embeddings for {n} people")
    embeddings = np.zeros((n, EMBEDDING_DIM), np.float32)
    embedded = np.zeros((n,), bool)
    for i, emb in enumerate(face_embeddings):
        if emb is not None:
            embeddings[i] = np.asarray(emb, np.float32).reshape(EMBEDDING_DIM)
            embedded[i] = True
    rendered_visible = np.asarray(renders["face_visible"], bool)
    if rendered_visible.shape != (n,):
        raise ValueError(f"render field face_visible has shape {rendered_visible.shape}, expected {(n,)}")
    # Visible = neither "out_of_frame" nor "hidden" in `face_reasons` (the report counts the same).
    visible = np.array([v and kps_in_frame(k, w, h) for k, v in zip(example["face_kps"], rendered_visible)], bool)
    if np.any(embedded & ~visible):
        raise ValueError(f"faces {np.flatnonzero(embedded & ~visible).tolist()} are embedded but not visible")
    example.update(
        face_visible=visible,
        has_face_embedding=embedded,
        face_embedding=embeddings,
        num_people=np.int32(n),
        betas=np.stack([np.asarray(p.betas, np.float32) for p in fit.people]),
        expression=np.stack([np.asarray(p.expression, np.float32) for p in fit.people]),
        pose=np.stack([np.asarray(p.rotvec, np.float32) for p in fit.people]),
        transl=np.stack([np.asarray(p.transl, np.float32) for p in fit.people]),
        K=np.asarray(fit.K, np.float32),
        original_size=np.asarray(original_size or (h, w), np.int32),
        crop_top_left=np.asarray(crop_top_left, np.int32),
    )
    if sdxl is not None:
        example.update(
            latent_mean=np.asarray(sdxl.latent_mean, np.float32),
            latent_logvar=np.asarray(sdxl.latent_logvar, np.float32),
            prompt_embeds=np.asarray(sdxl.prompt_embeds, np.float32),
            pooled_prompt_embeds=np.asarray(sdxl.pooled_prompt_embeds, np.float32),
        )
    return example
