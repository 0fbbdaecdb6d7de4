"""InstantID / IP-Adapter weights (`ip-adapter.bin`-style): the Resampler and the UNet's to_k_ip / to_v_ip.

File formats (read safely, never plain pickle):
- `.safetensors`: flat keys `image_proj.<key>` and `ip_adapter.<key>` (nothing else);
- `.bin` / `.pt` / `.pth`: `{'image_proj': {...}, 'ip_adapter': {...}}` through `torch.load(weights_only=True)`.

`ip_adapter` keys are `<n>.to_k_ip.weight` / `<n>.to_v_ip.weight` (PyTorch (out, in) layout). The numbering is
diffusers' (`UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers`): it walks
`unet.attn_processors` (module registration order: down_blocks, then up_blocks, then mid_block; in each
transformer block attn1 then attn2) and gives the k-th cross-attention (attn2) the number 1 + 2k, i.e. its
0-based position among all attention processors when self- and cross-attention alternate.
Mapping is strict: missing, unexpected and mis-shaped keys raise `StateDictMismatchError`.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from personacraft_jax.convert import folders
from personacraft_jax.convert import state_dict as sd
from personacraft_jax.convert.pretrained import abstract_rngs
from personacraft_jax.convert.safetensors_io import WeightFileError, read_safetensors
from personacraft_jax.models.layers import Precision
from personacraft_jax.models.resampler import Resampler, load_resampler
from personacraft_jax.models.unet import UNet2DConditionModel

PARTS = ("image_proj", "ip_adapter")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")

IPAdapterWeights = dict[str, dict[str, np.ndarray]]


def _to_numpy(value: Any) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor):
        raise WeightFileError(f"expected a tensor, got {type(value).__name__}")
    return value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()


def read_ip_adapter_file(path: str | os.PathLike) -> IPAdapterWeights:
    """{'image_proj': {key: array}, 'ip_adapter': {key: array}} from a .safetensors or (weights-only) .bin file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ip-adapter file")
    if path.suffix == ".safetensors":
        out: IPAdapterWeights = {part: {} for part in PARTS}
        for key, value in read_safetensors(path).items():
            part, _, rest = key.partition(".")
            if part not in out or not rest:
                raise WeightFileError(f"{path}: key {key!r} has neither prefix 'image_proj.' nor 'ip_adapter.'")
            out[part][rest] = value
    elif path.suffix in _PICKLE_SUFFIXES:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping) or set(state) != set(PARTS):
            found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise WeightFileError(f"{path}: expected a dict with keys {list(PARTS)}, got {found}")
        out = {part: {k: _to_numpy(v) for k, v in state[part].items()} for part in PARTS}
    else:
        raise WeightFileError(f"{path}: unknown ip-adapter file type {path.suffix!r} (.safetensors or .bin)")
    for part in PARTS:
        if not out[part]:
            raise WeightFileError(f"{path}: no '{part}' tensors")
    return out


def cross_attention_paths(unet: UNet2DConditionModel) -> list[str]:
    """Module paths of the UNet's cross-attentions (attn2) in diffusers' `attn_processors` order."""
    paths = []
    for prefix in ("down_blocks", "up_blocks"):
        for i, block in enumerate(getattr(unet, prefix)):
            paths += _block_paths(f"{prefix}.{i}", block)
    return paths + _block_paths("mid_block", unet.mid_block)


def _block_paths(prefix: str, block: Any) -> list[str]:
    if not getattr(block, "has_cross_attention", False):
        return []
    return [
        f"{prefix}.attentions.{a}.transformer_blocks.{t}.attn2"
        for a, attn in enumerate(block.attentions)
        for t in range(len(attn.transformer_blocks))
    ]


def ip_adapter_unet_keys(unet: UNet2DConditionModel, ip_adapter: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps the file's numbered `ip_adapter` keys to UNet state-dict keys, strictly (see the module docstring)."""
    mapped, expected = {}, set()
    for k, path in enumerate(cross_attention_paths(unet)):
        for name in ("to_k_ip", "to_v_ip"):
            key = f"{1 + 2 * k}.{name}.weight"
            expected.add(key)
            if key in ip_adapter:
                mapped[f"{path}.{name}.weight"] = ip_adapter[key]
    missing = sorted(expected - set(ip_adapter))
    unexpected = sorted(set(ip_adapter) - expected)
    if missing or unexpected:
        raise sd.StateDictMismatchError("ip_adapter", missing, unexpected, [])
    return mapped


def load_unet_with_ip_adapter(
    unet_folder: str | os.PathLike,
    weights: IPAdapterWeights,
    precision: Precision | None = None,
    *,
    variant: str | None = None,
) -> UNet2DConditionModel:
    """A diffusers UNet folder (its `variant` weight files) + the `ip_adapter` weights -> a UNet with the IP branch
    (Resampler query count)."""
    precision = precision or Precision()
    config = UNet2DConditionModel.config_from_pretrained(folders.read_config(unet_folder))
    tensors, source = folders.read_weights(unet_folder, variant=variant)
    num_tokens = int(weights["image_proj"]["latents"].shape[1])
    abstract = nnx.eval_shape(
        lambda: UNet2DConditionModel(config, precision, rngs=abstract_rngs(0), ip_adapter_tokens=num_tokens)
    )
    tensors = {**tensors, **ip_adapter_unet_keys(abstract, weights["ip_adapter"])}
    return sd.load_state_dict(abstract, tensors, source=f"{source} + ip_adapter")


def load_instantid(
    ip_adapter_file: str | os.PathLike,
    unet_folder: str | os.PathLike,
    precision: Precision | None = None,
    *,
    dim_head: int = 64,
    variant: str | None = None,
) -> tuple[UNet2DConditionModel, Resampler]:
    """(UNet with the IP branch, Resampler) from an InstantID ip-adapter file and the SDXL UNet folder (`variant`:
    its weight files' variant, see `folders.read_weights`)."""
    weights = read_ip_adapter_file(ip_adapter_file)
    resampler = load_resampler(weights["image_proj"], precision, dim_head=dim_head)
    return load_unet_with_ip_adapter(unet_folder, weights, precision, variant=variant), resampler


def ip_adapter_state_dict(unet: UNet2DConditionModel, resampler: Resampler) -> IPAdapterWeights:
    """The inverse mapping: a model pair -> {'image_proj', 'ip_adapter'} (for writing files and tests)."""
    unet_sd = sd.state_dict(unet)
    ip = {}
    for k, path in enumerate(cross_attention_paths(unet)):
        for name in ("to_k_ip", "to_v_ip"):
            ip[f"{1 + 2 * k}.{name}.weight"] = unet_sd[f"{path}.{name}.weight"]
    return {"image_proj": sd.state_dict(resampler), "ip_adapter": ip}
