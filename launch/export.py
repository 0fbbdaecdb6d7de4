"""Export a training run's ControlNets: diffusers folders and single-file Flax parameters.

    python -m launch.export --checkpoint=WORKDIR --out=DIR [--step=N] [--overwrite]

Writes `DIR/<net>/` (diffusers ControlNetModel: config.json + diffusion_pytorch_model.safetensors) for each
trainable net of the run (SCNet, OBEN) and `DIR/flax/<net>.flax.safetensors` + `<net>.config.json`.
"""

from __future__ import annotations

from absl import flags, logging

from launch import entry

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The training run's workdir (with checkpoints/, config.json).")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing output folders.")
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv: list[str]) -> None:
    del argv
    from personacraft_jax.train import export

    config = export.load_run_config(_CHECKPOINT.value)
    nets = export.restore_trained_nets(config, _CHECKPOINT.value, _STEP.value)
    for folder in export.export_diffusers(nets, _OUT.value, overwrite=_OVERWRITE.value):
        logging.info("wrote %s", folder)
        print(f"diffusers ControlNet: {folder}")
    for path in export.export_flax(nets, f"{_OUT.value}/flax"):
        print(f"Flax parameters: {path}")


if __name__ == "__main__":
    entry.run(main)
