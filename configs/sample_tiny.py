"""Sampling with random tiny networks on CPU (no weights needed): exercises the whole pipeline.

    python -m launch.sample --config=configs/sample_tiny.py --scene=configs/scenes/tiny_two_people.json --out=/tmp/pc_sample

Every network is a randomly initialised tiny stand-in (`personacraft_jax.sampling.models.tiny_models`) and the
body model is the generated SMPL-X-format stand-in, so the images are noise-like; the conditioning maps are real
renders. Sizes must be multiples of the models' size multiple, derived from the loaded models (16 here: the VAE's
factor 8 x the tiny UNet's one downsampling; SDXL: 32). `model.variant` picks diffusers' variant weight files
(e.g. "fp16": `diffusion_pytorch_model.fp16.safetensors`, `model.fp16.safetensors`) in `sdxl_folder`'s components.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict()
    c.model.sdxl_folder = config_dict.placeholder(str)  # None = random tiny networks
    c.model.vae_folder = config_dict.placeholder(str)
    c.model.scnet_folder = config_dict.placeholder(str)
    c.model.oben_folder = config_dict.placeholder(str)
    c.model.identitynet_folder = config_dict.placeholder(str)
    c.model.ip_adapter_file = config_dict.placeholder(str)
    c.model.variant = config_dict.placeholder(str)  # e.g. "fp16": sdxl_folder's *.fp16.safetensors weight files
    c.model.use_scnet = True  # tiny random networks only: which ones to build
    c.model.use_oben = True
    c.model.use_identity = True
    c.model.random_std = 0.05
    c.model.seed = 0
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.attention = "xla"

    c.scheduler = "euler"  # euler | ddim | dpmsolver++ (SDXL's scheduler config)
    c.edge_radius = 1  # OBEN input / OA-CFG mask: depth-edge dilation (px)
    c.occlusion_radius = 0
    c.region_radius = 2  # identity region: amodal silhouette dilation (px)
    c.smplx_model_root = config_dict.placeholder(str)  # None = the generated stand-in
    c.face_model_root = config_dict.placeholder(str)  # insightface layout; needed for face *images*
    c.face_model_name = "antelopev2"
    c.cache_dir = "~/.cache/personacraft_jax/sample"
    c.render_platform = "egl"
    # A per-step progress bar from inside the compiled loop (a host callback). Executables with host callbacks
    # are not stored in JAX's persistent compilation cache: set False to reuse compiles across runs.
    c.progress = True
    c.min_eye_distance_px = 0.5  # a face counts as visible (identity on) from this eye distance; tiny images
    return c
