"""(Re-)computing a finished dataset's SDXL inputs with another SDXL folder, without re-rendering anything.

    encode_dataset(source_dir, out_dir, sdxl_folder)

writes a new dataset in `out_dir`: every example of `source_dir` as stored (image bytes, maps, fits, face
embeddings, ...) with `latent_mean` / `latent_logvar` from the folder's VAE (of the stored image) and
`prompt_embeds` / `pooled_prompt_embeds` from its text encoders (of the stored caption), plus the empty
prompt's embeddings; conventions as `data_prep.sdxl_encoders`. Uses: a base model trained after the data
was rendered (the demo trains its VAE on the rendered photos), another VAE (e.g. SDXL's fp16-fix), or
fine-tuned text encoders. Written through the same builder as `launch.prep` (atomic, report last); its
fingerprint is the source's plus the SDXL folders, so a rerun reuses it and other inputs are refused.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from data_prep import dataset
from data_prep import fingerprint as fingerprint_lib
from data_prep.examples import SdxlInputs, face_reasons

SDXL_FIELDS = ("latent_mean", "latent_logvar", "prompt_embeds", "pooled_prompt_embeds")


@dataclasses.dataclass(frozen=True)
class StoredScene:
    """Example `index` of the source dataset."""

    image_id: str
    index: int


class _StoredExampleEncoder:
    """The builder's factory: a stored example -> (the example with new SDXL inputs, its face reasons)."""

    def __init__(self, source: dataset.SceneSource, text_encoder: Any, vae_encoder: Any):
        self.source, self.text_encoder, self.vae_encoder = source, text_encoder, vae_encoder

    def __call__(self, scene: StoredScene) -> tuple[dict[str, Any], list[str | None]]:
        stored = self.source[scene.index]
        with Image.open(io.BytesIO(stored["image"])) as img:
            pixels = np.asarray(img.convert("RGB"))
        prompt_embeds, pooled = self.text_encoder.encode([stored["caption"]])
        mean, logvar = self.vae_encoder.encode(pixels)
        sdxl = SdxlInputs(mean, logvar, prompt_embeds[0], pooled[0])
        example = {k: v for k, v in stored.items() if k not in SDXL_FIELDS}
        example["num_people"] = np.int32(example["num_people"])
        example.update({field: np.asarray(getattr(sdxl, field), np.float32) for field in SDXL_FIELDS})
        # The source's per-person face reasons, recovered from what it stored.
        embedded = np.asarray(stored["has_face_embedding"], bool)
        height, width = pixels.shape[:2]
        derived = face_reasons(stored["face_kps"], stored["face_visible"], width, height, have_model=False)
        return example, [None if e else reason for e, reason in zip(embedded, derived)]

    def close(self) -> None:
        pass


def encode_dataset(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    sdxl_folder: str | os.PathLike,
    *,
    vae_folder: str | os.PathLike | None = None,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Writes the re-encoded copy of `source_dir`'s dataset into `out_dir` (see the module docstring); returns
    its report. `vae_folder` overrides `sdxl_folder/vae`."""
    from data_prep.sdxl_encoders import SDXLTextEncoder, SDXLVaeEncoder

    source_dir, out_dir = pathlib.Path(source_dir).expanduser(), pathlib.Path(out_dir).expanduser()
    if source_dir.resolve() == out_dir.resolve():
        raise ValueError(f"encode_dataset: source and output are the same folder ({source_dir}); give a new one")
    source = dataset.open_split(source_dir, decode_image=False)
    scenes = [StoredScene(source[i]["image_id"], i) for i in range(len(source))]
    stored = dataset.stored_metadata(source_dir)
    config = {
        "encoded_from": str(source_dir),
        "source_fingerprint": stored["fingerprint"]["digest"],
        "sdxl_folder": str(pathlib.Path(sdxl_folder).expanduser().absolute()),
        "vae_folder": None if vae_folder is None else str(pathlib.Path(vae_folder).expanduser().absolute()),
    }
    content = {k: v for k, v in config.items() if k != "encoded_from"}
    fingerprint = fingerprint_lib.fingerprint(content, scenes)
    encoder = None
    empty_prompt = None
    if not dataset.is_complete(out_dir):  # else reused (or refused) without loading any model
        text_encoder = SDXLTextEncoder(sdxl_folder)
        vae_encoder = SDXLVaeEncoder(vae_folder, subfolder=None) if vae_folder else SDXLVaeEncoder(sdxl_folder)
        encoder = _StoredExampleEncoder(source, text_encoder, vae_encoder)
        prompt_embeds, pooled = text_encoder.encode([""])
        empty_prompt = {"prompt_embeds": prompt_embeds[0], "pooled_prompt_embeds": pooled[0]}
    return dataset.build_dataset(
        out_dir, scenes, include_sdxl=True, fingerprint=fingerprint, factory=encoder, progress=progress,
        config=config, empty_prompt=empty_prompt,
    )  # fmt: skip
