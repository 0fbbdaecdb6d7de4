"""diffusers / transformers model folders: `config.json` + safetensors weights (single file or sharded), also
diffusers' variant files (`diffusion_pytorch_model.fp16.safetensors`, what `variant="fp16"` downloads give).

Pickle-based weights (`.bin`, `.pt`, `.pth`) are refused unless the caller opts into
`torch.load(weights_only=True)`, which only rebuilds tensors and never runs pickled code.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
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


def variant_name(name: str, variant: str | None) -> str:
    """diffusers' `_add_variant`: the variant goes before the last suffix ('x.safetensors' -> 'x.fp16.safetensors',
    'x.safetensors.index.json' -> 'x.safetensors.index.fp16.json')."""
    if variant is None:
        return name
    stem, _, suffix = name.rpartition(".")
    return f"{stem}.{variant}.{suffix}"


def weight_file_names(variant: str | None = None) -> list[str]:
    """The file names `read_weights` looks for, in the order it (as diffusers) tries them, per weights name:
    the shard index (and, with a variant, diffusers' legacy `name.<variant>.safetensors.index.json`), then the
    single file. Sharded variant files are named by the index (diffusers: `name.<variant>-00001-of-0000N.safetensors`)."""
    names = []
    for name in WEIGHT_NAMES:
        names.append(variant_name(f"{name}.safetensors.index.json", variant))
        if variant is not None:
            names.append(f"{name}.{variant}.safetensors.index.json")
        names.append(variant_name(f"{name}.safetensors", variant))
    return names


def _variants_present(files: list[str]) -> list[str | None]:
    """The variants (None = plain) of the weight files among `files`, e.g. [None, 'fp16']."""
    names = "|".join(WEIGHT_NAMES)
    patterns = (
        re.compile(rf"^(?:{names})(?:\.([^.-]+))?(?:-\d+-of-\d+)?\.safetensors$"),  # single file or shard
        re.compile(rf"^(?:{names})\.safetensors\.index(?:\.([^.]+))?\.json$"),
    )
    found = {m.group(1) for f in files for pattern in patterns if (m := pattern.match(f))}
    return sorted(found, key=lambda v: (v is not None, v or ""))


def _read_index(folder: pathlib.Path, index: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
        raise WeightFileError(f"{index}: not a shard index (expected JSON with a 'weight_map'; {e!r})") from None
    missing = [shard for shard in shards if not (folder / shard).is_file()]
    if missing:
        raise FileNotFoundError(f"{index}: lists shard file(s) that do not exist in {folder}: {missing}")
    tensors: dict[str, np.ndarray] = {}
    for shard in shards:
        tensors.update(read_safetensors(folder / shard))
    return tensors


def read_weights(
    folder: str | os.PathLike, *, allow_torch_load: bool = False, variant: str | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """All tensors of the folder's weights and the file name(s) they came from.

    Looks for the files of `weight_file_names(variant)`: `{diffusion_pytorch_model,model}[.<variant>].safetensors`
    or a sharded index (`*.safetensors.index[.<variant>].json`), as diffusers / transformers name them for
    `from_pretrained(..., variant=...)`. A variant folder (e.g. only `*.fp16.safetensors`) needs `variant`.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory (expected a diffusers / transformers model folder)")
    for file in weight_file_names(variant):
        path = folder / file
        if path.is_file():
            if file.endswith(".json"):
                return _read_index(folder, path), str(path)
            return read_safetensors(path), str(path)
    pickled = sorted(p for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if variant is not None:
        pickled = [p for p in pickled if p.stem.endswith(f".{variant}")]
    if pickled and allow_torch_load:
        return _torch_load_safely(pickled[0]), str(pickled[0])
    if pickled:
        raise WeightFileError(
            f"{folder}: only pickle-based weights found ({pickled[0].name}); refusing to unpickle. Convert them to "
            "safetensors, or pass allow_torch_load=True to read them with torch.load(weights_only=True)."
        )
    files = sorted(p.name for p in folder.iterdir())
    others = [v for v in _variants_present(files) if v != variant]
    hint = f"; it has weights for variant={' or '.join(map(repr, others))} (pass that variant)" if others else ""
    raise FileNotFoundError(
        f"{folder}: no weights found for variant={variant!r} (expected one of {', '.join(weight_file_names(variant))})"
        f"{hint}; files found: {files}"
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
