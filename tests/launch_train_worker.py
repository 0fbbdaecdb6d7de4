"""`launch.train` in this process on the in-memory training fixtures (no prepared data set), with a SIGTERM
to itself after step SIGTERM_STEP (as a preemption notice would); exits with launch.train's status.

    python -m tests.launch_train_worker SIGTERM_STEP --config=tests/train_fixtures.py --workdir=DIR \
        --config.data.data_dir=in-memory [--config.x=y ...]
"""

from __future__ import annotations

import runpy
import sys

import tests.conftest  # noqa: F401  (8 fake CPU devices and the persistent compile cache, before jax is used)
from personacraft_jax.train import metrics_writer
from tests import train_fixtures as fx
from tests.launch_train_driver import use_fixture_data


def main(sigterm_step: int, flags: list[str]) -> None:
    sigterm = fx.SigtermAt(sigterm_step)
    use_fixture_data()
    write = metrics_writer.MetricsWriter.write_scalars

    def write_then_signal(self, step, scalars):
        write(self, step, scalars)
        sigterm.write_scalars(step, scalars)

    metrics_writer.MetricsWriter.write_scalars = write_then_signal
    sys.argv = ["launch.train", *flags]
    runpy.run_module("launch.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
