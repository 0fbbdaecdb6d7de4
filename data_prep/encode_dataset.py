"""(Re-)computing a finished dataset's SDXL inputs with another SDXL folder, without re-rendering anything.

    encode_dataset(source_dir, out_dir, sdxl_folder)

writes a new dataset in `out_dir`: every example of `source_dir` as stored (image bytes, maps, fits, face
embeddings, ...) with `latent_mean` / `latent_logvar` from the folder's VAE (of the stored image) and
`prompt_embeds` / `pooled_prompt_embeds` from its text encoders (of the stored caption), plus the empty
prompt's embeddings; conventions as `data_prep.sdxl_encoders`. Uses: a base model trained after the data
was rendered (the demo trains its VAE on the rendered photos), another VAE (e.g. SDXL's fp16-fix), or
fine-tuned text encoders. Written through the same builder as `launch.prep` (atomic; report last, with the
source's report under `encoded_from`).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image

from data_prep import dataset
from data_prep.examples import SdxlInputs

_SDXL_FIELDS = ("latent_mean", "latent_logvar", "prompt_embeds", "pooled_prompt_embeds")


def _jobs(source: dataset.SceneSource, text_encoder: Any, vae_encoder: Any) -> Iterator[dataset.SceneJob]:
    for index in range(len(source)):
        stored = source[index]

        def make(stored: dict[str, Any] = stored) -> tuple[dict[str, Any], list[str | None]]:
            with Image.open(io.BytesIO(stored["image"])) as img:
                pixels = np.asarray(img.convert("RGB"))
            prompt_embeds, pooled = text_encoder.encode([stored["caption"]])
            mean, logvar = vae_encoder.encode(pixels)
            example = {k: v for k, v in stored.items() if k not in _SDXL_FIELDS}
            example["num_people"] = np.int32(example["num_people"])
            sdxl = SdxlInputs(mean, logvar, prompt_embeds[0], pooled[0])
            example.update({field: np.asarray(getattr(sdxl, field), np.float32) for field in _SDXL_FIELDS})
            # Face counts of the new report: whether the source stored an embedding (the reasons are in its report).
            reasons = [None if visible else "no_embedding_in_source" for visible in np.asarray(stored["face_visible"])]
            return example, reasons

        yield str(stored["image_id"]), make


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
    source_report_path = dataset.version_dir(source_dir) / dataset.REPORT_FILE
    source_report = json.loads(source_report_path.read_text()) if source_report_path.is_file() else None
    text_encoder = SDXLTextEncoder(sdxl_folder)
    vae_encoder = SDXLVaeEncoder(vae_folder, subfolder=None) if vae_folder else SDXLVaeEncoder(sdxl_folder)
    prompt_embeds, pooled = text_encoder.encode([""])
    return dataset.build_dataset(
        out_dir,
        _jobs(source, text_encoder, vae_encoder),
        include_sdxl=True,
        progress=progress,
        extra_report={
            "encoded_from": {"data_dir": str(source_dir), "report": source_report},
            "sdxl_folder": str(sdxl_folder),
            "vae_folder": None if vae_folder is None else str(vae_folder),
        },
        empty_prompt={"prompt_embeds": prompt_embeds[0], "pooled_prompt_embeds": pooled[0]},
    )
