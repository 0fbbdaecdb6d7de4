"""Sampling with the real networks (SDXL base 1.0, SCNet / OBEN exports, InstantID) on an accelerator.

    python -m launch.sample --config=configs/sample_sdxl.py --scene=SCENE.json --out=DIR \
        --config.model.sdxl_folder=/weights/stable-diffusion-xl-base-1.0 \
        --config.model.scnet_folder=/ckpt/scnet --config.model.oben_folder=/ckpt/oben \
        --config.model.identitynet_folder=/weights/InstantID/ControlNetModel \
        --config.model.ip_adapter_file=/weights/InstantID/ip-adapter.bin \
        --config.smplx_model_root=/weights/smplx --config.face_model_root=/weights/insightface

All folders are user-provided (nothing is downloaded). `ip-adapter.bin` is read with
`torch.load(weights_only=True)`; a `.safetensors` file with `image_proj.` / `ip_adapter.` prefixes also works.
"""

import ml_collections

from configs import sample_tiny


def get_config() -> ml_collections.ConfigDict:
    c = sample_tiny.get_config()
    c.model.sdxl_folder = "~/weights/stable-diffusion-xl-base-1.0"
    c.model.vae_folder = "~/weights/sdxl-vae-fp16-fix"  # optional; None = sdxl_folder/vae
    c.model.scnet_folder = "~/checkpoints/scnet"
    c.model.oben_folder = "~/checkpoints/oben"
    c.model.identitynet_folder = "~/weights/InstantID/ControlNetModel"
    c.model.ip_adapter_file = "~/weights/InstantID/ip-adapter.bin"
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "bfloat16"
    c.model.attention = "xla"
    c.region_radius = 16
    c.edge_radius = 2
    c.smplx_model_root = "~/weights/smplx"
    c.face_model_root = "~/weights/insightface"
    c.min_eye_distance_px = 8.0
    return c
