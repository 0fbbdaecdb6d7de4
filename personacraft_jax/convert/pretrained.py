"""Loading and saving whole models from / to diffusers and transformers folders.

A model class takes part by implementing the `PretrainedModel` protocol: it parses (and validates)
the folder's config.json into its own config, builds itself from that config, and writes its config
back in the PyTorch library's format. Everything else (strict key matching, layouts, atomic writes)
is shared here.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
from flax import nnx

from personacraft_jax.convert import folders
from personacraft_jax.convert import state_dict as sd
from personacraft_jax.models.layers import Precision


class PretrainedModel(Protocol):
    """What a model class provides to be loaded from / saved to a PyTorch-library folder."""

    weights_name: ClassVar[str]  # "diffusion_pytorch_model" (diffusers) or "model" (transformers)

    @classmethod
    def config_from_pretrained(cls, config: Mapping[str, Any]) -> Any:
        """Validates a config.json dict and returns the model's own config (errors name the key)."""

    def __init__(self, config: Any, precision: Precision, *, rngs: nnx.Rngs): ...

    def pretrained_config(self) -> dict[str, Any]:
        """The config.json dict the PyTorch class reads (with `_class_name` for diffusers)."""

    @classmethod
    def rename_source_key(cls, key: str) -> str:
        """Maps a legacy source key to the current name (identity for most models)."""

    @classmethod
    def ignore_source_key(cls, key: str, value: np.ndarray) -> bool:
        """True for a source key that holds no parameter (e.g. a verified buffer)."""


M = TypeVar("M", bound=nnx.Module)


def load_pretrained(
    cls: type[M],
    folder: str | os.PathLike,
    precision: Precision | None = None,
    *,
    allow_torch_load: bool = False,
    variant: str | None = None,
) -> M:
    """Builds `cls` from `folder`'s config.json and fills it strictly from its weights (`variant`: diffusers'
    variant files, e.g. "fp16" for `diffusion_pytorch_model.fp16.safetensors`; see `folders.read_weights`).

    The model is first built abstractly (`nnx.eval_shape`), so no random initialisation is spent.
    """
    precision = precision or Precision()
    config = cls.config_from_pretrained(folders.read_config(folder))
    tensors, source = folders.read_weights(folder, allow_torch_load=allow_torch_load, variant=variant)
    tensors = {cls.rename_source_key(k): v for k, v in tensors.items()}
    abstract = nnx.eval_shape(lambda: cls(config, precision, rngs=abstract_rngs()))
    return sd.load_state_dict(abstract, tensors, source=source, ignore=cls.ignore_source_key)


def abstract_rngs(seed: int = 0) -> nnx.Rngs:
    """`nnx.Rngs(seed)` for building models under `nnx.eval_shape` in linear time.

    With a jax-array counter, every draw inside the trace makes flax query the traced counter's
    `.sharding`, and jax builds that error message by walking the whole trace so far: quadratic in the
    number of parameters (minutes for the SDXL UNet). A numpy counter stays concrete; the keys are the same.
    Only for abstract builds: the counter is incremented in place, which would race with asynchronous
    device computations reading it in a concrete build.
    """
    rngs = nnx.Rngs(seed)
    rngs.default.count.set_value(np.zeros((), np.uint32))
    return rngs


def save_pretrained(
    model: PretrainedModel,
    folder: str | os.PathLike,
    *,
    dtype: np.dtype = np.float32,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes `model` as a folder the PyTorch class's `from_pretrained` loads (config.json + safetensors)."""
    return folders.write_folder(
        folder,
        model.pretrained_config(),
        sd.state_dict(model, dtype=dtype),
        weights_name=type(model).weights_name,
        overwrite=overwrite,
    )


class SourceKeyDefaults:
    """Mixin with the protocol's defaults: source keys are used as they are, none is ignored."""

    @classmethod
    def rename_source_key(cls, key: str) -> str:
        return key

    @classmethod
    def ignore_source_key(cls, key: str, value: np.ndarray) -> bool:
        return False
