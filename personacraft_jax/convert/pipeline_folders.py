"""Whole diffusers pipeline folders (e.g. SDXL base): a base folder with some components replaced.

A pipeline folder has `model_index.json` and one sub-folder per component (`unet/`, `vae/`, `text_encoder/`,
`text_encoder_2/`, `tokenizer/`, `tokenizer_2/`, `scheduler/`). `write_pipeline_folder` copies a base folder
and writes the given trained components in place of the base's, so the result loads exactly like the base
(`diffusers.StableDiffusionXLPipeline.from_pretrained`, or this project's `model.sdxl_folder`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping

from personacraft_jax.convert.pretrained import PretrainedModel, save_pretrained


def pipeline_components(folder: str | os.PathLike) -> list[str]:
    """The component names `model_index.json` lists: keys whose value is a [library, class name] pair (other
    keys are pipeline options, e.g. SDXL's `force_zeros_for_empty_prompt`)."""
    index = pathlib.Path(folder) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{folder}: no model_index.json (expected a diffusers pipeline folder)")
    entries = json.loads(index.read_text())
    return sorted(k for k, v in entries.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2)


def write_pipeline_folder(
    base: str | os.PathLike,
    out: str | os.PathLike,
    components: Mapping[str, PretrainedModel],
    *,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes `out`: `base` with each `components[name]` saved (fp32 safetensors) as `out/name/`.

    Atomic: assembled in a temporary sibling folder and renamed into place. Raises FileExistsError if `out`
    exists and not `overwrite`, ValueError if a component is not one of the base's.
    """
    base, out = pathlib.Path(base), pathlib.Path(out)
    known = pipeline_components(base)
    unknown = sorted(set(components) - set(known))
    if unknown:
        raise ValueError(f"{base}: components {unknown} are not in its model_index.json (it has {known})")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for entry in base.iterdir():
            if entry.name in components or entry.name.startswith("."):
                continue
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, tmp / entry.name)
        for name, model in components.items():
            save_pretrained(model, tmp / name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
