"""From scene inputs to one dataset example: validate, pose bodies, render, embed faces, encode for SDXL.

`ExampleFactory(...)(raw_scene)` returns `(example, face_reasons)` or raises `SkipExample`
(`data_prep.scene_outcome.prepare_scene` runs it for the dataset builder). All heavy dependencies (body
model, renderer, face and SDXL models) are constructed by the caller and passed in, so the factory holds no
global state; build one per process (a Beam worker builds its own in `DoFn.setup`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from data_prep.examples import SdxlInputs, assemble_example, face_reasons, validate_scene
from data_prep.sources import RawScene


class Renderer(Protocol):
    def render(self, meshes: list, K: np.ndarray, joints: list) -> dict[str, np.ndarray]: ...


class ExampleFactory:
    """Turns a `RawScene` into an example dict; see the module docstring.

    Args:
      body: posed SMPL-X meshes, `.posed(person) -> (verts (V, 3), joints (127, 3))` and `.faces` (F, 3).
      make_renderer: `(width, height) -> Renderer`; the renderer is kept while the image size stays the same.
      max_people: scenes with more people are skipped.
      face_embedder: `data_prep.faces.FaceEmbedder` or None (then every face is "no_face_model").
      text_encoder / vae_encoder: `data_prep.sdxl_encoders` objects, both or neither.
    """

    def __init__(
        self,
        *,
        body: Any,
        make_renderer: Callable[[int, int], Renderer],
        max_people: int,
        face_embedder: Any | None = None,
        text_encoder: Any | None = None,
        vae_encoder: Any | None = None,
    ):
        if (text_encoder is None) != (vae_encoder is None):
            raise ValueError("pass both SDXL encoders (text and VAE) or neither")
        self.body = body
        self.make_renderer = make_renderer
        self.max_people = max_people
        self.face_embedder = face_embedder
        self.text_encoder = text_encoder
        self.vae_encoder = vae_encoder
        self._renderers: dict[tuple[int, int], Renderer] = {}

    @property
    def include_sdxl(self) -> bool:
        return self.text_encoder is not None

    def renderer(self, width: int, height: int) -> Renderer:
        """The shared renderer for this image size (also used to shade synthetic images)."""
        key = (width, height)
        if key not in self._renderers:
            # One live renderer: pyrender's EGL contexts of two offscreen renderers conflict in one process.
            self.close()
            self._renderers[key] = self.make_renderer(width, height)
        return self._renderers[key]

    def close(self) -> None:
        """Release the renderer(s) (GL contexts)."""
        while self._renderers:
            renderer = self._renderers.pop(next(iter(self._renderers)))
            if hasattr(renderer, "close"):
                renderer.close()

    def __call__(self, raw: RawScene) -> tuple[dict[str, Any], list[str | None]]:
        inputs = raw.load(self)  # synthetic scenes use this factory's body model and renderer
        image, fit = inputs.image, inputs.fit
        height, width = image.shape[:2]
        validate_scene(fit, width, height, self.max_people)
        posed = inputs.posed if inputs.posed is not None else [self.body.posed(person) for person in fit.people]
        meshes = [(verts, self.body.faces) for verts, _ in posed]
        renders = self.renderer(width, height).render(meshes, fit.K, [joints for _, joints in posed])
        reasons = face_reasons(
            renders["face_kps"], renders["face_visible"], width, height, self.face_embedder is not None
        )
        embeddings = [
            None if reason is not None else self.face_embedder.embed_face(image, kps)
            for kps, reason in zip(renders["face_kps"], reasons)
        ]
        sdxl = None
        if self.include_sdxl:
            prompt_embeds, pooled = self.text_encoder.encode([inputs.caption])
            mean, logvar = self.vae_encoder.encode(image)
            sdxl = SdxlInputs(mean, logvar, prompt_embeds[0], pooled[0])
        example = assemble_example(
            image_id=raw.image_id,
            image_bytes=inputs.image_bytes,
            caption=inputs.caption,
            fit=fit,
            renders=renders,
            face_embeddings=embeddings,
            sdxl=sdxl,
            original_size=inputs.original_size or (height, width),
            crop_top_left=inputs.crop_top_left,
        )
        return example, reasons
