"""The whole PersonaCraft generation as ONE jit-compiled function (DESIGN section 7).

    prompt ids -> CLIP-L + bigG (Flax) -> SDXL prompt embeddings (negative: encoded, or zeros as SDXL's
    `force_zeros_for_empty_prompt` when no negative prompt is given)
    noise * init_noise_sigma -> lax.fori_loop over the steps:
        x = [x] * branches (CFG layout of `guidance`: uncond, cond (, cond without 3D control))
        residuals = SCNet(depth+normal) * scnet_scale * branch_flag + OBEN(edges+occlusion) * oben_scale * branch_flag
                    + sum_p region_p * IdentityNet(x, face tokens_p, keypoint image_p) * identity_scale
        eps = UNet(x, text, residuals, IP tokens of every person, IP weights = ip_scale * region_p)
        eps = (OA-)CFG(eps branches, occlusion mask) ; x = scheduler step
    -> VAE decode -> images in [0, 1].

Identity (InstantID, several people): every person p has a 512-d face embedding, a keypoint image and a
region mask (its dilated silhouette on the latent grid, values in [0, 1]). Face tokens = Resampler(embedding)
(uncond branch: Resampler(zeros)). IdentityNet runs once per person (people folded into the batch) with the
person's face tokens as its only context and the pooled text / time ids; its residuals are multiplied by the
person's region mask block-averaged to each residual's resolution, and summed over people. The UNet's IP
branch attends to each person's tokens separately and weights each output by ip_scale * region (see
`models.unet_blocks`). A person whose `face_valid` is 0 contributes nothing. IdentityNet is not switched off
in OA-CFG's "no control" branch (only SCNet and OBEN are).

Layouts: images / maps NHWC, pixel size H x W, latent h = H / 8. `SamplerInputs` holds arrays only (scales
too, so changing a scale does not recompile); `SamplerSettings` is static (steps, scheduler, OA-CFG mode and
fraction). `Sampler.__call__` is compiled once per input shape / structure. `Sampler(..., on_step=f)` calls
`f(i)` on the host after step i of the compiled loop (a `jax.debug.callback`), for progress bars.

Step count: `SamplerSettings.num_steps` is what the scheduler is asked for; the loop, OA-CFG's fraction and the
progress callback run over the schedule's own length (`Schedule.num_steps`, `Sampler.num_steps`), which can be
shorter, as in diffusers (DPM-Solver++ with a clipping `lambda_min_clipped` and trailing spacing: 28 for 31).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from personacraft_jax.models.clip import CLIPTextModel, CLIPTextModelWithProjection
from personacraft_jax.models.controlnet import ControlNetModel
from personacraft_jax.models.resampler import Resampler
from personacraft_jax.models.text_conditioning import sdxl_text_embeddings
from personacraft_jax.models.unet import UNet2DConditionModel
from personacraft_jax.models.vae import AutoencoderKL
from personacraft_jax.parallel.sharding import batch_sharding
from personacraft_jax.sampling import guidance as G
from personacraft_jax.sampling import schedulers as S

Array = jax.Array


@struct.dataclass
class Scales:
    """Scalar float32 weights: CFG w, OA-CFG w_occ (or dw), per-ControlNet scales, IP-Adapter scale."""

    guidance: Array
    occlusion: Array
    scnet: Array
    oben: Array
    identity: Array
    ip: Array

    @classmethod
    def create(cls, guidance=5.0, occlusion=1.0, scnet=1.0, oben=1.0, identity=0.8, ip=0.8) -> Scales:
        f = lambda v: jnp.asarray(v, jnp.float32)
        return cls(f(guidance), f(occlusion), f(scnet), f(oben), f(identity), f(ip))


@struct.dataclass
class SamplerInputs:
    """Everything per generation (B images, P people slots); optional parts are None.

    noise (B, h, w, 4): N(0, 1) initial latents (multiplied by the scheduler's init_noise_sigma inside).
    prompt_ids, prompt_ids_2 (B, 77) int32: tokens for CLIP-L / bigG; negative_ids(_2) likewise or None (zeros).
    time_ids (B, 6): SDXL add_time_ids (also used for the negative branch, as diffusers).
    scnet_cond (B, H, W, 4), oben_cond (B, H, W, 2): ControlNet inputs in [0, 1].
    occlusion_mask (B, h, w, 1): OA-CFG mask M_occ in [0, 1].
    face_embeds (B, P, E); face_images (B, P, H, W, 3) keypoint images in [0, 1]; person_masks (B, P, h, w)
    region masks in [0, 1] on the latent grid; face_valid (B, P) 1 / 0.
    """

    noise: Array
    prompt_ids: Array
    prompt_ids_2: Array
    time_ids: Array
    scales: Scales
    negative_ids: Array | None = None
    negative_ids_2: Array | None = None
    scnet_cond: Array | None = None
    oben_cond: Array | None = None
    occlusion_mask: Array | None = None
    face_embeds: Array | None = None
    face_images: Array | None = None
    person_masks: Array | None = None
    face_valid: Array | None = None

    @property
    def batch(self) -> int:
        return self.noise.shape[0]

    @property
    def has_identity(self) -> bool:
        return self.face_embeds is not None


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """Static settings (a change recompiles): steps asked of the scheduler (see the module docstring), scheduler,
    OA-CFG mode ('none'|'control'|'scale') and the fraction of the first steps where it acts."""

    num_steps: int = 30
    scheduler: S.SchedulerConfig = dataclasses.field(default_factory=S.SchedulerConfig)
    oa_mode: str = "control"
    oa_fraction: float = 1.0

    def __post_init__(self) -> None:
        G.GuidanceConfig(oa_mode=self.oa_mode, oa_fraction=self.oa_fraction)  # validates


@dataclasses.dataclass
class SamplerModels:
    """The networks of one generation. SCNet / OBEN / IdentityNet / Resampler are optional (None)."""

    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scnet: ControlNetModel | None = None
    oben: ControlNetModel | None = None
    identitynet: ControlNetModel | None = None
    resampler: Resampler | None = None

    def present(self) -> dict[str, nnx.Module]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @property
    def latent_factor(self) -> int:
        """Pixels per latent pixel: the VAE's downsampling factor (8 for SDXL)."""
        return self.vae.config.downsample_factor

    @property
    def size_multiple(self) -> int:
        """What image sides must be multiples of: `latent_factor` x 2 per UNet downsampler (one per down block but
        the last), so every UNet level has an exact grid that the ControlNet residuals and the identity regions'
        block means match (SDXL: 8 x 4 = 32)."""
        return self.latent_factor * 2 ** (len(self.unet.config.down_block_types) - 1)


def _pool(weights: Array, size: tuple[int, int]) -> Array:
    """(N, h, w, P) -> (N, hr, wr, P) block means (h / hr = w / wr an integer)."""
    n, h, w, p = weights.shape
    fh, fw = h // size[0], w // size[1]
    return weights.reshape(n, size[0], fh, size[1], fw, p).mean(axis=(2, 4))


def text_conditioning(m: dict[str, nnx.Module], x: SamplerInputs) -> tuple[Array, Array, Array, Array]:
    """(negative embeds, negative pooled, embeds, pooled); negatives are zeros without negative ids."""
    enc1, enc2 = m["text_encoder"], m["text_encoder_2"]
    if x.negative_ids is None:
        embeds, pooled = sdxl_text_embeddings(enc1, enc2, x.prompt_ids, x.prompt_ids_2)
        return jnp.zeros_like(embeds), jnp.zeros_like(pooled), embeds, pooled
    ids1 = jnp.concatenate([x.negative_ids, x.prompt_ids])
    ids2 = jnp.concatenate([x.negative_ids_2, x.prompt_ids_2])
    embeds, pooled = sdxl_text_embeddings(enc1, enc2, ids1, ids2)
    b = x.batch
    return embeds[:b], pooled[:b], embeds[b:], pooled[b:]


@struct.dataclass
class _Prepared:
    """Loop-invariant model-batch (n*B) inputs, built once before the loop."""

    context: Array
    text_embeds: Array
    time_ids: Array
    control_flags: Array
    scnet_cond: Array | None
    oben_cond: Array | None
    ip_tokens: Array | None  # (nB, P, S, D)
    regions: Array | None  # (nB, h, w, P) region * face_valid
    id_context: Array | None  # (nB*P, S, D)
    id_images: Array | None  # (nB*P, H, W, 3)


def prepare(m: dict[str, nnx.Module], x: SamplerInputs, mode: str) -> _Prepared:
    """Text encoding, face tokens and the CFG branch layout (`guidance.batch_branches`)."""
    neg, neg_pooled, cond, pooled = text_conditioning(m, x)
    rep = lambda a: None if a is None else G.repeat_for_branches(a, mode)
    out = dict(
        context=G.batch_branches(neg, cond, mode),
        text_embeds=G.batch_branches(neg_pooled, pooled, mode),
        time_ids=rep(x.time_ids),
        control_flags=G.control_branch_scale(mode, x.batch),
        scnet_cond=rep(x.scnet_cond),
        oben_cond=rep(x.oben_cond),
        ip_tokens=None,
        regions=None,
        id_context=None,
        id_images=None,
    )
    if x.has_identity and "resampler" in m:
        b, p, e = x.face_embeds.shape
        tokens = m["resampler"](x.face_embeds.reshape(b * p, 1, e))
        uncond = m["resampler"](jnp.zeros((1, 1, e), x.face_embeds.dtype))
        tokens = tokens.reshape(b, p, *tokens.shape[1:])
        ip_tokens = G.batch_branches(jnp.broadcast_to(uncond[None], tokens.shape), tokens, mode)
        regions = x.person_masks * x.face_valid[:, :, None, None]
        out.update(
            ip_tokens=ip_tokens,
            regions=rep(jnp.moveaxis(regions, 1, -1)),
            id_context=ip_tokens.reshape(-1, *ip_tokens.shape[2:]),
            id_images=rep(x.face_images).reshape(-1, *x.face_images.shape[2:]),
        )
    return _Prepared(**out)


def _add(acc: tuple | None, res: tuple) -> tuple:
    return res if acc is None else jax.tree.map(jnp.add, acc, res)


def model_output(m: dict[str, nnx.Module], prep: _Prepared, scales: Scales, sample: Array, t: Array) -> Array:
    """The UNet prediction for the model batch (n*B, h, w, 4) at timestep t, with every ControlNet's residuals."""
    args = (sample, t, prep.context)
    added = (prep.text_embeds, prep.time_ids)
    residuals = None
    if "scnet" in m and prep.scnet_cond is not None:
        residuals = _add(residuals, m["scnet"](*args, prep.scnet_cond, *added, scales.scnet * prep.control_flags))
    if "oben" in m and prep.oben_cond is not None:
        residuals = _add(residuals, m["oben"](*args, prep.oben_cond, *added, scales.oben * prep.control_flags))
    ip_kwargs = {}
    if prep.ip_tokens is not None:
        num_people = prep.ip_tokens.shape[1]
        if "identitynet" in m:
            rep = lambda a: jnp.repeat(a, num_people, axis=0)
            down, mid = m["identitynet"](
                rep(sample),
                t,
                prep.id_context,
                prep.id_images,
                rep(prep.text_embeds),
                rep(prep.time_ids),
                scales.identity,
            )

            def masked(r: Array) -> Array:  # (nB*P, hr, wr, C) -> sum_p region_p * r_p: (nB, hr, wr, C)
                r = r.reshape(-1, num_people, *r.shape[1:])
                weights = _pool(prep.regions, r.shape[2:4])  # (nB, hr, wr, P)
                return jnp.einsum("bphwc,bhwp->bhwc", r, weights.astype(r.dtype))

            residuals = _add(residuals, (tuple(masked(d) for d in down), masked(mid)))
        ip_kwargs = dict(ip_tokens=prep.ip_tokens, ip_scale=scales.ip * prep.regions)
    down, mid = residuals if residuals is not None else (None, None)
    return m["unet"](
        *args, *added, down_block_additional_residuals=down, mid_block_additional_residual=mid, **ip_kwargs
    )


def denoise_step(
    m: dict[str, nnx.Module],
    settings: SamplerSettings,
    schedule: S.Schedule,
    prep: _Prepared,
    x: SamplerInputs,
    i: Array,
    latents: Array,
    state: S.SolverState,
) -> tuple[Array, S.SolverState, Array]:
    """One step i: (next latents, solver state, raw model-batch prediction (n*B, h, w, 4))."""
    mode = settings.oa_mode
    sample = S.scale_model_input(schedule, G.repeat_for_branches(latents, mode), i)
    raw = model_output(m, prep, x.scales, sample, schedule.timesteps[i])
    branches = G.split_branches(raw, mode)
    if mode == "none":
        eps = G.cfg(branches[0], branches[1], x.scales.guidance)
    else:
        if x.occlusion_mask is None:
            raise ValueError(f"oa_mode={mode!r} needs SamplerInputs.occlusion_mask")
        eps = G.oa_cfg(
            branches[0],
            branches[1],
            branches[2] if mode == "control" else None,
            x.occlusion_mask,
            mode=mode,
            guidance_scale=x.scales.guidance,
            occlusion_scale=x.scales.occlusion,
            active=G.oa_cfg_active(i, schedule.num_steps, settings.oa_fraction),
        )
    latents, state = S.step(schedule, state, i, eps, latents)
    return latents, state, raw


def generate(
    m: dict[str, nnx.Module],
    settings: SamplerSettings,
    schedule: S.Schedule,
    x: SamplerInputs,
    on_step: Callable[[int], None] | None = None,
) -> tuple[Array, Array]:
    """(final latents (B, h, w, 4) in the diffusion model's scale, images (B, H, W, 3) in [0, 1]).

    `on_step(i)` runs on the host once step i's latents exist (it receives one latent value, so it cannot
    run ahead of the computation)."""
    prep = prepare(m, x, settings.oa_mode)
    latents = x.noise.astype(jnp.float32) * S.init_noise_sigma(schedule)

    def body(i, carry):
        latents, state = carry
        latents, state, _ = denoise_step(m, settings, schedule, prep, x, i, latents, state)
        if on_step is not None:
            jax.debug.callback(lambda step, _: on_step(int(step)), i, latents[0, 0, 0, 0])
        return latents, state

    latents, _ = jax.lax.fori_loop(0, schedule.num_steps, body, (latents, S.init_state(schedule, latents)))
    vae = m["vae"]
    images = vae.decode(vae.latents_from_model(latents))
    return latents, jnp.clip((images.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


class Sampler:
    """Holds the models' graphdefs / parameters and the compiled generation; `sampler(inputs)` -> (latents, images).

    `mesh`: the batch axis of every input is sharded with `parallel.sharding.batch_sharding` (parameters are
    replicated); None = the default device. The batch must be divisible by the mesh's batch axes.
    `on_step`: called on the host with the step index after each step (see `generate`).
    """

    def __init__(
        self,
        models: SamplerModels,
        settings: SamplerSettings,
        mesh: Mesh | None = None,
        on_step: Callable[[int], None] | None = None,
    ):
        self.settings, self.mesh = settings, mesh
        self.schedule = S.make_schedule(settings.scheduler, settings.num_steps)
        graphdefs, self.params = {}, {}
        for name, model in models.present().items():
            graphdefs[name], self.params[name] = nnx.split(model)
        if mesh is not None:
            self.params = jax.device_put(self.params, NamedSharding(mesh, PartitionSpec()))
        self._graphdefs = graphdefs
        self._generate = jax.jit(
            functools.partial(_pure, functools.partial(generate, on_step=on_step), graphdefs, settings)
        )
        self._step = jax.jit(functools.partial(_pure_step, graphdefs, settings))

    def place(self, inputs: SamplerInputs) -> SamplerInputs:
        """Puts the inputs on the mesh: batch-major arrays sharded over the batch axes, scalars replicated."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, inputs)
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def put(a: Any) -> Array:
            a = np.asarray(a)
            return jax.device_put(a, batch_sharding(self.mesh, a.ndim) if a.ndim else replicated)

        return jax.tree.map(put, inputs)

    def __call__(self, inputs: SamplerInputs) -> tuple[Array, Array]:
        return self._generate(self.params, self.schedule, self.place(inputs))

    @property
    def num_steps(self) -> int:
        """The steps the loop runs: the schedule's length (may be fewer than `settings.num_steps`)."""
        return self.schedule.num_steps

    def compile(self, inputs: SamplerInputs) -> Any:
        """Ahead-of-time compilation for these input shapes (returns the compiled executable)."""
        return self._generate.lower(self.params, self.schedule, self.place(inputs)).compile()

    def first_step(self, inputs: SamplerInputs) -> tuple[Array, Array, Array]:
        """Step 0 only, for tests: (initial latents, latents after step 0, raw model-batch prediction)."""
        return self._step(self.params, self.schedule, self.place(inputs))


def _merge(graphdefs: dict, params: dict) -> dict[str, nnx.Module]:
    return {name: nnx.merge(graphdefs[name], params[name]) for name in graphdefs}


def _pure(fn, graphdefs, settings, params, schedule, inputs):
    return fn(_merge(graphdefs, params), settings, schedule, inputs)


def _pure_step(graphdefs, settings, params, schedule, inputs):
    m = _merge(graphdefs, params)
    prep = prepare(m, inputs, settings.oa_mode)
    latents = inputs.noise.astype(jnp.float32) * S.init_noise_sigma(schedule)
    state = S.init_state(schedule, latents)
    nxt, _, raw = denoise_step(m, settings, schedule, prep, inputs, jnp.asarray(0), latents, state)
    return latents, nxt, raw
