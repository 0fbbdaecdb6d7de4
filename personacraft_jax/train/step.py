"""The jit-compiled, sharded train step: SDXL UNet + SCNet (+ OBEN) residuals -> weighted loss.

Which nets learn is `StepConfig.trainable`: the ControlNets on a frozen UNet (the PersonaCraft recipe), or
the UNet itself (base training / fine-tuning, with or without ControlNets); the rest are frozen.

Data flow of one step (all inside one `jax.jit`):
  latents ~ N(mean, exp(logvar)) * scaling_factor;  t ~ U{0..T-1};  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
  (the DDPM forward process of `sampling.schedulers`; target eps, or v for v-prediction)
  captions dropped to the empty prompt with the batch's `drop_caption` flags
  residuals = SCNet(x_t, cond_scnet) [+ OBEN(x_t, cond_oben)];  pred = UNet(x_t, residuals)
  loss = mean((pred - target)^2 * (1 + lambda_occ * M_occ)) [* min-SNR weight]

The step's randomness is `fold_in(state.rng, state.step)`: it depends on the seed and the step only, so a
resumed run (on any topology) draws exactly what an uninterrupted one would.

Batch (global arrays, batch axis sharded over data x fsdp; h, w = latent grid, H, W = pixels):
  latent_mean, latent_logvar (B, h, w, 4); prompt_embeds (B, 77, D); pooled_prompt_embeds (B, P);
  time_ids (B, 6); scnet_cond (B, H, W, Cs); oben_cond (B, H, W, Co) when OBEN is used;
  occlusion_mask (B, h, w); drop_caption (B,) bool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from personacraft_jax.sampling import schedulers
from personacraft_jax.train import loss as loss_lib

CONTROL_NETS = ("scnet", "oben")
TRAINABLE_NETS = ("unet", *CONTROL_NETS)


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `params` holds the trainable nets' parameters (fp32 master copies)."""

    step: jax.Array
    params: dict[str, nnx.State]
    opt_state: optax.OptState
    rng: jax.Array  # raw PRNG key data (uint32), folded with `step` each step


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The loss and update options of a step (read from the `train` config section)."""

    trainable: tuple[str, ...]
    lambda_occ: float = 0.0
    min_snr_gamma: float | None = None
    prediction_type: str = "epsilon"
    nan_policy: str = "skip"  # 'skip': drop a non-finite update; 'stop': the loop raises.
    scaling_factor: float = 0.13025
    conditioning_scales: tuple[tuple[str, float], ...] = (("scnet", 1.0), ("oben", 1.0))

    def __post_init__(self):
        if not self.trainable or set(self.trainable) - set(TRAINABLE_NETS):
            raise ValueError(
                f"config train.trainable={self.trainable}; expected a non-empty subset of {TRAINABLE_NETS}"
            )
        if self.nan_policy not in ("skip", "stop"):
            raise ValueError(f"config train.nan_policy={self.nan_policy!r}; expected 'skip' or 'stop'")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"config train.prediction_type={self.prediction_type!r}")


@dataclasses.dataclass(frozen=True)
class Networks:
    """Static structure of the models: graph definitions and their non-parameter state."""

    graphdefs: Mapping[str, nnx.GraphDef]  # 'unet' and the ControlNets used ('scnet', 'oben')
    rest: Mapping[str, nnx.State]

    def module(self, name: str, params: nnx.State) -> nnx.Module:
        return nnx.merge(self.graphdefs[name], params, self.rest[name])


def split_networks(modules: Mapping[str, nnx.Module]) -> tuple[Networks, dict[str, nnx.State]]:
    """Splits {'unet': ..., ['scnet': ..., 'oben': ...]} into static structure and parameter states."""
    if "unet" not in modules or set(modules) - set(TRAINABLE_NETS):
        raise ValueError(f"networks need 'unet' and optionally {CONTROL_NETS}, got {sorted(modules)}")
    graphdefs, params, rest = {}, {}, {}
    for name, module in modules.items():
        graphdefs[name], params[name], rest[name] = nnx.split(module, nnx.Param, ...)
    return Networks(graphdefs, rest), params


def _noisy_latents(batch, rng, noise_schedule: schedulers.SchedulerConfig, cfg: StepConfig):
    rng_latent, rng_noise, rng_t = jax.random.split(rng, 3)
    mean, logvar = batch["latent_mean"], batch["latent_logvar"]
    latents = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng_latent, mean.shape, mean.dtype)
    latents = latents * cfg.scaling_factor
    noise = jax.random.normal(rng_noise, latents.shape, latents.dtype)
    alphas_cumprod = jnp.asarray(schedulers.training_alphas_cumprod(noise_schedule))
    t = jax.random.randint(rng_t, (latents.shape[0],), 0, alphas_cumprod.shape[0])
    noisy = schedulers.add_noise(noise_schedule, latents, noise, t)
    if cfg.prediction_type == "epsilon":
        target = noise
    else:
        target = schedulers.get_velocity(noise_schedule, latents, noise, t)
    snr = alphas_cumprod[t] / (1.0 - alphas_cumprod[t])
    return noisy, t, target, snr


def _text_inputs(batch, empty_prompt: Mapping[str, jax.Array]):
    drop = batch["drop_caption"]
    prompt = jnp.where(drop[:, None, None], empty_prompt["prompt_embeds"][None], batch["prompt_embeds"])
    pooled = jnp.where(drop[:, None], empty_prompt["pooled_prompt_embeds"][None], batch["pooled_prompt_embeds"])
    return prompt, pooled


def predict(nets: Networks, params: Mapping[str, nnx.State], batch, noisy, t, prompt, pooled, scales) -> jax.Array:
    """UNet prediction with the summed residuals of every ControlNet present in `params`."""
    down, mid = None, None
    for name in CONTROL_NETS:
        if name not in params:
            continue
        net = nets.module(name, params[name])
        d, m = net(noisy, t, prompt, batch[f"{name}_cond"], pooled, batch["time_ids"], conditioning_scale=scales[name])
        down = d if down is None else tuple(a + b for a, b in zip(down, d, strict=True))
        mid = m if mid is None else mid + m
    unet = nets.module("unet", params["unet"])
    return unet(
        noisy,
        t,
        prompt,
        pooled,
        batch["time_ids"],
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
    )


def make_train_step(
    nets: Networks,
    cfg: StepConfig,
    optimizer: optax.GradientTransformation,
    noise_schedule: schedulers.SchedulerConfig,
    empty_prompt: Mapping[str, jax.Array],
    learning_rate: optax.Schedule | None = None,
) -> Callable[[TrainState, Mapping[str, nnx.State], Mapping[str, jax.Array]], tuple[TrainState, dict]]:
    """Returns step(state, frozen_params, batch) -> (new_state, metrics); `trainer.StepSetup.jit` jits it with
    the run's shardings. `learning_rate`: the optimizer's schedule, to report the rate of this update (at the
    optimizer's own count, which skipped updates do not advance)."""
    scales = dict(cfg.conditioning_scales)

    def step(state: TrainState, frozen: Mapping[str, nnx.State], batch: Mapping[str, jax.Array]):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        noisy, t, target, snr = _noisy_latents(batch, rng, noise_schedule, cfg)
        prompt, pooled = _text_inputs(batch, empty_prompt)

        def loss_fn(trainable):
            pred = predict(nets, {**frozen, **trainable}, batch, noisy, t, prompt, pooled, scales)
            return loss_lib.diffusion_loss(
                pred,
                target,
                batch["occlusion_mask"],
                lambda_occ=cfg.lambda_occ,
                snr=snr,
                min_snr_gamma=cfg.min_snr_gamma,
                prediction_type=cfg.prediction_type,
            )

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        grad_norms = {name: optax.tree.norm(g) for name, g in grads.items()}
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.isfinite(n) for n in grad_norms.values()]))
        if cfg.nan_policy == "skip":
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        metrics = {
            **metrics,
            "grad_norm": optax.tree.norm(grads),
            **{f"grad_norm/{name}": norm for name, norm in grad_norms.items()},
            "param_norm": optax.tree.norm(params),
            "finite": finite,
            "loss_finite": jnp.isfinite(loss),
        }
        if learning_rate is not None:
            is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
            counts = [x.count for x in jax.tree.leaves(state.opt_state, is_leaf=is_schedule) if is_schedule(x)]
            if len(counts) != 1:
                raise ValueError(f"expected one learning-rate schedule in the optimizer state, found {len(counts)}")
            metrics["learning_rate"] = learning_rate(counts[0])
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng), metrics

    return step
