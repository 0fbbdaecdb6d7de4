"""diffusers / transformers model folders: `config.json` + safetensors weights (single file or sharded).

Pickle-based weights (`.bin`, `.pt`, `.pth`) are refused unless the caller opts into
`torch.load(weights_only=True)`, which only rebuilds tensors and never runs pickled code.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from personacraft_jax.convert.safetensors_io import WeightFileError, read_safetensors, write_safetensors

WEIGHT_NAMES = ("diffusion_pytorch_model", "model")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's config.json as a dict."""
    path = pathlib.Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a diffusers / transformers model folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e})") from None


def _torch_load_safely(path: pathlib.Path) -> dict[str, np.ndarray]:
    import torch  # Optional dependency, only for this explicit opt-in path.

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise WeightFileError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}


def read_weights(folder: str | os.PathLike, *, allow_torch_load: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """All tensors of the folder's weights and the file name(s) they came from.

    Looks for `{diffusion_pytorch_model,model}.safetensors` or a sharded `*.safetensors.index.json`.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory (expected a diffusers / transformers model folder)")
    for name in WEIGHT_NAMES:
        single = folder / f"{name}.safetensors"
        if single.is_file():
            return read_safetensors(single), str(single)
        index = folder / f"{name}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            tensors: dict[str, np.ndarray] = {}
            for shard in shards:
                tensors.update(read_safetensors(folder / shard))
            return tensors, str(index)
    pickled = sorted(p for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickled and allow_torch_load:
        return _torch_load_safely(pickled[0]), str(pickled[0])
    if pickled:
        raise WeightFileError(
            f"{folder}: only pickle-based weights found ({pickled[0].name}); refusing to unpickle. Convert them to "
            "safetensors, or pass allow_torch_load=True to read them with torch.load(weights_only=True)."
        )
    raise FileNotFoundError(
        f"{folder}: no weights found (expected one of {', '.join(n + '.safetensors' for n in WEIGHT_NAMES)})"
    )


def write_folder(
    folder: str | os.PathLike,
    config: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    weights_name: str = "diffusion_pytorch_model",
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes config.json + `{weights_name}.safetensors` atomically: a temp folder renamed into place."""
    folder = pathlib.Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        (tmp / "config.json").write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
        write_safetensors(tmp / f"{weights_name}.safetensors", tensors)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
