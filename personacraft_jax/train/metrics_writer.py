"""TensorBoard metrics and images (process 0 only) plus a readable log line every `log_every` steps.

Events are written to the event file by the calling thread (tensorboardX's `EventsWriter`), not queued for
a background thread as tensorboardX's `SummaryWriter` does, so `flush()` puts every event written so far
on disk: the trainer flushes before each checkpoint, and a run killed after a checkpoint keeps the metrics
of every step up to it. Between checkpoints the writer flushes every `flush_secs` (for TensorBoard's live view).
"""

from __future__ import annotations

import os
import time
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
    """Writes scalars / images under `logdir` in TensorBoard's event format; a no-op on processes other
    than 0. Written events reach the disk on `flush()`, `close()` and every `flush_secs` of writing."""

    def __init__(
        self, logdir: str | os.PathLike, log_every: int = 10, progress: Any | None = None, flush_secs: float = 30.0
    ):
        """`progress`: an optional tqdm bar (`personacraft_jax.progress.progress_bar`) set to each written step."""
        self.log_every = max(int(log_every), 1)
        self.progress = progress
        self.flush_secs = float(flush_secs)
        self._events = None
        self._flushed_at = time.monotonic()
        if jax.process_index() == 0:
            from tensorboardX.event_file_writer import EventsWriter  # Optional dependency (the `train` extra).

            os.makedirs(logdir, exist_ok=True)
            self._events = EventsWriter(os.path.join(os.fspath(logdir), "events"))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(step - self.progress.n)
            if "loss" in scalars:
                self.progress.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
        if self._events is None:
            return
        from tensorboardX import summary

        for name, value in scalars.items():
            if name != "step":
                self._write(step, summary.scalar(f"train/{name}", float(value)))
        if step % self.log_every == 0:
            shown = "  ".join(f"{k} {scalars[k]:.4g}" for k in _LOG_KEYS if k in scalars)
            logging.info("step %d  %s", step, shown)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """images: name -> (H, W, 3) uint8."""
        if self._events is None:
            return
        from tensorboardX import summary

        for name, image in images.items():
            self._write(step, summary.image(name, np.asarray(image), dataformats="HWC"))

    def _write(self, step: int, value: Any) -> None:
        from tensorboardX.proto import event_pb2

        self._events.write_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=value))
        if time.monotonic() - self._flushed_at >= self.flush_secs:
            self.flush()

    def flush(self) -> None:
        """Puts every event written so far on disk (flushed and fsync'ed)."""
        if self._events is not None:
            self._events.flush()
            self._flushed_at = time.monotonic()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self._events is not None:
            self._events.close()
            self._events = None
