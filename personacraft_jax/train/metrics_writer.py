"""TensorBoard metrics and images (process 0 only) plus a readable log line every `log_every` steps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

_LOG_KEYS = (
    "loss",
    "mse_occluded",
    "grad_norm",
    "learning_rate",
    "examples_per_second",
    "tflops_per_device",
    "skipped_steps",
)


class MetricsWriter:
    """Writes scalars / images under `logdir` with tensorboardX; a no-op on processes other than 0."""

    def __init__(self, logdir: str | os.PathLike, log_every: int = 10, progress: Any | None = None):
        """`progress`: an optional tqdm bar (`personacraft_jax.progress.progress_bar`) set to each written step."""
        self.log_every = max(int(log_every), 1)
        self.progress = progress
        self._writer = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter  # Optional dependency (the `train` extra).

            self._writer = SummaryWriter(os.fspath(logdir), flush_secs=30)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(step - self.progress.n)
            if "loss" in scalars:
                self.progress.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
        if self._writer is None:
            return
        for name, value in scalars.items():
            if name != "step":
                self._writer.add_scalar(f"train/{name}", float(value), step)
        if step % self.log_every == 0:
            shown = "  ".join(f"{k} {scalars[k]:.4g}" for k in _LOG_KEYS if k in scalars)
            logging.info("step %d  %s", step, shown)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """images: name -> (H, W, 3) uint8."""
        if self._writer is None:
            return
        for name, image in images.items():
            self._writer.add_image(name, np.asarray(image), step, dataformats="HWC")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self._writer is not None:
            self._writer.close()
