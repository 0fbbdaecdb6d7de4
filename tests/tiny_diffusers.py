"""Shared helpers for the UNet / ControlNet parity tests: tiny diffusers configs, seeded randomisation, layouts."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from personacraft_jax.models import unet as unet_lib

# A second UNet shape next to preset('tiny'): 3 blocks, cross-attention first (SD 1.x order), 1x1-conv
# projections, per-block depth (2, 1, 1), head counts (1, 2, 4), no added embedding, flipped sin/cos off.
TINY3: dict[str, Any] = dict(
    sample_size=32,
    in_channels=4,
    out_channels=3,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    transformer_layers_per_block=(2, 1, 1),
    attention_head_dim=(1, 2, 4),
    cross_attention_dim=24,
    use_linear_projection=False,
    norm_num_groups=8,
    flip_sin_to_cos=False,
    freq_shift=1,
)

UNET_CONFIGS = {"tiny": dict(unet_lib.preset("tiny")), "tiny3": TINY3}


def rel_err(a: Any, b: Any) -> float:
    """max|a - b| / max|b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def randomize_torch(model: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Adds N(0, std) noise to every parameter (so zero-inits and unit norms cannot hide a bug)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def randomize_flax(model: nnx.Module, seed: int, std: float = 0.05) -> nnx.Module:
    """Adds N(0, std) noise to every nnx.Param of `model` in place."""
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + std * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def nchw(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1)))


def nhwc(x: torch.Tensor) -> np.ndarray:
    return np.moveaxis(x.detach().numpy(), 1, -1)


def skip_shapes(cfg: Any, batch: int, size: int) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """NHWC shapes of a UNet's down-path skips (= ControlNet down residuals) and of the mid residual."""
    ch = cfg.block_out_channels
    shapes, res = [(batch, size, size, ch[0])], size
    for i, n in enumerate(cfg.layers):
        shapes += [(batch, res, res, ch[i])] * n
        if i < len(ch) - 1:
            res //= 2
            shapes.append((batch, res, res, ch[i]))
    return shapes, (batch, res, res, ch[-1])


def inputs(cfg: Any, seed: int, batch: int = 2, size: int = 32, tokens: int = 7, text_dim: int = 16) -> dict:
    """Random NHWC model inputs (numpy, float32) for a UNet / ControlNet config."""
    rng = np.random.default_rng(seed)
    out = dict(
        sample=rng.standard_normal((batch, size, size, cfg.in_channels)).astype(np.float32),
        timesteps=np.array([17.0, 981.0][:batch], np.float32),
        encoder_hidden_states=rng.standard_normal((batch, tokens, cfg.cross_attention_dims[0])).astype(np.float32),
    )
    if cfg.addition_embed_type == "text_time":
        out["text_embeds"] = rng.standard_normal((batch, text_dim)).astype(np.float32)
        out["time_ids"] = np.tile(np.array([[64, 48, 3, 5, 32, 32]], np.float32), (batch, 1))
    return out


def torch_added(x: dict) -> dict | None:
    """diffusers' `added_cond_kwargs` from `inputs`."""
    if "text_embeds" not in x:
        return None
    return {"text_embeds": torch.from_numpy(x["text_embeds"]), "time_ids": torch.from_numpy(x["time_ids"])}


def jnp_tree(x: Any) -> Any:
    return jax.tree.map(jnp.asarray, x)
