"""The demo's training runs: the project's Trainer and export path, configured from `configs/train_tiny.py`.

Three stages use it, each one run in its own workdir with checkpoints and TensorBoard logs, exactly as
`launch.train` / `launch.export` run them:
- `base`: the UNet trained from nothing as a text-to-image model (`train.trainable=('unet',)`, no SCNet);
- `scnet`: SCNet on the frozen base (`from_unet`, depth + normal conditioning);
- `oben`: OBEN with SCNet frozen and the occlusion-weighted loss (`lambda_occ`).
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections

from personacraft_jax.models.controlnet import CONDITIONING_EMBEDDING_WIDTHS


def train_config(
    cfg: ml_collections.ConfigDict,
    stage: str,
    sdxl_folder: pathlib.Path,
    data_dir: pathlib.Path,
    scnet_folder: pathlib.Path | None = None,
) -> ml_collections.ConfigDict:
    """The `configs/train_tiny.py` config of stage `stage` ('base', 'scnet' or 'oben')."""
    from configs import train_tiny

    stage_cfg = cfg[stage]
    train = train_tiny.get_config()
    train.seed = cfg.seed
    train.model.sdxl_folder = str(sdxl_folder)
    train.model.conditioning_embedding_out_channels = CONDITIONING_EMBEDDING_WIDTHS["demo"]
    train.data.data_dir = str(data_dir)
    train.data.batch_size = cfg.batch_size
    train.data.latent_factor = cfg.latent_factor
    train.data.resolution = cfg.resolution
    train.train.num_steps = stage_cfg.steps
    train.train.learning_rate = stage_cfg.learning_rate
    train.train.end_lr = stage_cfg.learning_rate * 0.05
    train.train.warmup_steps = min(20, stage_cfg.steps)
    train.checkpoint.every_steps = stage_cfg.steps
    train.log.every_steps = 50
    if stage == "base":
        train.train.trainable = ("unet",)
        train.model.use_scnet = False
        train.data.caption_dropout = stage_cfg.caption_dropout
    elif stage == "oben":
        train.train.trainable = ("oben",)
        train.train.lambda_occ = stage_cfg.lambda_occ
        train.model.scnet_folder = str(scnet_folder)
    elif stage != "scnet":
        raise ValueError(f"unknown demo training stage {stage!r}")
    return train


def run_training(train: ml_collections.ConfigDict, workdir: pathlib.Path, desc: str) -> list[dict[str, float]]:
    """Trains (or resumes) the run in `workdir`; returns its per-step metrics."""
    from data_prep import dataset
    from personacraft_jax.progress import progress_bar
    from personacraft_jax.train.metrics_writer import MetricsWriter
    from personacraft_jax.train.trainer import Trainer

    data_dir = pathlib.Path(train.data.data_dir)
    trainer = Trainer(
        train,
        workdir,
        source=dataset.open_split(data_dir, decode_image=False),
        empty_prompt=dataset.load_empty_prompt(data_dir),
    )
    bar = progress_bar(int(train.train.num_steps), desc, unit="step", initial=trainer.step)
    writer = MetricsWriter(workdir / "tensorboard", log_every=train.log.every_steps, progress=bar)
    try:
        return trainer.train(writer=writer)
    finally:
        writer.close()
        trainer.close()


def export_run(workdir: pathlib.Path, out: pathlib.Path) -> dict[str, Any]:
    """The run's trained nets, restored from its last checkpoint and written as diffusers folders `out/<net>/`;
    returns {net: module} (the modules, for stages that build on them)."""
    from personacraft_jax.train import export

    nets = export.restore_trained_nets(export.load_run_config(workdir), workdir)
    export.export_diffusers(nets, out, overwrite=True)
    return nets
