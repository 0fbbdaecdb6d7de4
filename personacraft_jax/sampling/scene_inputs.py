"""From a validated scene to the sampler's inputs: pose, render, derive the conditioning (numpy, host side).

Conventions (DESIGN section 4, `data.conditioning`): SCNet input = normalised depth + normal RGB / 255;
OBEN input = dilated depth edges + occlusion; OA-CFG mask = occlusion OR dilated edges, area-downsampled to the
latent grid. Identity per person *(our design)*: keypoint image = InstantID's drawing of the person's projected
SMPL-X face keypoints, / 255; region mask = the person's amodal silhouette dilated by `region_radius` pixels,
area-downsampled to the latent grid (the sampler block-averages it further per resolution). A person gets no
identity (face_valid 0) when it has no face input or its face is not visible (see `data_prep.render`).

Sizes (`check_scene_size`, before anything is rendered): width and height must be multiples of the models'
`SamplerModels.size_multiple`, and the full-resolution arrays `render_conditioning` builds must fit in the host's
memory: at least `conditioning_bytes_per_pixel(P)` = 32 + 13 P bytes per pixel for P people (the renderer's maps:
depth float16 2, normal 3, instance, occlusion and depth edges 1 each, amodal P; SCNet input float32 16, OBEN
input float32 8; one float32 RGB keypoint image per person 12 P). That is a lower bound (the sampler inputs
repeat some of them per seed, and the device needs more), so a scene refused by it cannot run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from data_prep.keypoint_image import draw_face_keypoints
from personacraft_jax.data.conditioning import (
    add_time_ids,
    area_downsample,
    dilate,
    latent_occlusion_mask,
    oben_conditioning,
    scnet_conditioning,
)
from personacraft_jax.sampling.sampler import SamplerInputs, Scales
from personacraft_jax.sampling.scene_file import SceneFileError, SceneSpec, check_dimensions

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class SceneConditioning:
    """Per-scene arrays: scnet (H, W, 4), oben (H, W, 2), occlusion_mask (h, w), face_images (P, H, W, 3) in
    [0, 1], person_masks (P, h, w), face_visible (P,) bool, and the renderer's raw `maps`."""

    scnet: np.ndarray
    oben: np.ndarray
    occlusion_mask: np.ndarray
    face_images: np.ndarray
    person_masks: np.ndarray
    face_visible: np.ndarray
    maps: dict[str, np.ndarray]


def conditioning_bytes_per_pixel(num_people: int) -> int:
    """Bytes per image pixel that `render_conditioning`'s arrays take at least (see the module docstring)."""
    return 32 + 13 * num_people


def check_scene_size(scene: SceneSpec, size_multiple: int, memory_bytes: int) -> None:
    """Refuses (`SceneFileError` naming `width` / `height`) sizes the models cannot take or whose conditioning
    alone exceeds `memory_bytes` (the host's memory); see the module docstring."""
    check_dimensions(scene.width, scene.height, size_multiple, "the models' size multiple: VAE x UNet downsampling")
    pixels = scene.width * scene.height
    needed = pixels * conditioning_bytes_per_pixel(len(scene.people))
    if needed > memory_bytes:
        raise SceneFileError(
            f"width, height: {scene.width} x {scene.height} is too large: the conditioning maps of "
            f"{len(scene.people)} people take at least {conditioning_bytes_per_pixel(len(scene.people))} bytes per "
            f"pixel, {needed / GIB:.1f} GiB, more than the host's {memory_bytes / GIB:.1f} GiB of memory"
        )


def render_conditioning(
    scene: SceneSpec,
    body: Any,
    renderer: Any,
    *,
    edge_radius: int = 1,
    occlusion_radius: int = 0,
    region_radius: int = 8,
    latent_factor: int,
) -> SceneConditioning:
    """Poses every person with `body` (`data_prep.body_model.BodyModel`) and renders with `renderer`
    (`data_prep.render.SceneRenderer` of the scene's size); `latent_factor`: `SamplerModels.latent_factor`."""
    meshes, joints = [], []
    for person in scene.people:
        verts, person_joints = body.posed(person.fit)
        meshes.append((verts, body.faces))
        joints.append(person_joints)
    maps = renderer.render(meshes, scene.K, joints)
    w, h, f = scene.width, scene.height, latent_factor
    return SceneConditioning(
        scnet=scnet_conditioning(maps["depth"], maps["normal"]),
        oben=oben_conditioning(maps["depth_edges"], maps["occlusion"], edge_radius, occlusion_radius),
        occlusion_mask=latent_occlusion_mask(maps["occlusion"], maps["depth_edges"], edge_radius, f),
        face_images=np.stack([draw_face_keypoints(w, h, k) for k in maps["face_kps"]]).astype(np.float32) / 255.0,
        person_masks=np.stack([area_downsample(dilate(a, region_radius), f) for a in maps["amodal"]]),
        face_visible=np.asarray(maps["face_visible"], bool),
        maps=maps,
    )


def initial_noise(seeds: Sequence[int], latent_shape: tuple[int, int, int]) -> np.ndarray:
    """(B, h, w, C) float32 N(0, 1) noise, one `jax.random.key(seed)` per image (reproducible per seed)."""
    return np.stack([np.asarray(jax.random.normal(jax.random.key(s), latent_shape)) for s in seeds]).astype(np.float32)


def build_inputs(
    scene: SceneSpec,
    cond: SceneConditioning,
    ids: tuple[np.ndarray, np.ndarray],
    negative_ids: tuple[np.ndarray, np.ndarray] | None,
    embeddings: np.ndarray | None,
    *,
    latent_factor: int,
    latent_channels: int = 4,
    use_scnet: bool = True,
    use_oben: bool = True,
) -> SamplerInputs:
    """SamplerInputs for B = len(scene.seeds) images of one scene.

    ids / negative_ids: (1, 77) token ids per tokenizer; embeddings (P, 512) or None (identity off); a person
    whose face input is missing or whose face is not visible gets face_valid 0.
    """
    b = len(scene.seeds)
    tile = lambda a: np.repeat(np.asarray(a)[None], b, axis=0)
    h, w = scene.height // latent_factor, scene.width // latent_factor
    s = scene.scales
    kwargs: dict[str, Any] = {}
    if embeddings is not None:
        has_face = np.array([p.face is not None for p in scene.people])
        kwargs.update(
            face_embeds=tile(embeddings.astype(np.float32)),
            face_images=tile(cond.face_images),
            person_masks=tile(cond.person_masks.astype(np.float32)),
            face_valid=tile((has_face & cond.face_visible).astype(np.float32)),
        )
    return SamplerInputs(
        noise=initial_noise(scene.seeds, (h, w, latent_channels)),
        prompt_ids=np.repeat(ids[0], b, axis=0),
        prompt_ids_2=np.repeat(ids[1], b, axis=0),
        negative_ids=None if negative_ids is None else np.repeat(negative_ids[0], b, axis=0),
        negative_ids_2=None if negative_ids is None else np.repeat(negative_ids[1], b, axis=0),
        time_ids=tile(add_time_ids((scene.height, scene.width), (0, 0), (scene.height, scene.width))),
        scales=Scales.create(s["guidance"], scene.oa_cfg["scale"], s["scnet"], s["oben"], s["identity"], s["ip"]),
        scnet_cond=tile(cond.scnet) if use_scnet else None,
        oben_cond=tile(cond.oben) if use_oben else None,
        occlusion_mask=tile(cond.occlusion_mask[..., None]),
        **kwargs,
    )
