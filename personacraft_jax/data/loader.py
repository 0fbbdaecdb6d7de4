"""The grain input pipeline: stored examples -> per-example model inputs -> global, sharded jax.Arrays.

Each process reads its own shard of the records (`ShardByJaxProcess`), shuffled with the config seed and
repeated forever; the per-example transform (`TrainingInputs`) derives every model input in numpy, so
device steps see only dense arrays. The iterator's state (`get_state()` bytes) goes into every checkpoint,
so a resumed run reads exactly the records an uninterrupted run would have read.

Model inputs (per example; h, w = latent grid, H, W = pixels; NHWC):
  latent_mean, latent_logvar (h, w, 4); prompt_embeds (77, D); pooled_prompt_embeds (P,); time_ids (6,);
  scnet_cond (H, W, 4), oben_cond (H, W, 2) (those of `InputOptions.control_nets`); occlusion_mask (h, w);
  drop_caption () bool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from personacraft_jax.data import conditioning
from personacraft_jax.parallel import sharding as sharding_lib

# Present only in shards prepared with SDXL encodings (launch.prep with `sdxl_folder`); training needs them.
SDXL_FIELDS = ("latent_mean", "latent_logvar", "prompt_embeds", "pooled_prompt_embeds")


class MissingFieldError(KeyError):
    """A stored example lacks a field the model inputs need."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """How model inputs are derived (read from the `data` config section)."""

    caption_dropout: float = 0.1
    edge_radius: int = 1
    occlusion_radius: int = 0
    latent_factor: int = 8
    control_nets: tuple[str, ...] = ("scnet", "oben")  # whose conditioning inputs to derive


def _latents_nhwc(array: np.ndarray) -> np.ndarray:
    """Stored latent moments are channel-first (4, h, w) as in diffusers; models take (h, w, 4)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(array, np.float32), 0, -1))


class TrainingInputs(grain.transforms.RandomMap):
    """Stored example dict -> model inputs (see the module docstring); caption dropout uses grain's rng."""

    def __init__(self, options: InputOptions):
        self.options = options

    def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        missing = [field for field in SDXL_FIELDS if field not in element]
        if missing:
            raise MissingFieldError(
                f"example {element.get('image_id', '?')!r} has no {', '.join(missing)}: the shards were prepared "
                "without SDXL encodings. Re-run `python -m launch.prep` with the SDXL folder set "
                "(config.sdxl_folder) to precompute VAE latents and text embeddings."
            )
        depth = np.asarray(element["depth"])
        opts = self.options
        inputs = {
            "latent_mean": _latents_nhwc(element["latent_mean"]),
            "latent_logvar": _latents_nhwc(element["latent_logvar"]),
            "prompt_embeds": np.asarray(element["prompt_embeds"], np.float32),
            "pooled_prompt_embeds": np.asarray(element["pooled_prompt_embeds"], np.float32),
            "time_ids": conditioning.add_time_ids(
                tuple(element["original_size"]), tuple(element["crop_top_left"]), depth.shape
            ),
            "occlusion_mask": conditioning.latent_occlusion_mask(
                element["occlusion"], element["depth_edges"], opts.edge_radius, opts.latent_factor
            ),
            "drop_caption": np.asarray(rng.uniform() < opts.caption_dropout),
        }
        if "scnet" in opts.control_nets:
            inputs["scnet_cond"] = conditioning.scnet_conditioning(depth, np.asarray(element["normal"]))
        if "oben" in opts.control_nets:
            inputs["oben_cond"] = conditioning.oben_conditioning(
                element["depth_edges"], element["occlusion"], opts.edge_radius, opts.occlusion_radius
            )
        return inputs


def make_loader(
    source: Any,
    *,
    global_batch_size: int,
    seed: int,
    options: InputOptions,
    worker_count: int = 0,
) -> grain.DataLoader:
    """An endless, shuffled, per-process-sharded loader yielding process-local batches (numpy dicts)."""
    processes = jax.process_count()
    if global_batch_size % processes:
        raise ValueError(f"config data.batch_size={global_batch_size} is not divisible by the {processes} processes")
    if len(source) < global_batch_size:
        raise ValueError(f"the data set has {len(source)} examples, fewer than one batch ({global_batch_size})")
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=True),
        shuffle=True,
        num_epochs=None,
        seed=seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[
            TrainingInputs(options),
            grain.transforms.Batch(global_batch_size // processes, drop_remainder=True),
        ],
        worker_count=worker_count,
    )


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, rules=sharding_lib.DEFAULT_RULES) -> dict[str, jax.Array]:
    """Process-local batch -> global jax.Arrays with the batch axis sharded over the `batch` rule's axes."""
    return {
        name: jax.make_array_from_process_local_data(sharding_lib.batch_sharding(mesh, value.ndim, rules), value)
        for name, value in local.items()
    }
