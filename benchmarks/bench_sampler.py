"""Whole-generation speed: the jit-compiled sampler vs diffusers' StableDiffusionXLControlNetPipeline.

    python -m benchmarks.bench_sampler --steps 3 --size 64 --batch 1 --repeats 5 [--full] [--out results.json]

Both sides run the same tiny random networks (the parity test's: tiny SDXL UNet, SCNet + OBEN ControlNets,
CLIP-L / bigG stand-ins, 4-level VAE), the same prompt / negative prompt, Euler (SDXL config), CFG, the same
steps and batch, from prompt text to decoded images (ours: tokenisation on the host + one compiled call;
diffusers: `pipe(..., output_type="np")`). The compile time of our function is reported apart; timings are
the mean of `--repeats` runs after one warm-up run. `--full` adds a row for the whole PersonaCraft loop
(OA-CFG "control" = 3 branches, IdentityNet + IP-Adapter for 2 people), which diffusers has no pipeline for.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="square image size (px)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="also time the full PersonaCraft loop (ours only)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    return parser.parse_args()


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    args = _parse()
    import diffusers
    import jax
    import torch

    from personacraft_jax.convert.pretrained import load_pretrained
    from personacraft_jax.models.clip import CLIPTextModel, CLIPTextModelWithProjection
    from personacraft_jax.models.controlnet import ControlNetModel
    from personacraft_jax.models.unet import UNet2DConditionModel
    from personacraft_jax.models.vae import AutoencoderKL
    from personacraft_jax.sampling import models as models_lib
    from personacraft_jax.sampling.sampler import Sampler, SamplerInputs, SamplerModels, SamplerSettings, Scales
    from personacraft_jax.sampling.schedulers import SDXL_SCHEDULER_CONFIG, SchedulerConfig
    from personacraft_jax.sampling.tokenizers import PromptTokenizer
    from tests.sampler_fixtures import write_tiny_pipeline

    b, size, latent = args.batch, args.size, args.size // 8
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((b, latent, latent, 4)).astype(np.float32)
    scnet = rng.uniform(size=(b, size, size, 4)).astype(np.float32)
    oben = (rng.uniform(size=(b, size, size, 2)) > 0.8).astype(np.float32)
    prompt, negative = "two people in a park", "blurry"
    results: dict = {"device": jax.devices()[0].device_kind, "steps": args.steps, "size": size, "batch": b}

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        ref = write_tiny_pipeline(root)
        ours = SamplerModels(
            text_encoder=load_pretrained(CLIPTextModel, root / "text_encoder"),
            text_encoder_2=load_pretrained(CLIPTextModelWithProjection, root / "text_encoder_2"),
            unet=load_pretrained(UNet2DConditionModel, root / "unet"),
            vae=load_pretrained(AutoencoderKL, root / "vae"),
            scnet=load_pretrained(ControlNetModel, root / "scnet"),
            oben=load_pretrained(ControlNetModel, root / "oben"),
        )
        tok = PromptTokenizer.from_sdxl_folder(root)

    def inputs(**extra) -> SamplerInputs:
        ids, neg = tok.tokenize([prompt] * b), tok.tokenize([negative] * b)
        return SamplerInputs(
            noise=noise, prompt_ids=ids[0], prompt_ids_2=ids[1], negative_ids=neg[0], negative_ids_2=neg[1],
            time_ids=np.tile(np.array([[size, size, 0, 0, size, size]], np.float32), (b, 1)),
            scales=Scales.create(guidance=5.0, scnet=1.0, oben=1.0), scnet_cond=scnet, oben_cond=oben, **extra,
        )  # fmt: skip

    settings = SamplerSettings(num_steps=args.steps, scheduler=SchedulerConfig.sdxl("euler"), oa_mode="none")
    sampler = Sampler(ours, settings)
    start = time.perf_counter()
    compiled = sampler.compile(inputs())
    results["jax_compile_s"] = time.perf_counter() - start

    def run_ours():  # host tokenisation + placement + the compiled generation, to decoded images
        x = sampler.place(inputs())
        return np.asarray(jax.block_until_ready(compiled(sampler.params, sampler.schedule, x)[1]))

    results["jax_s"] = _timed(run_ours, args.repeats)

    pipe = diffusers.StableDiffusionXLControlNetPipeline(
        vae=ref["vae"], text_encoder=ref["text_encoder"], text_encoder_2=ref["text_encoder_2"],
        tokenizer=ref["tokenizer"], tokenizer_2=ref["tokenizer_2"], unet=ref["unet"],
        controlnet=[ref["scnet"], ref["oben"]],
        scheduler=diffusers.EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG), add_watermarker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    torch_latents = torch.from_numpy(np.ascontiguousarray(np.moveaxis(noise, -1, 1)))
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))

    def run_diffusers():
        with torch.no_grad():
            return pipe(
                prompt=[prompt] * b, negative_prompt=[negative] * b, image=[nchw(scnet), nchw(oben)], height=size,
                width=size, num_inference_steps=args.steps, guidance_scale=5.0, latents=torch_latents,
                controlnet_conditioning_scale=[1.0, 1.0], output_type="np",
            ).images  # fmt: skip

    results["diffusers_s"] = _timed(run_diffusers, args.repeats)
    results["diffusers_over_jax"] = results["diffusers_s"] / results["jax_s"]

    if args.full:
        full = models_lib.tiny_models(0)  # random; the same tiny tokenizer vocabulary
        full_sampler = Sampler(full, SamplerSettings(args.steps, SchedulerConfig.sdxl("euler"), "control", 0.5))
        people = 2
        extra = dict(
            occlusion_mask=(rng.uniform(size=(b, latent, latent, 1)) > 0.7).astype(np.float32),
            face_embeds=rng.standard_normal((b, people, 512)).astype(np.float32),
            face_images=rng.uniform(size=(b, people, size, size, 3)).astype(np.float32),
            person_masks=rng.uniform(size=(b, people, latent, latent)).astype(np.float32),
            face_valid=np.ones((b, people), np.float32),
        )
        start = time.perf_counter()
        full_compiled = full_sampler.compile(inputs(**extra))
        results["jax_full_compile_s"] = time.perf_counter() - start

        def run_full():
            x = full_sampler.place(inputs(**extra))
            return np.asarray(jax.block_until_ready(full_compiled(full_sampler.params, full_sampler.schedule, x)[1]))

        results["jax_full_s"] = _timed(run_full, args.repeats)

    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
