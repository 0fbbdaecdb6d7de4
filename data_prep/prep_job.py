"""Running a data-preparation job from a prep config (the work behind `launch.prep`).

`run_prep(cfg, data_dir, num_preview, progress, beam_pipeline_options)`:
1. checks the config (`check_config`) and resolves the models into a `FactorySpec` (generated stand-ins
   are written once into `cache_dir`; the spec is what a Beam worker needs to build its own factory);
2. lists the scenes (synthetic, or the real folders, refusing unusable ones) and computes the fingerprint
   of the inputs and config (`data_prep.fingerprint`);
3. builds the dataset in `data_dir` in this process, or on Beam when `beam_pipeline_options` is given
   (`data_prep.beam_prep`), or reuses a complete one with the same fingerprint (another fingerprint is
   refused); stores the empty prompt's SDXL embeddings with it when SDXL encodings are on;
4. writes contact sheets of the first `num_preview` examples and returns the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import ml_collections
import numpy as np

from data_prep import dataset, preview, sources, standin_assets
from data_prep import fingerprint as fingerprint_lib
from data_prep.pipeline import ExampleFactory
from personacraft_jax.progress import progress_bar

# Config keys that cannot change an example: left out of the fingerprint (the input folders' contents are
# hashed instead of their paths, so moving the folders keeps the fingerprint).
NOT_CONTENT_KEYS = ("cache_dir", "preview_tile", "image_dir", "fits_dir", "captions_jsonl")


def _path(value: str | None) -> pathlib.Path | None:
    return None if value is None else pathlib.Path(os.path.expanduser(value))


class ConfigError(ValueError):
    """A prep config value that cannot be used."""


def check_config(cfg: ml_collections.ConfigDict) -> None:
    """Values the config types cannot check; errors name the key."""
    if cfg.source not in ("synthetic", "real"):
        raise ConfigError(f"config.source = {cfg.source!r}: expected 'synthetic' or 'real'")
    if cfg.source != "real":
        return
    for key in ("image_dir", "fits_dir", "captions_jsonl"):
        if cfg[key] is None:
            raise ConfigError(f"--config.{key} is required for real data")
    resolution = cfg.resolution
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0):
        raise ConfigError(
            f"config.resolution = {resolution!r}: expected a positive int, or None to keep each photo's size"
        )
    background = cfg.alpha_background
    if not (
        isinstance(background, tuple | list)
        and len(background) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in background)
    ):
        raise ConfigError(f"config.alpha_background = {background!r}: expected an RGB triple of ints 0..255")


@dataclasses.dataclass(frozen=True)
class FactorySpec:
    """Where every model of an `ExampleFactory` is (paths and numbers only: picklable, so that each Beam
    worker builds its own factory from it). `build` only loads; nothing is generated or downloaded."""

    body_model_root: str
    max_people: int
    face_model_root: str | None = None
    face_model_name: str = "antelopev2"
    sdxl_folder: str | None = None
    sdxl_vae_folder: str | None = None

    @property
    def include_sdxl(self) -> bool:
        return self.sdxl_folder is not None

    def text_encoder(self) -> Any | None:
        if self.sdxl_folder is None:
            return None
        from data_prep.sdxl_encoders import SDXLTextEncoder

        return SDXLTextEncoder(pathlib.Path(self.sdxl_folder))

    def vae_encoder(self) -> Any | None:
        if self.sdxl_folder is None:
            return None
        from data_prep.sdxl_encoders import SDXLVaeEncoder

        if self.sdxl_vae_folder is not None:
            return SDXLVaeEncoder(pathlib.Path(self.sdxl_vae_folder), subfolder=None)
        return SDXLVaeEncoder(pathlib.Path(self.sdxl_folder))

    def build(self) -> ExampleFactory:
        from data_prep.body_model import BodyModel
        from data_prep.render import SceneRenderer

        face_embedder = None
        if self.face_model_root is not None:
            from data_prep.faces import FaceEmbedder

            face_embedder = FaceEmbedder(self.face_model_root, self.face_model_name)
        return ExampleFactory(
            body=BodyModel(self.body_model_root),
            make_renderer=SceneRenderer,
            max_people=self.max_people,
            face_embedder=face_embedder,
            text_encoder=self.text_encoder(),
            vae_encoder=self.vae_encoder(),
        )


def _face_model_root(cfg: ml_collections.ConfigDict) -> pathlib.Path | None:
    root = _path(cfg.face_model_root)
    if root is None and cfg.standin_face_models:
        from data_prep import testing_face_models

        if cfg.face_model_name != testing_face_models.PACK_NAME:
            raise ValueError(f"stand-in face models are written as {testing_face_models.PACK_NAME}")
        root = standin_assets.standin_face_root(cfg.cache_dir)
    return root


def _body_model_root(cfg: ml_collections.ConfigDict) -> pathlib.Path:
    if cfg.source == "synthetic":
        return standin_assets.standin_smplx_root(cfg.cache_dir)
    root = _path(cfg.smplx_model_root)
    if root is None or not (root / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
        raise FileNotFoundError(f"expected the SMPL-X model at <smplx_model_root>/smplx/SMPLX_NEUTRAL.npz, got {root}")
    return root.absolute()


def factory_spec(cfg: ml_collections.ConfigDict) -> FactorySpec:
    """The models of this config, stand-ins generated into `cache_dir` if missing (run it in the launcher)."""
    face_root = _face_model_root(cfg)
    absolute = lambda value: None if value is None else str(_path(value).absolute())
    return FactorySpec(
        body_model_root=str(_body_model_root(cfg)),
        max_people=cfg.max_people,
        face_model_root=None if face_root is None else str(face_root.absolute()),
        face_model_name=cfg.face_model_name,
        sdxl_folder=absolute(cfg.sdxl_folder),
        sdxl_vae_folder=absolute(cfg.sdxl_vae_folder),
    )


def content_config(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as it determines the examples (`NOT_CONTENT_KEYS` left out, stand-in versions added)."""
    content = {k: v for k, v in json.loads(cfg.to_json()).items() if k not in NOT_CONTENT_KEYS}
    if cfg.source == "synthetic":
        from data_prep import standin_smplx

        content["standin_smplx_version"] = standin_assets.source_digest(standin_smplx)
    if cfg.face_model_root is None and cfg.standin_face_models:
        from data_prep import testing_face_models

        content["standin_face_models_version"] = standin_assets.source_digest(testing_face_models)
    return content


def list_scenes(cfg: ml_collections.ConfigDict) -> list[sources.RawScene]:
    """The scenes of the config, in example order."""
    if cfg.source == "synthetic":
        return sources.synthetic_scenes(
            num=cfg.num_examples, width=cfg.width, height=cfg.height, seed=cfg.seed,
            min_people=cfg.min_people, max_people=cfg.max_people, camera_distance=tuple(cfg.camera_distance),
            place_anywhere=bool(cfg.place_anywhere),
        )  # fmt: skip
    return sources.folder_scenes(
        _path(cfg.image_dir), _path(cfg.fits_dir), _path(cfg.captions_jsonl), cfg.resolution,
        tuple(cfg.alpha_background),
    )  # fmt: skip


def _empty_prompt(text_encoder: Any | None) -> dict[str, np.ndarray] | None:
    if text_encoder is None:
        return None
    prompt_embeds, pooled = text_encoder.encode([""])
    return {"prompt_embeds": prompt_embeds[0], "pooled_prompt_embeds": pooled[0]}


def run_prep(
    cfg: ml_collections.ConfigDict,
    data_dir: str | os.PathLike,
    num_preview: int = 0,
    progress: bool = True,
    beam_pipeline_options: str | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the dataset in `data_dir`, write previews; returns the report (module docstring).

    `beam_pipeline_options`: None = in this process; else TFDS-style Beam options naming the runner,
    e.g. 'runner=DirectRunner,direct_num_workers=4,direct_running_mode=multi_processing'.
    """
    data_dir = dataset.local_data_dir(data_dir)
    check_config(cfg)
    beam = None
    if beam_pipeline_options is not None:  # checked before any model is generated or loaded
        from data_prep import beam_prep

        beam_options = beam_prep.BeamOptions(beam_pipeline_options)
    spec = factory_spec(cfg)
    if beam_pipeline_options is not None:
        beam = beam_prep.BeamGeneration(spec.build, beam_options)
    scenes = list_scenes(cfg)
    with progress_bar(len(scenes), "fingerprint", unit="scene", disable=not progress) as bar:
        fingerprint = fingerprint_lib.fingerprint(content_config(cfg), scenes, bar.update)
    factory = empty_prompt = None
    if not dataset.is_complete(data_dir):  # else reused (or refused) without loading any model
        factory = spec.build() if beam is None else None
        empty_prompt = _empty_prompt(factory.text_encoder if factory is not None else spec.text_encoder())
    bar = progress_bar(len(scenes), "prep", unit="ex", disable=not progress or beam is not None)
    try:
        report = dataset.build_dataset(
            data_dir,
            scenes,
            include_sdxl=spec.include_sdxl,
            fingerprint=fingerprint,
            factory=factory,
            beam=beam,
            progress=bar.update,
            config=json.loads(cfg.to_json()),
            empty_prompt=empty_prompt,
        )
    finally:
        bar.close()
        if factory is not None:
            factory.close()
    if num_preview > 0:
        source = dataset.open_split(data_dir)
        for i in range(min(num_preview, len(source))):
            example = source[i]
            preview.write_contact_sheet(
                example, data_dir / "preview" / f"{i:04d}_{example['image_id']}.png", cfg.preview_tile
            )
    return report
