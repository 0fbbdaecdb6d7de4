"""Train SCNet on SDXL base 1.0 at 1024 x 1024 (real scale).

    python -m launch.train --config=configs/train_sdxl.py --workdir=/mnt/shared/run \
        --config.model.sdxl_folder=/path/to/stable-diffusion-xl-base-1.0 \
        --config.data.data_dir=/path/to/prepared_shards

Stage two (OBEN, SCNet frozen): `--config.train.trainable=oben --config.model.scnet_folder=<exported SCNet>`.
Ahead-of-time fit check for a TPU slice (no weights needed):
    python -m launch.aot_compile --config=configs/train_sdxl.py --topology=v5p:2x2x1
"""

import ml_collections

from configs import train_tiny


def get_config() -> ml_collections.ConfigDict:
    c = train_tiny.get_config()
    c.mesh.update({"data": 1, "fsdp": -1, "tensor": 1})
    c.model.unet_preset = "sdxl"  # used only when sdxl_folder is None (abstract AOT compiles)
    c.model.dtype = "bfloat16"
    c.model.frozen_param_dtype = "bfloat16"
    c.model.remat = "dots_saveable"
    c.model.attention = "xla"
    c.data.batch_size = 16
    c.data.worker_count = 8
    c.data.resolution = 1024
    c.train.num_steps = 20_000
    c.train.learning_rate = 1e-5
    c.train.end_lr = 1e-6
    c.train.warmup_steps = 500
    c.train.lambda_occ = 1.0
    c.checkpoint.every_steps = 1000
    c.log.every_steps = 50
    return c
