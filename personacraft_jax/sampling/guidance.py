"""Classifier-free guidance (CFG) and occlusion-aware CFG (OA-CFG, DESIGN section 7; *our design*).

Standard CFG:      eps = eps_u + w * (eps_c - eps_u)
OA-CFG "control":  eps = eps_u + w * (eps_c - eps_u) + w_occ * M * (eps_c - eps_c_noctrl)
OA-CFG "scale":    eps = eps_u + (w + dw * M) * (eps_c - eps_u)          (no extra branch)

eps_u = eps(uncond text, ctrl), eps_c = eps(cond text, ctrl), eps_c_noctrl = eps(cond text, no 3D control);
M (B, h, w, 1) in [0, 1] is the latent-resolution occlusion mask (NHWC, broadcast over channels).
`occlusion_scale` is w_occ in mode "control" and dw in mode "scale". Wherever M * active == 0 the result is
standard CFG bit for bit (selected with `jnp.where`, so it holds whatever XLA fuses).

Branch layout (one model call per step): the branches are concatenated along the batch axis in the order
  [uncond (B), cond (B)]                   modes "none" / "scale"
  [uncond (B), cond (B), cond_noctrl (B)]  mode "control"
`batch_branches` builds the text-side inputs, `repeat_for_branches` the per-image ones (latents, control images,
masks), `control_branch_scale` the per-sample multiplier of the 3D-conditioning ControlNets' (SCNet, OBEN)
residuals (1, 1, 0 per branch; IdentityNet is not switched off), and `split_branches` undoes the layout.

Steps where OA-CFG acts: the FIRST `num_active_steps(num_steps, fraction) = ceil(fraction * num_steps)` steps
(the high-noise steps, where layout and occlusion order are decided). With fraction < 1 in mode "control" a
sampler may run two loops (3 branches, then 2) to skip the unused branch; `oa_cfg_active` gives the traced flag
for a single loop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
MODES = ("none", "control", "scale")


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """guidance_scale: w; oa_mode: "none" | "control" | "scale"; occlusion_scale: w_occ or dw;
    oa_fraction: fraction of the steps (the first ones) where OA-CFG acts."""

    guidance_scale: float = 5.0
    oa_mode: str = "control"
    occlusion_scale: float = 1.0
    oa_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.oa_mode not in MODES:
            raise ValueError(f"GuidanceConfig.oa_mode={self.oa_mode!r} is not one of {MODES}")
        if not 0.0 <= self.oa_fraction <= 1.0:
            raise ValueError(f"GuidanceConfig.oa_fraction={self.oa_fraction} must be in [0, 1]")


def num_branches(mode: str) -> int:
    """Model-batch multiplier: 3 for mode "control", else 2."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    return 3 if mode == "control" else 2


def batch_branches(uncond: Any, cond: Any, mode: str) -> Any:
    """Text-side inputs (pytrees of (B, ...) arrays) -> (n*B, ...): [uncond, cond] (+ [cond] for "control")."""
    parts = (uncond, cond, cond)[: num_branches(mode)]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *parts)


def repeat_for_branches(x: Any, mode: str) -> Any:
    """Per-image inputs (pytrees of (B, ...) arrays, e.g. latents, control images) -> (n*B, ...)."""
    n = num_branches(mode)
    return jax.tree.map(lambda a: jnp.concatenate([a] * n, axis=0), x)


def control_branch_scale(mode: str, batch: int, dtype: Any = jnp.float32) -> Array:
    """(n*B,) multiplier for the SCNet / OBEN residuals per model-batch sample: 1, 1 (, 0 for cond_noctrl)."""
    flags = (1.0, 1.0, 0.0)[: num_branches(mode)]
    return jnp.repeat(jnp.asarray(flags, dtype), batch)


def split_branches(model_output: Array, mode: str) -> tuple[Array, ...]:
    """(n*B, ...) -> (eps_u, eps_c) or (eps_u, eps_c, eps_c_noctrl), each (B, ...)."""
    n = num_branches(mode)
    if model_output.shape[0] % n:
        raise ValueError(f"batch {model_output.shape[0]} is not a multiple of {n} branches (mode {mode!r})")
    return tuple(jnp.split(model_output, n, axis=0))


def cfg(eps_u: Array, eps_c: Array, guidance_scale: float | Array) -> Array:
    """Standard classifier-free guidance eps_u + w * (eps_c - eps_u)."""
    return eps_u + guidance_scale * (eps_c - eps_u)


def num_active_steps(num_steps: int, fraction: float) -> int:
    """ceil(fraction * num_steps): how many of the first steps OA-CFG acts on (tolerant to float fuzz)."""
    return min(num_steps, max(0, math.ceil(fraction * num_steps - 1e-9)))


def oa_cfg_active(i: Array | int, num_steps: int, fraction: float) -> Array:
    """Bool (): whether OA-CFG acts at step i (possibly traced), i.e. i < ceil(fraction * num_steps)."""
    return jnp.asarray(i) < num_active_steps(num_steps, fraction)


def oa_cfg(
    eps_u: Array,
    eps_c: Array,
    eps_c_noctrl: Array | None,
    mask: Array,
    *,
    mode: str,
    guidance_scale: float | Array,
    occlusion_scale: float | Array,
    active: bool | Array = True,
) -> Array:
    """Occlusion-aware CFG (see the module docstring). eps_*: (B, h, w, C); mask: (B, h, w, 1) in [0, 1].

    `active` (bool or 0/1, may be traced) switches OA-CFG off (standard CFG). Computes in eps_u's dtype.
    """
    std = cfg(eps_u, eps_c, guidance_scale)
    if mode == "none":
        return std
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    if mask.ndim != eps_u.ndim or mask.shape[-1] != 1:
        raise ValueError(f"mask shape {mask.shape} must be (B, h, w, 1) for eps of shape {eps_u.shape}")
    coef = (occlusion_scale * jnp.asarray(active, eps_u.dtype) * mask).astype(eps_u.dtype)
    if mode == "control":
        if eps_c_noctrl is None:
            raise ValueError('mode "control" needs eps_c_noctrl')
        guided = std + coef * (eps_c - eps_c_noctrl)
    else:  # scale
        guided = eps_u + (guidance_scale + coef) * (eps_c - eps_u)
    return jnp.where(coef != 0, guided, std)


def guide(config: GuidanceConfig, model_output: Array, mask: Array | None, i: Array | int, num_steps: int) -> Array:
    """Splits the (n*B, h, w, C) model output laid out by `batch_branches` and applies (OA-)CFG at step i."""
    branches = split_branches(model_output, config.oa_mode)
    if config.oa_mode == "none":
        return cfg(branches[0], branches[1], config.guidance_scale)
    if mask is None:
        raise ValueError(f"oa_mode={config.oa_mode!r} needs the occlusion mask")
    return oa_cfg(
        branches[0],
        branches[1],
        branches[2] if config.oa_mode == "control" else None,
        mask,
        mode=config.oa_mode,
        guidance_scale=config.guidance_scale,
        occlusion_scale=config.occlusion_scale,
        active=oa_cfg_active(i, num_steps, config.oa_fraction),
    )
