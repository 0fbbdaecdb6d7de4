"""Small in-memory training data and configs for the training tests (tiny UNet preset shapes)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from configs import train_tiny

PIXELS = 32  # 4 x 4 latents
TEXT_TOKENS, TEXT_DIM, POOLED_DIM = 8, 24, 16  # the tiny UNet preset's cross-attention / pooled sizes


def example(index: int) -> dict:
    """A stored example (DESIGN section 5 fields the loader reads) with SDXL inputs."""
    rng = np.random.default_rng(index)
    depth = np.zeros((PIXELS, PIXELS), np.float16)
    top, left = rng.integers(0, PIXELS // 2, 2)
    depth[top : top + PIXELS // 2, left : left + PIXELS // 2] = rng.uniform(2, 4)
    occlusion = np.zeros((PIXELS, PIXELS), np.uint8)
    occlusion[top : top + 4, left : left + 8] = 1
    edges = np.zeros((PIXELS, PIXELS), np.uint8)
    edges[top, left : left + PIXELS // 2] = 1
    latent = np.zeros((4, PIXELS // 8, PIXELS // 8), np.float32)
    latent[:, top // 8 : (top + PIXELS // 2) // 8, left // 8 : (left + PIXELS // 2) // 8] = 3.0
    return {
        "image_id": f"train{index}",
        "depth": depth,
        "normal": (rng.uniform(size=(PIXELS, PIXELS, 3)) * 255 * (depth[..., None] > 0)).astype(np.uint8),
        "occlusion": occlusion,
        "depth_edges": edges,
        "original_size": np.array([PIXELS, PIXELS], np.int32),
        "crop_top_left": np.array([0, 0], np.int32),
        "latent_mean": latent,
        "latent_logvar": np.full_like(latent, -6.0),
        "prompt_embeds": rng.normal(size=(TEXT_TOKENS, TEXT_DIM)).astype(np.float32),
        "pooled_prompt_embeds": rng.normal(size=(POOLED_DIM,)).astype(np.float32),
    }


def empty_prompt() -> dict:
    return {
        "prompt_embeds": np.zeros((TEXT_TOKENS, TEXT_DIM), np.float32),
        "pooled_prompt_embeds": np.zeros((POOLED_DIM,), np.float32),
    }


def config(**mesh):
    """train_tiny with a fixed, test-sized set-up (one shared compile per mesh)."""
    c = train_tiny.get_config()
    c.mesh.update(mesh or {"data": 2, "fsdp": 4})
    c.data.batch_size = 8
    c.data.caption_dropout = 0.2
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 0
    c.train.schedule = "constant"
    c.train.lambda_occ = 1.0
    c.checkpoint.every_steps = 2
    c.checkpoint.async_save = True
    return c


def get_config():
    """`config()`, as a config file (`--config=tests/train_fixtures.py`; tests.launch_train_worker)."""
    return config()


class SigtermAt:
    """A metrics writer that sends this process SIGTERM after step `step` (None: never), as a preemption
    notice would, then waits `wait_s` seconds (time for JAX's preemption service to pass the notice on)."""

    def __init__(self, step: int | None, wait_s: float = 0.0):
        self.step, self.wait_s = step, wait_s

    def write_scalars(self, step, scalars):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(self.wait_s)

    def flush(self):
        pass
