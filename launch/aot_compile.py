"""Compile the train step ahead of time for a device topology and report per-chip memory and speed.

    pip install "jax[tpu]==0.10.2"    # libtpu: describes TPU slices on a CPU machine (make tpu-tools)
    python -m launch.aot_compile --config=configs/train_sdxl.py --topology=v5p:2x2x1 \
        [--config.data.batch_size=16 --config.model.remat=none]

`--topology=cpu` compiles for this machine's (fake) CPU devices instead. Nothing is allocated: networks,
optimizer state and batch are abstract. Prints one JSON line with the report (and `--out` writes it).
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from launch import entry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/train_*.py).")
_TOPOLOGY = flags.DEFINE_string("topology", "cpu", "TPU topology, e.g. v5p:2x2x1 or v6e:2x2; 'cpu' = local.")
_OUT = flags.DEFINE_string("out", None, "Also write the report as JSON to this file.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    del argv
    import jax

    from personacraft_jax.train import aot

    if _TOPOLOGY.value == "cpu":
        devices, chip = jax.devices("cpu"), None
    else:
        from jax.experimental import topologies

        try:
            topology = topologies.get_topology_desc(topology_name=_TOPOLOGY.value, platform="tpu")
        except Exception as e:  # libtpu missing or an unknown topology name
            raise app.UsageError(
                f"--topology={_TOPOLOGY.value}: cannot describe it ({e}). Is libtpu installed "
                '(pip install "jax[tpu]==0.10.2")?'
            ) from e
        devices, chip = list(topology.devices), _TOPOLOGY.value.split(":")[0]
    _, report = aot.compile_train_step(_CONFIG.value, devices, chip)
    result = {"topology": _TOPOLOGY.value, **report.as_dict()}
    gib = 1024**3
    print(
        f"{_TOPOLOGY.value}: {report.devices} chips, batch {report.per_chip_batch:g}/chip, "
        f"memory {report.total_bytes / gib:.2f} GiB/chip (arguments {report.argument_bytes / gib:.2f}, "
        f"temporaries {report.temp_bytes / gib:.2f})"
        + (f" of {report.chip_hbm_bytes / gib:.0f}" if report.chip_hbm_bytes else "")
        + {True: " (fits)", False: " (DOES NOT FIT)", None: ""}[report.fits]
        + f", {report.flops_per_chip / 1e12:.2f} TFLOP/chip"
        + (f", XLA estimate {report.xla_seconds:.3f} s/step" if report.xla_seconds else "")
        + (f", MFU {report.mfu:.1%}" if report.mfu else "")
        + f"; compiled in {report.compile_seconds:.0f} s"
    )
    print(json.dumps(result))
    if _OUT.value:
        from personacraft_jax import atomic_write

        atomic_write.write_json(_OUT.value, result)


if __name__ == "__main__":
    entry.run(main)
