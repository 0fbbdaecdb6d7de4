"""The demo's miniature world: its synthetic scenes, prepared through the real prep path, and what the later
stages read back from the shards (photos and their ground truth).

Scenes: `data_prep.scenes.posed_synthetic_scene` (stand-in SMPL-X bodies in random plausible poses, 1-3 people
side by side or one behind another) rendered by `data_prep.render` and shaded on gradient backgrounds.
The training and held-out sets come from different seeds.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from typing import Any

import ml_collections
import numpy as np
from PIL import Image


def standin_body_root(cfg: ml_collections.ConfigDict) -> pathlib.Path:
    """The generated stand-in SMPL-X model's root, as prep uses it."""
    from data_prep.standin_assets import standin_smplx_root

    return standin_smplx_root(cfg.cache_dir)


def standin_face_root(cfg: ml_collections.ConfigDict) -> pathlib.Path:
    """The generated stand-in face models' root (insightface layout), as prep uses them."""
    from data_prep.standin_assets import standin_face_root as root

    return root(cfg.cache_dir)


def prep_config(cfg: ml_collections.ConfigDict, num: int, seed: int, faces: bool = False) -> ml_collections.ConfigDict:
    """The `configs/prep_synthetic.py` config of one of the demo's data sets (no SDXL encodings yet: the
    base model that encodes them is trained on these photos); `faces`: embed faces with the stand-in models."""
    from configs import prep_synthetic

    prep = prep_synthetic.get_config()
    prep.num_examples, prep.seed = num, seed
    prep.width = prep.height = cfg.resolution
    prep.min_people, prep.max_people = cfg.data.min_people, cfg.data.max_people
    prep.camera_distance, prep.place_anywhere = tuple(cfg.data.camera_distance), cfg.data.place_anywhere
    prep.cache_dir = cfg.cache_dir
    prep.preview_tile = 128
    prep.standin_face_models = faces
    return prep


def prepare(
    cfg: ml_collections.ConfigDict, data_dir: pathlib.Path, num: int, seed: int, preview: int = 0, faces: bool = False
) -> dict:
    """Renders `num` scenes into the TFDS dataset `data_dir` (reused if complete); returns the prep report."""
    from data_prep.prep_job import run_prep

    return run_prep(prep_config(cfg, num, seed, faces), data_dir, num_preview=preview)


@dataclasses.dataclass(frozen=True)
class Scenes:
    """A data set's examples as arrays (N examples, H x W pixels):

    images (N, H, W, 3) uint8; foreground (N, H, W) bool (instance > 0); edges (N, H, W) bool (depth_edges);
    occlusion (N, H, W) bool; examples: the stored example dicts (maps, fits, captions; `image` as bytes).
    """

    images: np.ndarray
    foreground: np.ndarray
    edges: np.ndarray
    occlusion: np.ndarray
    examples: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.examples)


def read_scenes(data_dir: pathlib.Path) -> Scenes:
    """Every example of the dataset in `data_dir` (small data sets only: all in memory)."""
    from data_prep import dataset

    source = dataset.open_split(data_dir, decode_image=False)
    examples = [source[i] for i in range(len(source))]
    images = []
    for example in examples:
        with Image.open(io.BytesIO(example["image"])) as img:
            images.append(np.asarray(img.convert("RGB")))
    return Scenes(
        images=np.stack(images),
        foreground=np.stack([np.asarray(e["instance"]) > 0 for e in examples]),
        edges=np.stack([np.asarray(e["depth_edges"]) > 0 for e in examples]),
        occlusion=np.stack([np.asarray(e["occlusion"]) > 0 for e in examples]),
        examples=examples,
    )
