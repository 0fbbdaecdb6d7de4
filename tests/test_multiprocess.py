"""Two-process training on CPU (`jax.distributed` on localhost, 4 fake devices per process, gloo): exact
resume with per-process data-iterator states, and a SIGTERM to one process stopping both at one step.

Each scenario is one pair of `tests.multiprocess_worker` processes, which compile without the persistent cache.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from flax import nnx

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(out: pathlib.Path, scenario: str, timeout: float = 900) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    port = _free_port()
    logs = [out / f"{scenario}_{i}.log" for i in range(2)]
    procs = []
    try:
        for i, log in enumerate(logs):
            with open(log, "w") as f:  # a file, not a pipe: a chatty process never blocks its peer
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.multiprocess_worker", str(i), str(port), str(out), scenario],
                        cwd=REPO,
                        env=env,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + timeout
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            p.kill()
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{log.read_text()[-4000:]}"
    return [json.loads((out / f"{scenario}_{i}.json").read_text()) for i in range(2)]


def _trained_params(workdir: pathlib.Path, step: int) -> list[np.ndarray]:
    from personacraft_jax.train import export

    nets = export.restore_trained_nets(export.load_run_config(workdir), workdir, step)
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(nets["scnet"], nnx.Param))]


def test_two_process_resume_equals_the_straight_run(tmp_path):
    results = _two_processes(tmp_path, "resume")
    assert results[0] == results[1]  # every process logs the same global losses
    straight, resumed = results[0]["straight"], results[0]["resumed"]
    assert len(straight) == 4 and np.all(np.isfinite(straight))
    assert resumed == straight  # the resumed run saw the same examples, noise and timesteps
    for a, b in zip(_trained_params(tmp_path / "straight", 4), _trained_params(tmp_path / "resumed", 4), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigterm_to_one_process_stops_every_process_at_one_step(tmp_path):
    """Process 1 alone gets SIGTERM once step 2's metrics are read (of 8): JAX's preemption service tells
    process 0, both stop and save at the same step before the end (step 2 itself when the notice spreads
    before process 0 asks at step 2, which a loaded machine makes likely; later otherwise), and both exit
    cleanly. Then a resumed pair whose
    notice comes after the restore but before the first step stops after that step (the sync point is
    counted from the start of the process, not from the resumed step)."""
    results = _two_processes(tmp_path, "sigterm")
    assert results[0] == results[1], results  # the same global losses, stopped at the same step
    step = results[0]["step"]
    assert 2 <= step < 8 and len(results[0]["losses"]) == step
    assert _saved_steps(tmp_path / "preempted")[-1] == step

    resumed = _two_processes(tmp_path, "sigterm_at_start")
    assert resumed[0] == resumed[1], resumed
    assert resumed[0]["start"] == step and resumed[0]["step"] == step + 1, resumed
    assert _saved_steps(tmp_path / "preempted")[-1] == step + 1


def _saved_steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
