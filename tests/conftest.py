"""Test-session set-up: 8 fake CPU devices and JAX's persistent compilation cache.

XLA_FLAGS must be set before jax is imported anywhere, so this runs at conftest import time.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax

_CACHE_DIR = pathlib.Path(
    os.environ.get("PERSONACRAFT_JAX_CACHE", pathlib.Path.home() / ".cache" / "personacraft_jax" / "xla")
)
_CACHE_DIR.mkdir(parents=True, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", str(_CACHE_DIR))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
