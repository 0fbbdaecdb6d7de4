"""Train the tiny SCNet (and optionally OBEN) on CPU-sized synthetic data.

    python -m launch.train --config=configs/train_tiny.py --workdir=/tmp/pc_train \
        --config.data.data_dir=/tmp/pc_synth --config.train.num_steps=50

The UNet is a randomly initialised tiny SDXL-shaped UNet (`model.unet_preset='tiny'`), frozen; SCNet is
`ControlNetModel.from_unet` with 4 conditioning channels. Stage two (OBEN with SCNet frozen):
`--config.train.trainable=oben --config.model.scnet_folder=<exported SCNet>` (see launch/export.py).
"""

import ml_collections
from ml_collections import config_dict

from configs import sample_tiny


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    # Multi-slice TPU / multi-node GPU: the part of each mesh axis that spans slices, e.g. data=2 for two slices
    # each holding whole FSDP groups; the rest stays on ICI / NVLink. TPU groups devices by slice_index, GPU into
    # nodes of consecutive process ranks (one process per node, or one per GPU with SLURM's block distribution).
    c.mesh_dcn = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1})
    c.sharding_rules = config_dict.placeholder(dict)  # None = parallel.sharding.DEFAULT_RULES

    c.model = ml_collections.ConfigDict()
    c.model.sdxl_folder = config_dict.placeholder(str)  # diffusers SDXL folder; None = random `unet_preset`
    c.model.variant = config_dict.placeholder(str)  # e.g. "fp16": sdxl_folder's *.fp16.safetensors weight files
    c.model.unet_preset = "tiny"
    c.model.scnet_folder = config_dict.placeholder(str)  # start SCNet from an exported ControlNet folder
    c.model.oben_folder = config_dict.placeholder(str)
    c.model.scnet_conditioning_channels = 4  # depth + normal
    c.model.oben_conditioning_channels = 2  # depth edges + occlusion
    # New ControlNets' conditioning embedding (diffusers' default); one stride-2 conv per step after the first,
    # so its length - 1 must be log2 of the VAE's downsampling (3 for SDXL's 8x, 2 for a 4x VAE).
    c.model.conditioning_embedding_out_channels = (16, 32, 96, 256)
    c.model.use_scnet = True  # SCNet's residuals (False: e.g. base / UNet-only training)
    c.model.use_oben = False  # add OBEN's residuals even when it is frozen
    c.model.dtype = "float32"  # compute dtype
    c.model.frozen_param_dtype = "float32"
    c.model.attention = "xla"
    c.model.remat = "none"

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = config_dict.placeholder(str)
    c.data.split = "train"
    c.data.batch_size = 8  # global
    c.data.worker_count = 0
    c.data.caption_dropout = 0.1
    c.data.edge_radius = 1
    c.data.occlusion_radius = 0
    c.data.latent_factor = 8
    c.data.resolution = 64  # used by launch.aot_compile (training reads the shards' size)
    c.data.text_tokens = 77

    c.train = ml_collections.ConfigDict()
    c.train.trainable = ("scnet",)
    c.train.num_steps = 200
    c.train.learning_rate = 1e-4
    c.train.end_lr = 1e-6
    c.train.warmup_steps = 10
    c.train.schedule = "cosine"
    c.train.weight_decay = 1e-2
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.eps = 1e-8
    c.train.grad_clip_norm = 1.0
    c.train.lambda_occ = 0.0  # occlusion-focused weight: 1 + lambda_occ * M_occ
    c.train.min_snr_gamma = config_dict.placeholder(float)
    c.train.prediction_type = "epsilon"
    c.train.nan_policy = "skip"
    # Under nan_policy='skip': stop with an error after this many skipped (non-finite) updates in a row.
    c.train.max_consecutive_skipped_steps = 10
    c.train.scaling_factor = 0.13025  # SDXL's VAE; model.sdxl_folder's vae/config.json overrides it
    c.train.scnet_scale = 1.0
    c.train.oben_scale = 1.0
    c.train.noise_schedule = ml_collections.ConfigDict(
        {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    )

    c.checkpoint = ml_collections.ConfigDict({"every_steps": 100, "keep": 3, "async_save": True})
    # Resume from this step instead of the latest (e.g. one the "fails verification" error lists as verified);
    # newer steps are moved to checkpoints/set_aside/. A one-off: drop it once the run has resumed, or a
    # relaunch goes back to this step again (and stops when set_aside/ already holds the newer steps).
    c.checkpoint.restore_step = config_dict.placeholder(int)
    c.log = ml_collections.ConfigDict({"every_steps": 10})
    # Validation samples in TensorBoard every K steps (0 = off): the scene file is sampled with the current
    # SCNet / OBEN; needs model.sdxl_folder (VAE, text encoders, tokenizers). Sampler options in log.sample.
    c.log.sample_every_steps = 0
    c.log.sample_scene = config_dict.placeholder(str)
    c.log.sample = sample_tiny.get_config()
    return c
