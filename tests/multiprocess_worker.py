"""One process of a two-process training run on CPU (4 fake devices each, gloo collectives).

    python -m tests.multiprocess_worker PROCESS_ID PORT OUT_DIR SCENARIO

Scenarios (each process writes `OUT_DIR/<scenario>_<process id>.json` with its step losses):
  resume:  4 steps straight in OUT_DIR/straight; 2 steps in OUT_DIR/resumed, a new Trainer there, 2 more.
  sigterm: process 1 sends itself SIGTERM after step 2 of 8 in OUT_DIR/preempted; both must stop together.
  sigterm_at_start: resumes OUT_DIR/preempted; process 1 sends itself SIGTERM after the restore, before the
           first step, and both wait for the notice to spread: both must stop after one step.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
# No persistent compile cache: in one run, the process that loaded the step from the cache and its peer,
# which compiled it, hung in the first step's collectives. Here both processes always compile.
jax.config.update("jax_enable_compilation_cache", False)

from tests import train_fixtures as fx  # noqa: E402  (after the XLA flags)


def _run(workdir: pathlib.Path, num_steps: int, writer=None, before_train=None) -> dict:
    from personacraft_jax.train import trainer as trainer_lib

    source = [fx.example(i) for i in range(8)]
    trainer = trainer_lib.Trainer(fx.config(), workdir, source=source, empty_prompt=fx.empty_prompt())
    start = trainer.step
    if before_train is not None:
        before_train()
    history = trainer.train(num_steps, writer=writer)
    trainer.close()
    return {"losses": [r["loss"] for r in history], "start": start, "step": trainer.step}


def _sigterm_then_wait(send: bool) -> None:
    if send:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(3)  # both processes: the notice reaches every process before its first step


def main(process_id: int, port: int, out: pathlib.Path, scenario: str) -> None:
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    if scenario == "resume":
        straight = _run(out / "straight", 4)["losses"]
        resumed = _run(out / "resumed", 2)["losses"] + _run(out / "resumed", 2)["losses"]
        result = {"straight": straight, "resumed": resumed}
    elif scenario == "sigterm":
        result = _run(
            out / "preempted", 8, fx.SigtermAt(2 if process_id == 1 else None, wait_s=3)
        )  # JAX polls for it every second
    elif scenario == "sigterm_at_start":
        result = _run(out / "preempted", 8, before_train=lambda: _sigterm_then_wait(process_id == 1))
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    (out / f"{scenario}_{process_id}.json").write_text(json.dumps(result))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4])
