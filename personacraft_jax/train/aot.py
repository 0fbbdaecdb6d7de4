"""Ahead-of-time compilation of the train step for a device topology, with no weights and no data.

Everything is abstract: the networks come from `nnx.eval_shape`, the batch is ShapeDtypeStructs, and the
step is lowered with the run's shardings and compiled for the target devices (e.g. a TPU slice described
by libtpu on a CPU machine). The compiled executable reports per-chip memory and XLA's cost model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from personacraft_jax.parallel import mesh as mesh_lib
from personacraft_jax.parallel import sharding as sharding_lib
from personacraft_jax.train import checkpoint as checkpoint_lib
from personacraft_jax.train import networks as networks_lib
from personacraft_jax.train import trainer as trainer_lib

GIB = 1024**3
# Peak dense bf16 FLOP/s and HBM per chip (public spec sheets).
CHIPS: dict[str, tuple[float, float]] = {
    "v4": (275e12, 32 * GIB),
    "v5e": (197e12, 16 * GIB),
    "v5litepod": (197e12, 16 * GIB),
    "v5p": (459e12, 95 * GIB),
    "v6e": (918e12, 32 * GIB),
    "h100": (989e12, 80 * GIB),
    "h200": (989e12, 141 * GIB),
}


@dataclasses.dataclass
class CompileReport:
    """Per-chip figures of one compiled train step."""

    devices: int
    per_chip_batch: float
    argument_bytes: int
    temp_bytes: int
    output_bytes: int
    alias_bytes: int
    flops_per_chip: float
    xla_seconds: float | None
    chip_hbm_bytes: float | None
    chip_peak_flops: float | None
    compile_seconds: float

    @property
    def total_bytes(self) -> int:
        return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

    @property
    def fits(self) -> bool | None:
        """Whether arguments + temporaries + outputs fit in the chip's HBM (None: chip unknown).

        The compile itself is no test: for large batches libtpu's compile-only targets return programs
        a little over the chip's HBM instead of failing."""
        return None if self.chip_hbm_bytes is None else self.total_bytes <= self.chip_hbm_bytes

    @property
    def mfu(self) -> float | None:
        if not self.xla_seconds or not self.chip_peak_flops:
            return None
        return self.flops_per_chip / self.xla_seconds / self.chip_peak_flops

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "total_bytes": self.total_bytes, "fits": self.fits, "mfu": self.mfu}


def abstract_batch(
    config: Any,
    unet_config: Any,
    mesh: Mesh,
    control_nets: tuple[str, ...],
    rules: Mapping[str, Any] = sharding_lib.DEFAULT_RULES,
) -> dict[str, jax.ShapeDtypeStruct]:
    """The model inputs of one global batch at `data.resolution` for a run whose UNet gets `control_nets`'
    residuals, as ShapeDtypeStructs sharded as the trainer shards batches (the `batch` rule of `rules`)."""
    b, size = int(config.data.batch_size), int(config.data.resolution)
    h = size // int(config.data.latent_factor)
    pooled = unet_config.projection_class_embeddings_input_dim - 6 * unet_config.addition_time_embed_dim
    shapes = {
        "latent_mean": (b, h, h, unet_config.in_channels),
        "latent_logvar": (b, h, h, unet_config.in_channels),
        "prompt_embeds": (b, int(config.data.text_tokens), unet_config.cross_attention_dim),
        "pooled_prompt_embeds": (b, pooled),
        "time_ids": (b, 6),
        "occlusion_mask": (b, h, h),
        "drop_caption": (b,),
    }
    for name in control_nets:
        shapes[f"{name}_cond"] = (b, size, size, int(config.model[f"{name}_conditioning_channels"]))
    return {
        name: jax.ShapeDtypeStruct(
            shape,
            jnp.bool_ if name == "drop_caption" else jnp.float32,
            sharding=sharding_lib.batch_sharding(mesh, len(shape), rules),
        )
        for name, shape in shapes.items()
    }


def xla_step_seconds(cost: dict[str, Any]) -> float | None:
    """XLA's estimated step time from a cost analysis, or None where the backend gives no usable one.

    Some libtpu targets (v6e in jax 0.10.2) put a negative placeholder in `optimal_seconds`.
    """
    seconds = float(cost.get("optimal_seconds", math.nan))
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def compile_train_step(config: Any, devices: list, chip: str | None = None) -> tuple[Any, CompileReport]:
    """Lowers and compiles the configured train step for `devices`; returns (compiled, report)."""
    import time

    mesh = mesh_lib.make_mesh(dict(config.mesh), devices, dict(config.get("mesh_dcn") or {}))
    rules = dict(config.get("sharding_rules") or sharding_lib.DEFAULT_RULES)
    used = trainer_lib.control_nets(config)
    step_cfg = trainer_lib.step_config(config.train, used)
    modules = nnx.eval_shape(
        lambda: networks_lib.build_networks(config.model, step_cfg.trainable, used, int(config.seed), abstract=True)
    )
    unet_config = modules["unet"].config
    batch = abstract_batch(config, unet_config, mesh, used, rules)
    empty = {
        "prompt_embeds": jnp.zeros(batch["prompt_embeds"].shape[1:], jnp.float32),
        "pooled_prompt_embeds": jnp.zeros(batch["pooled_prompt_embeds"].shape[1:], jnp.float32),
    }
    setup = trainer_lib.setup_step(config, modules, step_cfg, mesh, rules, empty)
    jitted = setup.jit({k: v.sharding for k, v in batch.items()})
    state = checkpoint_lib.abstract_with_shardings(setup.abstract_state, setup.state_shardings)
    frozen = checkpoint_lib.abstract_with_shardings(setup.frozen, setup.frozen_shardings)
    start = time.perf_counter()
    compiled = jitted.lower(state, frozen, batch).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) else cost) or {}
    peak, hbm = CHIPS.get(chip, (None, None)) if chip else (None, None)
    latents = batch["latent_mean"]  # examples per chip: the batch sharding's shard (`tensor` does not split it)
    report = CompileReport(
        devices=len(devices),
        per_chip_batch=float(latents.sharding.shard_shape(latents.shape)[0]),
        argument_bytes=int(memory.argument_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        flops_per_chip=float(cost.get("flops", 0.0)),
        xla_seconds=xla_step_seconds(cost),
        chip_hbm_bytes=hbm,
        chip_peak_flops=peak,
        compile_seconds=seconds,
    )
    return compiled, report
