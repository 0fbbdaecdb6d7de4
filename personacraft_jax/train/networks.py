"""Building the UNet, SCNet and OBEN for training from the `model` config section.

- UNet: from `model.sdxl_folder`/unet (a diffusers SDXL folder; `model.variant`, e.g. "fp16", reads its
  `diffusion_pytorch_model.fp16.safetensors`-style variant files) or, without a folder, a randomly
  initialised `model.unet_preset` (the tiny demo / tests); frozen, or trained when `train.trainable` has
  'unet' (base training or fine-tuning).
- SCNet / OBEN: from an exported diffusers ControlNet folder (`model.scnet_folder` / `model.oben_folder`)
  or `ControlNetModel.from_unet` with `scnet_conditioning_channels` (default 4 = depth + normal) /
  `oben_conditioning_channels` (default 2 = depth edges + occlusion). *(our design)* OBEN has SCNet's
  architecture; it is "lighter" only in its input (2 channels of boundary maps) and its training signal.

`abstract=True` (for callers inside `nnx.eval_shape`: launch.aot_compile, launch.export) uses
`abstract_rngs`, which keeps abstract SDXL-size builds linear in the parameter count; concrete builds use
`nnx.Rngs` (abstract_rngs' host-side counter is mutated in place, which races with asynchronous device
computations that read it).

Frozen networks store parameters in `model.frozen_param_dtype` (bf16 on accelerators); trainable ones in
fp32 (master weights); all compute in `model.dtype`.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
from flax import nnx

from personacraft_jax.convert.pretrained import abstract_rngs, load_pretrained
from personacraft_jax.models import unet as unet_lib
from personacraft_jax.models.controlnet import ControlNetModel
from personacraft_jax.models.layers import Precision
from personacraft_jax.models.unet import UNet2DConditionModel, UNetConfig
from personacraft_jax.train.step import CONTROL_NETS


def _precision(model_cfg: Any, trainable: bool) -> Precision:
    return Precision(
        dtype=jnp.dtype(model_cfg.dtype),
        param_dtype=jnp.float32 if trainable else jnp.dtype(model_cfg.frozen_param_dtype),
        attention=model_cfg.attention,
        remat=model_cfg.remat,
    )


def _require_dir(path: str, field: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"config {field}={path!r}: no such directory")
    return path


def _rngs(seed: int, abstract: bool) -> nnx.Rngs:
    return abstract_rngs(seed) if abstract else nnx.Rngs(seed)


def build_unet(model_cfg: Any, seed: int, abstract: bool = False, trainable: bool = False) -> UNet2DConditionModel:
    precision = _precision(model_cfg, trainable)
    if model_cfg.sdxl_folder:
        folder = _require_dir(os.path.join(model_cfg.sdxl_folder, "unet"), "model.sdxl_folder (its unet/)")
        return load_pretrained(UNet2DConditionModel, folder, precision, variant=model_cfg.get("variant"))
    config = UNetConfig.from_diffusers(unet_lib.preset(model_cfg.unet_preset))
    return UNet2DConditionModel(config, precision, rngs=_rngs(seed, abstract))


def build_controlnet(
    model_cfg: Any, name: str, unet: UNet2DConditionModel, trainable: bool, seed: int, abstract: bool = False
) -> ControlNetModel:
    precision = _precision(model_cfg, trainable)
    folder = model_cfg.get(f"{name}_folder")
    if folder:
        return load_pretrained(ControlNetModel, _require_dir(folder, f"model.{name}_folder"), precision)
    if not trainable:  # a frozen from_unet ControlNet would add exactly zero residuals
        raise ValueError(
            f"config model.{name}_folder is required: {name} is frozen (not in train.trainable)"
            + ("; or set model.use_scnet=False to train without SCNet" if name == "scnet" else "")
        )
    return ControlNetModel.from_unet(
        unet,
        conditioning_channels=model_cfg[f"{name}_conditioning_channels"],
        conditioning_embedding_out_channels=tuple(model_cfg.conditioning_embedding_out_channels),
        precision=precision,
        rngs=_rngs(seed, abstract),
    )


def build_networks(
    model_cfg: Any, trainable: tuple[str, ...], control_nets: tuple[str, ...], seed: int, abstract: bool = False
) -> dict[str, nnx.Module]:
    """{'unet', *control_nets} ready for `train.step.split_networks` (`abstract`: see the module doc)."""
    unet = build_unet(model_cfg, seed, abstract, trainable="unet" in trainable)
    nets: dict[str, nnx.Module] = {"unet": unet}
    for name in control_nets:
        seed_offset = 1 + CONTROL_NETS.index(name)
        nets[name] = build_controlnet(model_cfg, name, unet, name in trainable, seed + seed_offset, abstract)
    return nets
