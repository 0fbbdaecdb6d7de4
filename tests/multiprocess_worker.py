"""One process of a two-process training run on CPU (4 fake devices each, gloo collectives).

    python -m tests.multiprocess_worker PROCESS_ID PORT OUT_DIR SCENARIO

Scenarios (each process writes `OUT_DIR/<scenario>_<process id>.json` with its step losses):
  resume:  4 steps straight in OUT_DIR/straight; 2 steps in OUT_DIR/resumed, a new Trainer there, 2 more.
  sigterm: process 1 sends itself SIGTERM after step 2 of 8 in OUT_DIR/preempted; both must stop together.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")


class _SigtermAt:
    """A metrics writer that sends this process SIGTERM after step `step` (as a preemption notice would)."""

    def __init__(self, step: int | None):
        self.step = step

    def write_scalars(self, step, scalars):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _run(workdir: pathlib.Path, num_steps: int, writer=None) -> tuple[list[float], int]:
    from personacraft_jax.train import trainer as trainer_lib
    from tests import train_fixtures as fx

    source = [fx.example(i) for i in range(8)]
    trainer = trainer_lib.Trainer(fx.config(), workdir, source=source, empty_prompt=fx.empty_prompt())
    history = trainer.train(num_steps, writer=writer)
    trainer.close()
    return [r["loss"] for r in history], trainer.step


def main(process_id: int, port: int, out: pathlib.Path, scenario: str) -> None:
    cache = os.environ.get("PERSONACRAFT_JAX_CACHE")
    if cache:  # the test session's persistent compile cache (tests/conftest.py)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    if scenario == "resume":
        straight, _ = _run(out / "straight", 4)
        first, _ = _run(out / "resumed", 2)
        second, _ = _run(out / "resumed", 2)
        result = {"straight": straight, "resumed": first + second}
    elif scenario == "sigterm":
        losses, step = _run(out / "preempted", 8, _SigtermAt(2 if process_id == 1 else None))
        result = {"losses": losses, "step": step}
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    (out / f"{scenario}_{process_id}.json").write_text(json.dumps(result))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4])
