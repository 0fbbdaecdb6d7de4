"""Exporting trained nets from a run's orbax checkpoint.

- diffusers: each trainable net as a model folder (config.json + safetensors): SCNet / OBEN as
  `ControlNetModel` folders that `diffusers.ControlNetModel.from_pretrained` loads, a trained UNet as a
  `UNet2DConditionModel` folder; with a trained UNet also a whole SDXL pipeline folder (`export_sdxl`: a base
  folder's text encoders, tokenizers, scheduler and VAE with the trained UNet);
- JAX: one `<name>.flax.safetensors` per net with the NNX parameter paths as keys ('a.0.b.kernel', Flax
  layouts) plus `<name>.config.json`, for loading without orbax (`load_flax_params`).

The checkpoint is verified against its checksum manifest before it is read; weights with a NaN or an inf
are refused (ValueError naming the parameter), and existing outputs are replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from personacraft_jax import atomic_write
from personacraft_jax.convert.pipeline_folders import write_pipeline_folder
from personacraft_jax.convert.pretrained import save_pretrained
from personacraft_jax.convert.safetensors_io import read_safetensors, write_safetensors
from personacraft_jax.parallel import sharding as sharding_lib
from personacraft_jax.train import checkpoint as checkpoint_lib
from personacraft_jax.train import networks as networks_lib
from personacraft_jax.train import state as state_lib
from personacraft_jax.train import step as step_lib
from personacraft_jax.train import trainer as trainer_lib


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The resolved config a run wrote to `workdir/config.json`."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; export needs the run's config (written by launch.train)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_trained_nets(config: Any, workdir: str | os.PathLike, step: int | None = None) -> dict[str, nnx.Module]:
    """The trainable nets of the run's checkpoint `step` (None = latest), on the local CPU/accelerator."""
    used = trainer_lib.control_nets(config)
    step_cfg = trainer_lib.step_config(config.train, used)
    modules = nnx.eval_shape(
        lambda: networks_lib.build_networks(config.model, step_cfg.trainable, used, int(config.seed), abstract=True)
    )
    nets, params = step_lib.split_networks(modules)
    trainable = {name: params[name] for name in step_cfg.trainable}  # what TrainState.params holds
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    shardings = state_lib.params_shardings(trainable, mesh, sharding_lib.DEFAULT_RULES)
    target = checkpoint_lib.abstract_with_shardings(trainable, shardings)
    checkpointer = checkpoint_lib.Checkpointer(pathlib.Path(workdir) / "checkpoints", async_save=False)
    try:
        restored = checkpointer.restore_params(step, target)
    finally:
        checkpointer.close()
    return {name: nets.module(name, restored[name]) for name in step_cfg.trainable}


def check_finite(nets: dict[str, nnx.Module]) -> None:
    """Raises ValueError naming every parameter ('<net>.<NNX path>') that holds a NaN or an infinity."""
    bad = []
    for name, net in nets.items():
        for key, value in _flat(net).items():
            count = int(np.count_nonzero(~np.isfinite(value))) if np.issubdtype(value.dtype, np.inexact) else 0
            if count:
                bad.append(f"{name}.{key}: {count} of {value.size} values are not finite")
    if bad:
        raise ValueError(f"refusing to export non-finite weights: {'; '.join(bad[:10])}")


def export_diffusers(
    nets: dict[str, nnx.Module], out: str | os.PathLike, overwrite: bool = False
) -> list[pathlib.Path]:
    """Writes each net as `out/<name>/` (a diffusers ControlNetModel or UNet2DConditionModel folder, fp32);
    ValueError for non-finite weights (`check_finite`)."""
    check_finite(nets)
    return [save_pretrained(net, pathlib.Path(out) / name, overwrite=overwrite) for name, net in nets.items()]


def export_sdxl(
    nets: dict[str, nnx.Module], base: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
) -> pathlib.Path:
    """Writes `out`: the diffusers SDXL folder `base` with its `unet/` replaced by the run's trained UNet
    (ValueError for non-finite weights)."""
    if "unet" not in nets:
        raise ValueError(f"export_sdxl: the run did not train the UNet (trained nets: {sorted(nets)})")
    check_finite({"unet": nets["unet"]})
    return write_pipeline_folder(base, out, {"unet": nets["unet"]}, overwrite=overwrite)


def _flat(module: nnx.Module) -> dict[str, np.ndarray]:
    return {
        ".".join(map(str, path)): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param))
    }


def export_flax(nets: dict[str, nnx.Module], out: str | os.PathLike, overwrite: bool = False) -> list[pathlib.Path]:
    """Writes `out/<name>.flax.safetensors` (NNX paths, Flax layouts) and `out/<name>.config.json`.
    FileExistsError when one of those files exists and not `overwrite` (checked before anything is written);
    ValueError for non-finite weights (`check_finite`)."""
    check_finite(nets)
    out = pathlib.Path(out)
    existing = [str(out / f"{name}{suffix}") for name in nets for suffix in (".flax.safetensors", ".config.json")]
    existing = [path for path in existing if os.path.lexists(path)]
    if existing and not overwrite:
        raise FileExistsError(
            f"export_flax: {', '.join(existing)} already there; pass overwrite=True (launch.export --overwrite) "
            "to replace them"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, net in nets.items():
        atomic_write.write_json(out / f"{name}.config.json", net.pretrained_config())
        write_safetensors(out / f"{name}.flax.safetensors", _flat(net))
        written.append(out / f"{name}.flax.safetensors")
    return written


def load_flax_params(module: nnx.Module, path: str | os.PathLike) -> nnx.Module:
    """Fills `module` (concrete or abstract, same architecture) from an `export_flax` file, strictly."""
    tensors = read_safetensors(path)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    flat = list(nnx.to_flat_state(params))
    expected = {".".join(map(str, p)) for p, _ in flat}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing[:10]}, unexpected {unexpected[:10]}")
    new = []
    for p, var in flat:
        value, target = tensors[".".join(map(str, p))], var.get_value()
        if value.shape != target.shape:
            raise ValueError(f"{path}: {'.'.join(map(str, p))} has shape {value.shape}, expected {target.shape}")
        new.append((p, var.replace(jax.numpy.asarray(value, target.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(new), rest)
