"""Mechanical, strict mapping between NNX parameter paths and PyTorch state-dict keys.

A parameter at NNX path ('down_blocks', 0, 'resnets', 1, 'conv1', 'kernel') is the PyTorch tensor
'down_blocks.0.resnets.1.conv1.weight'. Leaf names map `kernel`/`scale`/`embedding` -> `weight`.
Layouts: conv kernels HWIO <-> OIHW, linear kernels (in, out) <-> (out, in), everything else as is.

Import is strict: every source key must be used exactly once and every shape must match; otherwise a
`StateDictMismatchError` lists the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


class StateDictMismatchError(ValueError):
    """Raised when a state dict does not fit a model exactly."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], misshaped: list[str]):
        self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped
        lines = [f"{source}: the weights do not match the model."]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)):
            if keys:
                shown = "\n    ".join(keys[:20])
                more = f"\n    ... and {len(keys) - 20} more" if len(keys) > 20 else ""
                lines.append(f"  {len(keys)} {title}:\n    {shown}{more}")
        super().__init__("\n".join(lines))


def torch_key(path: tuple) -> str:
    """The PyTorch state-dict key of an NNX parameter path."""
    *prefix, leaf = (str(p) for p in path)
    return ".".join([*prefix, _LEAF_TO_TORCH.get(leaf, leaf)])


def to_flax_layout(path: tuple, array: np.ndarray) -> np.ndarray:
    """PyTorch tensor layout -> NNX parameter layout."""
    if path[-1] == "kernel" and array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    if path[-1] == "kernel" and array.ndim == 2:
        return array.T
    return array


def to_torch_layout(path: tuple, array: np.ndarray) -> np.ndarray:
    """NNX parameter layout -> PyTorch tensor layout."""
    if path[-1] == "kernel" and array.ndim == 4:
        return np.transpose(array, (3, 2, 0, 1))
    if path[-1] == "kernel" and array.ndim == 2:
        return array.T
    return array


def _flat_params(model: nnx.Module) -> list[tuple[tuple, nnx.Variable]]:
    return list(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def expected_keys(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """PyTorch key -> PyTorch shape for every parameter of `model` (works on abstract models too)."""
    return {torch_key(path): _torch_shape(path, var.get_value().shape) for path, var in _flat_params(model)}


def _torch_shape(path: tuple, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(to_torch_layout(path, np.empty(flax_shape, np.bool_)).shape)


def load_state_dict(
    model: nnx.Module,
    state_dict: Mapping[str, np.ndarray],
    *,
    source: str,
    ignore: Callable[[str, np.ndarray], bool] | None = None,
) -> nnx.Module:
    """Fills `model` (concrete or from `nnx.eval_shape`) from a PyTorch-layout state dict, strictly.

    `ignore(key, value)` may accept source keys that carry no parameter (e.g. a `position_ids` buffer);
    it must verify the value itself. Returns the model with new parameter arrays in the parameter dtype.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    flat = list(nnx.to_flat_state(params))
    by_key = {torch_key(path): (path, var) for path, var in flat}
    used, missing, misshaped = set(), [], []
    new_flat = []
    for key, (path, var) in by_key.items():
        if key not in state_dict:
            missing.append(key)
            continue
        used.add(key)
        value = to_flax_layout(path, np.asarray(state_dict[key]))
        target = var.get_value()
        if tuple(value.shape) != tuple(target.shape):
            misshaped.append(
                f"{key}: file {tuple(np.shape(state_dict[key]))}, model {_torch_shape(path, target.shape)}"
            )
            continue
        new_flat.append((path, var.replace(jnp.asarray(value, dtype=target.dtype))))
    unexpected = [k for k in state_dict if k not in used and not (ignore and ignore(k, state_dict[k]))]
    if missing or unexpected or misshaped:
        raise StateDictMismatchError(source, sorted(missing), sorted(unexpected), sorted(misshaped))
    return nnx.merge(graphdef, nnx.from_flat_state(new_flat), rest)


def state_dict(model: nnx.Module, dtype: np.dtype | None = np.float32) -> dict[str, np.ndarray]:
    """The model's parameters as a PyTorch-layout state dict of numpy arrays (cast to `dtype` if given)."""
    out = {}
    for path, var in _flat_params(model):
        array = np.asarray(var.get_value())
        if dtype is not None:
            array = array.astype(dtype)
        out[torch_key(path)] = np.ascontiguousarray(to_torch_layout(path, array))
    return out
