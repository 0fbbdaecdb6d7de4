"""`python -m launch.demo`: see `launch.demo`."""

from __future__ import annotations

import logging as std_logging
import os
import pathlib
import warnings

from absl import logging
from ml_collections import config_flags

from launch import entry

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo config (configs/demo.py).")


def _quiet_libraries() -> None:
    """The demo prints its own progress: no TFDS progress bars or "downloading" lines, no accelerate hints."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    logging.set_verbosity(logging.WARNING)
    for name in ("absl", "tensorflow_datasets", "diffusers", "transformers", "jax._src.xla_bridge"):
        std_logging.getLogger(name).setLevel(std_logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="diffusers")


def main(argv: list[str]) -> None:
    del argv
    _quiet_libraries()
    import jax

    from launch.demo.run import run_demo

    cache = pathlib.Path(os.path.expanduser(_CONFIG.value.cache_dir)) / "xla"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    run_demo(_CONFIG.value)


if __name__ == "__main__":
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    entry.run(main)
