"""SDXL-size PersonaCraft generation speed on an accelerator: the whole jit-compiled sampler at real shapes.

    python -m benchmarks.bench_sampler_sdxl [--size 1024 --steps 30 --people 2 --batch 1 --repeats 2]
    python -m benchmarks.bench_sampler_sdxl --preset=tiny --size=64 --steps=2    # a CPU smoke run of this script

Networks at SDXL base 1.0 shapes with random weights (no download; initialised on the device): CLIP-L + bigG,
UNet with IP-Adapter layers, SCNet (4 ch) + OBEN (2 ch) + IdentityNet ControlNets, the InstantID Resampler
and the VAE decoder; bf16 compute and parameters. The loop runs OA-CFG "control" (3 CFG branches) on all
steps and IdentityNet once per person per branch. Reports seconds per image and the model FLOPs utilisation
from a hand count (per step: 3 branches x (UNet 6.8 + SCNet 3.0 + OBEN 3.0 TFLOP) + 3 x people x IdentityNet
3.0 TFLOP, at 1024 x 1024; + VAE decode 10.5 TFLOP), scaled by (size / 1024)^2.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

PEAK_BF16 = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H200": 989e12}


def _random_state(build, seed: int, dtype):
    """Builds `build()` abstractly and fills every parameter with N(0, 0.02) on the device (eager: one small
    kernel per tensor; a single jit over thousands of outputs compiles slowly)."""
    import jax
    from flax import nnx

    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    leaves, treedef = jax.tree.flatten(state)

    keys = jax.random.split(jax.random.key(seed), len(leaves))
    values = [0.02 * jax.random.normal(k, leaf.shape, dtype) for k, leaf in zip(keys, leaves, strict=True)]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, values))


def _sdxl_models():
    """SamplerModels at SDXL base 1.0 / InstantID shapes, bf16, random N(0, 0.02) parameters."""
    import jax.numpy as jnp

    from personacraft_jax.convert.pretrained import abstract_rngs
    from personacraft_jax.models import clip, controlnet, resampler, unet, vae
    from personacraft_jax.models.layers import Precision
    from personacraft_jax.sampling.sampler import SamplerModels

    p = Precision(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention="xla")
    ucfg = unet.UNetConfig.from_diffusers(unet.preset("sdxl"))
    rcfg = resampler.preset("instantid")

    def cnet(channels):
        cfg = controlnet.ControlNetConfig.from_diffusers(controlnet.preset("sdxl", conditioning_channels=channels))
        return lambda: controlnet.ControlNetModel(cfg, p, rngs=abstract_rngs(0))

    builds = {
        "text_encoder": lambda: clip.CLIPTextModel(clip.CLIPTextConfig.from_dict(clip.preset("sdxl", 1)), p, rngs=abstract_rngs(0)),
        "text_encoder_2": lambda: clip.CLIPTextModelWithProjection(
            clip.CLIPTextConfig.from_dict(clip.preset("sdxl", 2)), p, rngs=abstract_rngs(0)
        ),
        "unet": lambda: unet.UNet2DConditionModel(ucfg, p, rngs=abstract_rngs(0), ip_adapter_tokens=rcfg.num_queries),
        "vae": lambda: vae.AutoencoderKL(vae.AutoencoderKLConfig.from_dict(vae.preset("sdxl")), p, rngs=abstract_rngs(0)),
        "scnet": cnet(4),
        "oben": cnet(2),
        "identitynet": cnet(3),
        "resampler": lambda: resampler.Resampler(rcfg, p, rngs=abstract_rngs(0)),
    }  # fmt: skip
    return SamplerModels(**{k: _random_state(b, i, jnp.bfloat16) for i, (k, b) in enumerate(builds.items())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("sdxl", "tiny"), default="sdxl", help="tiny: the CPU test networks")
    parser.add_argument("--size", type=int, default=None, help="pixels (default: 1024 sdxl, 64 tiny)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--people", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.size = args.size or (1024 if args.preset == "sdxl" else 64)
    import jax

    from personacraft_jax.sampling.models import tiny_models
    from personacraft_jax.sampling.sampler import Sampler, SamplerInputs, SamplerSettings, Scales
    from personacraft_jax.sampling.schedulers import SchedulerConfig

    start = time.perf_counter()
    models = _sdxl_models() if args.preset == "sdxl" else tiny_models(0)
    init_s = time.perf_counter() - start
    rcfg, vocab = models.resampler.config, models.text_encoder.config.vocab_size

    b, s, lat, n = args.batch, args.size, args.size // 8, args.people
    rng = np.random.default_rng(0)
    inputs = SamplerInputs(
        noise=rng.standard_normal((b, lat, lat, 4)).astype(np.float32),
        prompt_ids=rng.integers(0, vocab - 1, (b, 77)).astype(np.int32),
        prompt_ids_2=rng.integers(0, vocab - 1, (b, 77)).astype(np.int32),
        time_ids=np.tile(np.array([[s, s, 0, 0, s, s]], np.float32), (b, 1)),
        scales=Scales.create(),
        scnet_cond=rng.uniform(size=(b, s, s, 4)).astype(np.float32),
        oben_cond=(rng.uniform(size=(b, s, s, 2)) > 0.9).astype(np.float32),
        occlusion_mask=(rng.uniform(size=(b, lat, lat, 1)) > 0.8).astype(np.float32),
        face_embeds=rng.standard_normal((b, n, rcfg.embedding_dim)).astype(np.float32),
        face_images=rng.uniform(size=(b, n, s, s, 3)).astype(np.float32),
        person_masks=rng.uniform(size=(b, n, lat, lat)).astype(np.float32),
        face_valid=np.ones((b, n), np.float32),
    )
    settings = SamplerSettings(args.steps, SchedulerConfig.sdxl("euler"), oa_mode="control", oa_fraction=1.0)
    sampler = Sampler(models, settings)
    start = time.perf_counter()
    compiled = sampler.compile(inputs)
    compile_s = time.perf_counter() - start
    placed = sampler.place(inputs)

    def run():
        return jax.block_until_ready(compiled(sampler.params, sampler.schedule, placed)[1])

    run()
    start = time.perf_counter()
    for _ in range(args.repeats):
        run()
    seconds = (time.perf_counter() - start) / args.repeats
    scale = (args.size / 1024) ** 2
    flops = b * scale * (args.steps * (3 * (6.8 + 3.0 + 3.0) + 3 * n * 3.0) + 10.5) * 1e12
    if args.preset != "sdxl":
        flops = None  # the hand count is for SDXL shapes
    kind = jax.devices()[0].device_kind
    peak = PEAK_BF16.get(kind)
    result = {
        "preset": args.preset, "device": kind, "size": args.size, "steps": args.steps, "people": n, "batch": b,
        "seconds_per_image": seconds / b, "compile_s": compile_s, "init_s": init_s,
        "hand_counted_tflop_per_image": flops / b / 1e12 if flops else None,
        "mfu": flops / seconds / peak if peak and flops else None,
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
