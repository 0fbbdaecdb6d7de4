"""Export a training run's trained nets: diffusers folders and single-file Flax parameters.

    python -m launch.export --checkpoint=WORKDIR --out=DIR [--step=N] [--overwrite] [--sdxl_base=FOLDER]

Writes `DIR/<net>/` (diffusers ControlNetModel, or UNet2DConditionModel for a trained UNet: config.json +
diffusion_pytorch_model.safetensors) for each trainable net of the run and `DIR/flax/<net>.flax.safetensors`
+ `<net>.config.json`. A run that trained the UNet also gets `DIR/sdxl/`: a whole SDXL folder (the base's
text encoders, tokenizers, scheduler and VAE with the trained UNet), for `model.sdxl_folder` or diffusers'
`StableDiffusionXLPipeline.from_pretrained`. Existing output folders and Flax files are replaced only with
--overwrite; a checkpoint step that fails its checksum verification, or non-finite weights, stop the export
(the error lists the steps that verify, for --step).
"""

from __future__ import annotations

from absl import flags, logging

from launch import entry

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The training run's workdir (with checkpoints/, config.json).")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing output folders and Flax files.")
_SDXL_BASE = flags.DEFINE_string(
    "sdxl_base",
    None,
    "For a run that trained the UNet: the SDXL folder DIR/sdxl is built from (default: the run's model.sdxl_folder).",
)
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv: list[str]) -> None:
    del argv
    from personacraft_jax.train import export

    config = export.load_run_config(_CHECKPOINT.value)
    nets = export.restore_trained_nets(config, _CHECKPOINT.value, _STEP.value)
    for folder in export.export_diffusers(nets, _OUT.value, overwrite=_OVERWRITE.value):
        logging.info("wrote %s", folder)
        print(f"diffusers {'UNet' if folder.name == 'unet' else 'ControlNet'}: {folder}")
    for path in export.export_flax(nets, f"{_OUT.value}/flax", overwrite=_OVERWRITE.value):
        print(f"Flax parameters: {path}")
    base = _SDXL_BASE.value or config.model.get("sdxl_folder")
    if "unet" in nets and base:
        print(f"SDXL folder: {export.export_sdxl(nets, base, f'{_OUT.value}/sdxl', overwrite=_OVERWRITE.value)}")
    elif "unet" in nets:
        print("no SDXL folder written: the run has no model.sdxl_folder; give --sdxl_base")


if __name__ == "__main__":
    entry.run(main)
