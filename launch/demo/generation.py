"""Generating the demo's evaluation images: held-out scenes through the jitted sampler, in fixed-size batches.

One `Sampler` (compiled once) serves every variant the evaluation compares, because its scales are inputs:
- base alone: SCNet and OBEN scales 0 (their residuals are multiplied by 0: exactly the bare UNet);
- base + SCNet; base + SCNet + OBEN; and OA-CFG on (`occlusion` scale w_occ > 0) or off (0, which is exactly
  standard CFG).
The sampler runs OA-CFG's "control" mode (three CFG branches) with the config's fraction of steps.

Conditioning is derived from a stored example's maps with the library's own functions
(`personacraft_jax.data.conditioning`, DESIGN section 4), as the training loader derives it; the initial
noise of image j of seed s is N(0, 1) from `jax.random.key(s * 100_003 + j)`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from personacraft_jax.data import conditioning


@dataclasses.dataclass(frozen=True)
class Request:
    """One image to generate: the caption, the example whose maps condition it, the noise seed."""

    caption: str
    maps: dict[str, Any]
    seed: int


@dataclasses.dataclass(frozen=True)
class Variant:
    """Scales of one compared configuration."""

    scnet: float = 1.0
    oben: float = 0.0
    occlusion: float = 0.0


BASE = Variant(scnet=0.0)
SCNET = Variant()
SCNET_OBEN = Variant(oben=1.0)


class Generator:
    """Loads base + SCNet (+ OBEN) from diffusers folders, as `launch.sample` does; `generate` -> uint8 images.

    `scnet_encoding(depth, normal) -> (H, W, 4)`: how SCNet's input is derived from the maps (default: the
    library's `conditioning.scnet_conditioning`; the learnability test passes an independent one)."""

    def __init__(
        self,
        cfg: ml_collections.ConfigDict,
        sdxl: pathlib.Path,
        scnet: pathlib.Path,
        oben: pathlib.Path | None = None,
        scnet_encoding: Callable[[np.ndarray, np.ndarray], np.ndarray] = conditioning.scnet_conditioning,
    ):
        from configs import sample_tiny
        from personacraft_jax.sampling import schedulers
        from personacraft_jax.sampling.models import load_models
        from personacraft_jax.sampling.sampler import Sampler, SamplerSettings
        from personacraft_jax.sampling.tokenizers import PromptTokenizer

        model = sample_tiny.get_config().model
        model.sdxl_folder, model.scnet_folder = str(sdxl), str(scnet)
        model.oben_folder = None if oben is None else str(oben)
        self.cfg, self.scnet_encoding, self.has_oben = cfg, scnet_encoding, oben is not None
        self.tokenizer = PromptTokenizer.from_sdxl_folder(sdxl)
        scheduler = json.loads((sdxl / "scheduler" / "scheduler_config.json").read_text())
        settings = SamplerSettings(
            num_steps=cfg.sample.steps,
            scheduler=schedulers.SchedulerConfig.from_diffusers(scheduler),
            oa_mode="control",
            oa_fraction=cfg.sample.oa_fraction,
        )
        self.sampler = Sampler(load_models(model), settings)
        self.batch = int(cfg.sample.scenes)
        self.latent_shape = (cfg.resolution // cfg.latent_factor,) * 2 + (4,)

    def _inputs(self, requests: Sequence[Request], variant: Variant) -> Any:
        from personacraft_jax.sampling.sampler import SamplerInputs, Scales

        f, size = self.cfg.latent_factor, self.cfg.resolution
        ids = self.tokenizer.tokenize([r.caption for r in requests])
        maps = [r.maps for r in requests]
        return SamplerInputs(
            noise=np.stack([_noise(r.seed, self.latent_shape) for r in requests]),
            prompt_ids=ids[0],
            prompt_ids_2=ids[1],
            time_ids=np.stack([conditioning.add_time_ids((size, size), (0, 0), (size, size))] * len(requests)),
            scales=Scales.create(
                guidance=self.cfg.sample.guidance, occlusion=variant.occlusion, scnet=variant.scnet, oben=variant.oben
            ),
            scnet_cond=np.stack([self.scnet_encoding(m["depth"], m["normal"]) for m in maps]),
            oben_cond=np.stack([conditioning.oben_conditioning(m["depth_edges"], m["occlusion"]) for m in maps])
            if self.has_oben
            else None,
            occlusion_mask=np.stack(
                [conditioning.latent_occlusion_mask(m["occlusion"], m["depth_edges"], 1, f) for m in maps]
            )[..., None],
        )

    def generate(self, requests: Sequence[Request], variant: Variant) -> np.ndarray:
        """(len(requests), H, W, 3) uint8, in batches of `sample.scenes` (the last one padded)."""
        out = []
        for start in range(0, len(requests), self.batch):
            chunk = list(requests[start : start + self.batch])
            padded = chunk + [chunk[-1]] * (self.batch - len(chunk))
            _, images = self.sampler(self._inputs(padded, variant))
            out.append((np.asarray(images)[: len(chunk)] * 255.0 + 0.5).astype(np.uint8))
        return np.concatenate(out)


def _noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    import jax

    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)


def requests_for(examples: Sequence[dict[str, Any]], seed: int, maps_from: Sequence[dict[str, Any]] | None = None):
    """One request per example (its caption), conditioned on its own maps or on `maps_from[j]`'s."""
    maps_from = examples if maps_from is None else maps_from
    return [
        Request(e["caption"], {k: np.asarray(m[k]) for k in _MAP_KEYS}, seed * 100_003 + j)
        for j, (e, m) in enumerate(zip(examples, maps_from, strict=True))
    ]


_MAP_KEYS = ("depth", "normal", "depth_edges", "occlusion")
