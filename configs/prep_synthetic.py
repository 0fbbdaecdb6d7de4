"""Data prep from synthetic scenes: stand-in SMPL-X bodies, random poses/placements, shaded renders.

    python -m launch.prep --config=configs/prep_synthetic.py --data_dir=/tmp/pc_synth \
        --config.num_examples=16 --config.width=256 --config.height=256 --preview=4

Faces: `face_model_root` = a folder in insightface's layout (`<root>/models/<face_model_name>/*.onnx`);
None = no embeddings (zeros, `has_face_embedding` false, reason "no_face_model"; `face_visible` still says
what the renderer sees). `standin_face_models=True` generates small random ONNX stand-ins into `cache_dir`
instead (for demos and benchmarks: the embeddings mean nothing). SDXL inputs are computed only when `sdxl_folder` (a diffusers SDXL folder) is set.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = "synthetic"
    c.num_examples = 64
    c.width = 1024
    c.height = 1024
    c.seed = 0
    c.min_people = 1
    c.max_people = 3
    # Placement (data_prep.scenes.SceneLayout): the front row's camera distance range in metres before the
    # group is moved back into view (closer = bigger people), and whether groups stand anywhere they fit
    # horizontally instead of centred.
    c.camera_distance = (2.3, 3.6)
    c.place_anywhere = False
    # The generated stand-in SMPL-X model (and stand-in face models) are written here once.
    c.cache_dir = "~/.cache/personacraft_jax/prep"
    c.face_model_root = config_dict.placeholder(str)
    c.face_model_name = "antelopev2"
    c.standin_face_models = False
    c.sdxl_folder = config_dict.placeholder(str)
    c.sdxl_vae_folder = config_dict.placeholder(str)  # a separate VAE folder (e.g. fp16-fix); default sdxl_folder/vae
    c.preview_tile = 256
    return c
