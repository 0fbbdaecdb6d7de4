"""Data prep from real photos with Multi-HMR-format SMPL-X fits.

    python -m launch.prep --config=configs/prep_real.py --data_dir=/data/pc_real \
        --config.image_dir=/data/images --config.fits_dir=/data/fits --config.captions_jsonl=/data/captions.jsonl \
        --config.smplx_model_root=/models/smplx_root --config.face_model_root=/models/insightface

Layout: `image_dir/<stem>.{jpg,jpeg,png}`, `fits_dir/<stem>.npz|.json` (see `data_prep.fits`), captions as UTF-8
JSON lines `{"image": "<file name or stem>", "caption": "..."}`, one per image (see `data_prep.sources`). `smplx_model_root` holds `smplx/SMPLX_NEUTRAL.npz`
(user-provided, license-gated). Faces need `face_model_root/models/<face_model_name>/*.onnx` (antelopev2);
None = no embeddings. SDXL inputs are computed only when `sdxl_folder` is set. Nothing is downloaded.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = "real"
    c.image_dir = config_dict.placeholder(str)
    c.fits_dir = config_dict.placeholder(str)
    c.captions_jsonl = config_dict.placeholder(str)
    c.smplx_model_root = config_dict.placeholder(str)
    # Resize (short side) + centre-crop photos and cameras to this square size (SDXL's original_size and
    # crop_top_left are recorded); None (`--config.resolution=None`) keeps each photo's own size (the loader
    # must then crop). Typed `object` so that the command line accepts None as well as an int.
    c.resolution = config_dict.placeholder(object)
    c.resolution = 1024
    # Transparent pixels (PNG alpha / tRNS) are composited over this RGB colour before anything else.
    c.alpha_background = (255, 255, 255)
    c.max_people = 8
    c.cache_dir = "~/.cache/personacraft_jax/prep"
    c.face_model_root = config_dict.placeholder(str)
    c.face_model_name = "antelopev2"
    c.standin_face_models = False
    c.sdxl_folder = config_dict.placeholder(str)
    c.sdxl_vae_folder = config_dict.placeholder(str)
    c.preview_tile = 256
    return c
