"""Two-process training on CPU (`jax.distributed` on localhost, 4 fake devices per process, gloo): exact
resume with per-process data-iterator states, and a SIGTERM to one process stopping both at one step.

Each scenario is one pair of `tests.multiprocess_worker` processes; they share the persistent compile cache.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
from flax import nnx

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(out: pathlib.Path, scenario: str) -> list[dict]:
    env = {**os.environ, "PERSONACRAFT_JAX_CACHE": str(jax.config.jax_compilation_cache_dir)}
    port = _free_port()
    command = [sys.executable, "-m", "tests.multiprocess_worker"]
    procs = [
        subprocess.Popen(
            [*command, str(i), str(port), str(out), scenario],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{log[-4000:]}"
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
    """Process 1 alone gets SIGTERM after step 2 (of 8): JAX's preemption service tells process 0, both
    stop and save at the same step before the end, and both exit cleanly."""
    results = _two_processes(tmp_path, "sigterm")
    steps = {r["step"] for r in results}
    assert len(steps) == 1, results
    (step,) = steps
    assert 2 < step < 8
    assert results[0]["losses"] == results[1]["losses"] and len(results[0]["losses"]) == step
    saved = sorted(int(p.name) for p in (tmp_path / "preempted" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved[-1] == step
