"""Generate images of a scene file with the jit-compiled PersonaCraft sampler.

    python -m launch.sample --config=configs/sample_tiny.py --scene=SCENE.json --out=DIR [--config.x=y]

Steps: read and validate the scene (`personacraft_jax.sampling.scene_file` documents the format), pose the
people (SMPL-X; the stand-in model when `smplx_model_root` is None), render the conditioning maps with
data_prep's renderer, embed the reference faces, tokenize, compile and run the sampler, then write to DIR:
- `image_seed<S>.png`, one per seed;
- `conditioning/`: the conditioning maps as PNGs and the expected face keypoints (`face_kps.npy`);
- `face_embeddings.npy` (identity on): the reference embeddings;
- `settings.json`: the resolved scene, the config, the device and the timings
(see `personacraft_jax.sampling.sample_job`). `python -m launch.evaluate --samples=DIR` scores the output.
With `configs/sample_tiny.py` (no weights folders) the networks are random tiny stand-ins: the images are
noise-like; the run exercises the whole pipeline.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from launch import entry
from personacraft_jax.sampling.sample_job import run_sample

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sampling config (configs/sample_*.py).", lock_config=True)
_SCENE = flags.DEFINE_string("scene", None, "Scene file (.json / .yaml).")
_OUT = flags.DEFINE_string("out", None, "Output folder (created).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    for name, flag in (("config", _CONFIG), ("scene", _SCENE), ("out", _OUT)):
        if flag.value is None:
            raise app.UsageError(f"--{name} is required")
    run_sample(_CONFIG.value, _SCENE.value, _OUT.value)


if __name__ == "__main__":
    entry.run(main)
