"""Train SCNet / OBEN on a prepared data set.

    python -m launch.train --config=configs/train_tiny.py --workdir=DIR \
        --config.data.data_dir=DATA_DIR [--config.x=y ...]

Writes `DIR/checkpoints/` (orbax; the run resumes from the latest one), `DIR/tensorboard/` (flushed before
each checkpoint), `DIR/config.json` (the latest launch's config) and `DIR/config_history.jsonl` (each config
the run used, with the step it began at). A resume may change only the settings
`personacraft_jax.train.run_config.RESUMABLE` lists; any other change is refused. Multi-host (TPU pod slices, SLURM): every process runs the same command;
`jax.distributed.initialize()` is called when the environment describes a multi-process job (see
launch/tpu_pod.sh and launch/slurm_multinode.sbatch). One run per workdir: a second launch on a workdir in use
is refused, naming the holder recorded in `DIR/.lock`.

Exit status:
  0    the run reached train.num_steps (or had reached it before this launch).
  143  PREEMPTED_EXIT_STATUS (128 + SIGTERM): a SIGTERM (preemption, a scheduler's time-limit signal) stopped
       the run early at a step boundary, after saving a checkpoint of that step; the same command resumes it.
       With several processes every process stops at the same step and exits 143.
  1    an error (absl prints it), e.g. a bad config, a workdir in use, a non-finite step under
       train.nan_policy='stop', or train.max_consecutive_skipped_steps skipped updates in a row.
Requeue set-ups tell 143 from success and failure: SLURM requeues preempted jobs by itself under `--requeue`;
launch/slurm_multinode.sbatch also requeues the job (`scontrol requeue`) when srun returns 143, e.g. after its
time-limit signal. A plain wrapper: `python -m launch.train ...; [ $? -eq 143 ] && <resubmit the job>`.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from absl import app, flags, logging
from ml_collections import config_flags

from launch import entry

if TYPE_CHECKING:
    from personacraft_jax.train.trainer import Trainer

# launch.train's exit status when a SIGTERM stopped the run early with a checkpoint (what a shell reports for a
# process ended by SIGTERM), distinct from 0 (finished) and 1 (error): a wrapper or scheduler resubmits on it.
PREEMPTED_EXIT_STATUS = 143

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/train_*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, TensorBoard logs, the resolved config.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' = when SLURM / TPU-pod / coordinator variables are set.",
)
flags.mark_flags_as_required(["config", "workdir"])

_MULTIPROCESS_VARS = (
    "JAX_COORDINATOR_ADDRESS",
    "SLURM_NTASKS",
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
)


def _maybe_initialize_distributed() -> None:
    import jax

    wanted = _DISTRIBUTED.value == "on" or (
        _DISTRIBUTED.value == "auto" and any(os.environ.get(v) for v in _MULTIPROCESS_VARS)
    )
    if wanted:
        jax.distributed.initialize()
        logging.info("process %d of %d", jax.process_index(), jax.process_count())


def main(argv: list[str]) -> int:
    """Trains; returns the exit status (0, or PREEMPTED_EXIT_STATUS after an early stop)."""
    del argv
    _maybe_initialize_distributed()
    from data_prep import dataset
    from personacraft_jax.train.metrics_writer import MetricsWriter
    from personacraft_jax.train.trainer import Trainer

    config = _CONFIG.value
    if not config.data.data_dir:
        raise app.UsageError("config data.data_dir is not set (a folder written by launch.prep)")
    source = dataset.open_split(config.data.data_dir, config.data.split, decode_image=False)
    empty_prompt = dataset.load_empty_prompt(config.data.data_dir)
    trainer = Trainer(config, _WORKDIR.value, source=source, empty_prompt=empty_prompt)
    writer = MetricsWriter(os.path.join(_WORKDIR.value, "tensorboard"), log_every=config.log.every_steps)
    try:
        history = trainer.train(writer=writer)
    finally:
        writer.close()
        trainer.close()
    return _report(trainer, history)


def _report(trainer: Trainer, history: list[dict[str, float]]) -> int:
    """Logs how the run ended; returns the exit status."""
    import jax
    import numpy as np

    if trainer.early_stop is not None:
        logging.warning("%s; exit status %d: rerun to resume", trainer.early_stop, PREEMPTED_EXIT_STATUS)
        return PREEMPTED_EXIT_STATUS
    if not history:
        logging.warning("nothing to train: the run is at step %d = config train.num_steps", trainer.step)
    elif jax.process_index() == 0:
        last = {k: float(np.round(v, 6)) for k, v in history[-1].items()}
        logging.info("finished at step %d: %s", trainer.step, json.dumps(last))
    return 0


if __name__ == "__main__":
    entry.run(main)
