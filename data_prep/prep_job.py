"""Running a data-preparation job from a prep config (the work behind `launch.prep`).

`run_prep(cfg, data_dir, num_preview)` builds (or reuses) the TFDS dataset in `data_dir` from synthetic or
real scenes (see configs/prep_*.py), stores the empty prompt's SDXL embeddings with it when SDXL encodings
are on, writes contact sheets of the first `num_preview` examples, and returns the report.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import ml_collections

from data_prep import dataset, preview, sources
from data_prep.pipeline import ExampleFactory
from personacraft_jax.progress import progress_bar


def _path(value: str | None) -> pathlib.Path | None:
    return None if value is None else pathlib.Path(os.path.expanduser(value))


def _face_embedder(cfg: ml_collections.ConfigDict) -> Any | None:
    root = _path(cfg.face_model_root)
    if root is None and cfg.standin_face_models:
        from data_prep import testing_face_models
        from data_prep.standin_assets import standin_face_root

        root = standin_face_root(cfg.cache_dir)
        if cfg.face_model_name != testing_face_models.PACK_NAME:
            raise ValueError(f"stand-in face models are written as {testing_face_models.PACK_NAME}")
    if root is None:
        return None
    from data_prep.faces import FaceEmbedder

    return FaceEmbedder(root, cfg.face_model_name)


def _sdxl_encoders(cfg: ml_collections.ConfigDict) -> tuple[Any | None, Any | None]:
    if cfg.sdxl_folder is None:
        return None, None
    from data_prep.sdxl_encoders import SDXLTextEncoder, SDXLVaeEncoder

    folder = _path(cfg.sdxl_folder)
    vae = SDXLVaeEncoder(_path(cfg.sdxl_vae_folder), subfolder=None) if cfg.sdxl_vae_folder else SDXLVaeEncoder(folder)
    return SDXLTextEncoder(folder), vae


def _body_model(cfg: ml_collections.ConfigDict) -> Any:
    from data_prep.body_model import BodyModel
    from data_prep.standin_assets import standin_smplx_root

    if cfg.source == "synthetic":
        root = standin_smplx_root(cfg.cache_dir)
    else:
        root = _path(cfg.smplx_model_root)
        if root is None or not (root / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
            raise FileNotFoundError(
                f"expected the SMPL-X model at <smplx_model_root>/smplx/SMPLX_NEUTRAL.npz, got {root}"
            )
    return BodyModel(root)


def _scenes(cfg: ml_collections.ConfigDict, factory: ExampleFactory) -> tuple[Iterator[sources.RawScene], int | None]:
    """The scene iterator and its length (None if unknown)."""
    if cfg.source == "synthetic":
        from data_prep.scenes import SceneLayout

        it = sources.synthetic_scenes(
            factory.body,
            factory.renderer,
            num=cfg.num_examples,
            width=cfg.width,
            height=cfg.height,
            seed=cfg.seed,
            min_people=cfg.min_people,
            max_people=cfg.max_people,
            layout=SceneLayout(tuple(cfg.camera_distance), bool(cfg.place_anywhere)),
        )
        return it, cfg.num_examples
    if cfg.source == "real":
        for key in ("image_dir", "fits_dir", "captions_jsonl"):
            if cfg[key] is None:
                raise ValueError(f"--config.{key} is required for real data")
        image_dir = _path(cfg.image_dir)
        total = (
            sum(1 for p in image_dir.iterdir() if p.suffix.lower() in sources.IMAGE_SUFFIXES)
            if image_dir.is_dir()
            else None
        )
        scenes = sources.folder_scenes(image_dir, _path(cfg.fits_dir), _path(cfg.captions_jsonl), cfg.resolution)
        return scenes, total
    raise ValueError(f"unknown config.source {cfg.source!r} (synthetic or real)")


def run_prep(
    cfg: ml_collections.ConfigDict, data_dir: str | os.PathLike, num_preview: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Build (or reuse) the dataset in `data_dir`, write previews; returns the report."""
    from data_prep.render import SceneRenderer

    data_dir = pathlib.Path(data_dir).expanduser()
    text_encoder, vae_encoder = _sdxl_encoders(cfg)
    factory = ExampleFactory(
        body=_body_model(cfg),
        make_renderer=SceneRenderer,
        max_people=cfg.max_people,
        face_embedder=_face_embedder(cfg),
        text_encoder=text_encoder,
        vae_encoder=vae_encoder,
    )
    empty_prompt = None
    if text_encoder is not None:
        prompt_embeds, pooled = text_encoder.encode([""])
        empty_prompt = {"prompt_embeds": prompt_embeds[0], "pooled_prompt_embeds": pooled[0]}
    scenes, total = _scenes(cfg, factory)
    bar = progress_bar(total, "prep", unit="ex", disable=not progress)
    try:
        report = dataset.build_dataset(
            data_dir,
            (factory.job(raw) for raw in scenes),
            include_sdxl=factory.include_sdxl,
            progress=bar.update,
            extra_report={"config": json.loads(cfg.to_json())},
            empty_prompt=empty_prompt,
        )
    finally:
        bar.close()
        factory.close()
    if num_preview > 0:
        source = dataset.open_split(data_dir)
        for i in range(min(num_preview, len(source))):
            example = source[i]
            preview.write_contact_sheet(
                example, data_dir / "preview" / f"{i:04d}_{example['image_id']}.png", cfg.preview_tile
            )
    return report
