"""Building the sampler's networks from a `model` config section: real folders or random tiny stand-ins.

Folders (all optional except for real runs; nothing is downloaded):
- `sdxl_folder`: diffusers SDXL base folder (`unet/`, `vae/`, `text_encoder/`, `text_encoder_2/`, `tokenizer*/`);
  `vae_folder` overrides its `vae/` (e.g. the fp16-fix VAE). `variant` (e.g. "fp16") reads `sdxl_folder`'s
  variant weight files (`unet/diffusion_pytorch_model.fp16.safetensors`, `text_encoder/model.fp16.safetensors`,
  ..., what a diffusers `variant="fp16"` download holds); the other folders are read without a variant.
- `scnet_folder`, `oben_folder`: exported diffusers ControlNet folders (None = not used).
- `identitynet_folder` (InstantID's ControlNetModel folder) and `ip_adapter_file` (`ip-adapter.bin` or
  `.safetensors`): the identity branch; both or neither.
Without `sdxl_folder` every network is randomly initialised at the tiny shapes below (the demo / tests), with
N(0, `random_std`) noise on every parameter so that the ControlNets' zero-initialised convs do not stay zero and
every conditioning path has an effect; the outputs are noise-like images, not pictures.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from personacraft_jax.convert.ip_adapter import load_instantid
from personacraft_jax.convert.pretrained import load_pretrained
from personacraft_jax.models import controlnet as controlnet_lib
from personacraft_jax.models import resampler as resampler_lib
from personacraft_jax.models import unet as unet_lib
from personacraft_jax.models.clip import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from personacraft_jax.models.controlnet import ControlNetConfig, ControlNetModel
from personacraft_jax.models.layers import Precision
from personacraft_jax.models.resampler import Resampler
from personacraft_jax.models.unet import UNet2DConditionModel, UNetConfig
from personacraft_jax.models.vae import AutoencoderKL, AutoencoderKLConfig
from personacraft_jax.sampling.sampler import SamplerModels
from personacraft_jax.sampling.tokenizers import tiny_vocab

# Tiny shapes that fit together: CLIP widths 8 + 16 = the UNet's cross-attention 24; bigG projection 16 = the
# UNet's text_embeds (16 + 6 x 8 = 64); VAE with 4 levels (factor 8); Resampler output 24.
TINY_CLIP_1: dict[str, Any] = dict(
    vocab_size=len(tiny_vocab()), hidden_size=8, intermediate_size=16, projection_dim=8, num_hidden_layers=2,
    num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1,
    pad_token_id=1,
)  # fmt: skip
TINY_CLIP_2: dict[str, Any] = {**TINY_CLIP_1, "hidden_size": 16, "intermediate_size": 32, "projection_dim": 16,
                               "hidden_act": "gelu"}  # fmt: skip
TINY_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 8, 8, 8], layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=64,
    scaling_factor=0.13025, act_fn="silu",
)  # fmt: skip


def _dir(path: str | os.PathLike, field: str) -> str:
    path = os.path.expanduser(str(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"config model.{field}={path!r}: no such directory")
    return path


def random_params(model: nnx.Module, seed: int, std: float) -> nnx.Module:
    """Fills every parameter of `model` (concrete or abstract) with host-side (numpy) random values, fast:
    kernels / embeddings N(0, 1 / fan_in), norm scales 1, biases 0, `latents` N(0, 1 / dim), then + N(0, std)
    everywhere (so zero-initialised ControlNet convs do not stay zero)."""
    rng = np.random.default_rng(seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    filled = []
    for path, var in nnx.to_flat_state(params):
        value = var.get_value()
        shape, leaf = tuple(value.shape), str(path[-1])
        if leaf == "scale":
            base = np.ones(shape)
        elif leaf == "bias":
            base = np.zeros(shape)
        else:
            fan_in = shape[-1] if leaf in ("embedding", "latents") else int(np.prod(shape[:-1])) or 1
            base = rng.standard_normal(shape) / np.sqrt(fan_in)
        array = (base + std * rng.standard_normal(shape)).astype(np.float32)
        filled.append((path, var.replace(jnp.asarray(array, dtype=value.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled), rest)


def _load_vae(cfg: Any, root: str, p: Precision) -> AutoencoderKL:
    """`vae_folder` (no variant) or `sdxl_folder`/vae (`variant`), in fp32 (as diffusers' `force_upcast`)."""
    fp32 = Precision(jnp.float32, jnp.float32, p.attention)
    if cfg.get("vae_folder"):
        return load_pretrained(AutoencoderKL, _dir(cfg.vae_folder, "vae_folder"), fp32)
    return load_pretrained(AutoencoderKL, os.path.join(root, "vae"), fp32, variant=cfg.get("variant"))


def _with_given_unet(cfg: Any, given: dict[str, nnx.Module]) -> SamplerModels:
    p = Precision.from_config(cfg)
    root, v = _dir(cfg.sdxl_folder, "sdxl_folder"), cfg.get("variant")
    cnet = lambda field: load_pretrained(ControlNetModel, _dir(cfg[field], field), p) if cfg.get(field) else None
    return SamplerModels(
        text_encoder=load_pretrained(CLIPTextModel, os.path.join(root, "text_encoder"), p, variant=v),
        text_encoder_2=load_pretrained(CLIPTextModelWithProjection, os.path.join(root, "text_encoder_2"), p, variant=v),
        unet=given["unet"],
        vae=_load_vae(cfg, root, p),
        scnet=given.get("scnet") or cnet("scnet_folder"),
        oben=given.get("oben") or cnet("oben_folder"),
    )


def tiny_models(
    seed: int = 0, *, scnet: bool = True, oben: bool = True, identity: bool = True, std: float = 0.05
) -> SamplerModels:
    """Randomly initialised tiny networks (see the module docstring). Built abstractly and filled on the host:
    JAX's own random initialisation of hundreds of small parameters is slow on CPU (eager or compiled)."""
    p = Precision()
    ucfg = UNetConfig.from_diffusers(unet_lib.preset("tiny"))
    rcfg = resampler_lib.preset("tiny")
    rnd = lambda build, k: random_params(nnx.eval_shape(lambda: build(nnx.Rngs(0))), seed + k, std)

    def cnet(channels: int, k: int) -> ControlNetModel:
        cfg = ControlNetConfig.from_diffusers(controlnet_lib.preset("tiny", conditioning_channels=channels))
        return rnd(lambda r: ControlNetModel(cfg, p, rngs=r), k)

    tokens = rcfg.num_queries if identity else 0
    return SamplerModels(
        text_encoder=rnd(lambda r: CLIPTextModel(CLIPTextConfig.from_dict(TINY_CLIP_1), p, rngs=r), 1),
        text_encoder_2=rnd(lambda r: CLIPTextModelWithProjection(CLIPTextConfig.from_dict(TINY_CLIP_2), p, rngs=r), 2),
        unet=rnd(lambda r: UNet2DConditionModel(ucfg, p, rngs=r, ip_adapter_tokens=tokens), 3),
        vae=rnd(lambda r: AutoencoderKL(AutoencoderKLConfig.from_dict(TINY_VAE), p, rngs=r), 4),
        scnet=cnet(4, 5) if scnet else None,
        oben=cnet(2, 6) if oben else None,
        identitynet=cnet(3, 7) if identity else None,
        resampler=rnd(lambda r: Resampler(rcfg, p, rngs=r), 8) if identity else None,
    )


def load_models(cfg: Any, **given: nnx.Module) -> SamplerModels:
    """Networks from the `model` config section (see the module docstring).

    `given` networks (e.g. a trainer's `unet=` and current `scnet=`) are used as they are instead of loading.
    """
    if given:
        if set(given) - {"unet", "scnet", "oben"}:
            raise ValueError(f"load_models: only unet, scnet and oben can be given, got {sorted(given)}")
        if cfg.get("identitynet_folder") or cfg.get("ip_adapter_file"):
            raise ValueError("load_models: a given UNet cannot take the identity branch's IP-Adapter weights")
        loaded = load_models(cfg) if "unet" not in given else None
        return dataclasses.replace(loaded, **given) if loaded else _with_given_unet(cfg, given)
    if not cfg.get("sdxl_folder"):
        return tiny_models(
            cfg.get("seed", 0),
            scnet=cfg.get("use_scnet", True),
            oben=cfg.get("use_oben", True),
            identity=cfg.get("use_identity", True),
            std=cfg.get("random_std", 0.05),
        )
    p = Precision.from_config(cfg)
    root, v = _dir(cfg.sdxl_folder, "sdxl_folder"), cfg.get("variant")
    identity = bool(cfg.get("identitynet_folder")) or bool(cfg.get("ip_adapter_file"))
    if identity and not (cfg.get("identitynet_folder") and cfg.get("ip_adapter_file")):
        raise ValueError("config model.identitynet_folder and model.ip_adapter_file go together (both or neither)")
    unet_folder = os.path.join(root, "unet")
    resampler = None
    if identity:
        unet, resampler = load_instantid(os.path.expanduser(cfg.ip_adapter_file), unet_folder, p, variant=v)
    else:
        unet = load_pretrained(UNet2DConditionModel, unet_folder, p, variant=v)
    cnet = lambda field: load_pretrained(ControlNetModel, _dir(cfg[field], field), p) if cfg.get(field) else None
    return SamplerModels(
        text_encoder=load_pretrained(CLIPTextModel, os.path.join(root, "text_encoder"), p, variant=v),
        text_encoder_2=load_pretrained(CLIPTextModelWithProjection, os.path.join(root, "text_encoder_2"), p, variant=v),
        unet=unet,
        vae=_load_vae(cfg, root, p),
        scnet=cnet("scnet_folder"),
        oben=cnet("oben_folder"),
        identitynet=cnet("identitynet_folder"),
        resampler=resampler,
    )
