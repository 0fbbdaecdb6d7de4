"""Train-step speed, side by side in one run: this project's jitted SCNet step vs the PyTorch diffusers
equivalent (frozen UNet2DConditionModel + ControlNetModel.from_unet, forward, backward, AdamW).

    python -m benchmarks.bench_train_step [--batch 8 --pixels 64 --steps 10 --preset tiny]

Both sides use the same architecture (the `unet.preset` config), batch and resolution, fp32, on the
default device (this CPU, or a GPU when the JAX / torch builds have one). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _jax_step(args):
    import jax
    import jax.numpy as jnp
    from ml_collections import ConfigDict

    from personacraft_jax.sampling import schedulers
    from personacraft_jax.train import networks, optimizer, state, step

    model_cfg = ConfigDict(
        dict(
            sdxl_folder=None,
            unet_preset=args.preset,
            scnet_folder=None,
            scnet_conditioning_channels=4,
            conditioning_embedding_out_channels=(16, 32, 96, 256),
            dtype=args.dtype,
            frozen_param_dtype=args.dtype,
            attention="xla",
            remat="none",
        )
    )
    nets_modules = networks.build_networks(model_cfg, ("scnet",), ("scnet",), 0)
    unet_cfg = nets_modules["unet"].config
    nets, params = step.split_networks(nets_modules)
    trainable = {"scnet": params.pop("scnet")}
    train_cfg = ConfigDict(
        dict(
            schedule="constant",
            learning_rate=1e-4,
            warmup_steps=0,
            num_steps=1,
            end_lr=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=1e-2,
            grad_clip_norm=0.0,
        )
    )
    tx = optimizer.make_optimizer(train_cfg)
    pooled = unet_cfg.projection_class_embeddings_input_dim - 6 * unet_cfg.addition_time_embed_dim
    b, px, h = args.batch, args.pixels, args.pixels // 8
    rng = np.random.default_rng(0)
    batch = {
        "latent_mean": rng.normal(size=(b, h, h, 4)).astype(np.float32),
        "latent_logvar": np.full((b, h, h, 4), -10.0, np.float32),
        "prompt_embeds": rng.normal(size=(b, 77, unet_cfg.cross_attention_dim)).astype(np.float32),
        "pooled_prompt_embeds": rng.normal(size=(b, pooled)).astype(np.float32),
        "time_ids": np.tile(np.array([px, px, 0, 0, px, px], np.float32), (b, 1)),
        "scnet_cond": rng.uniform(size=(b, px, px, 4)).astype(np.float32),
        "occlusion_mask": np.zeros((b, h, h), np.float32),
        "drop_caption": np.zeros((b,), bool),
    }
    empty = {
        "prompt_embeds": jnp.zeros((77, unet_cfg.cross_attention_dim)),
        "pooled_prompt_embeds": jnp.zeros((pooled,)),
    }
    fn = step.make_train_step(nets, step.StepConfig(trainable=("scnet",)), tx, schedulers.SchedulerConfig(), empty)
    train_state = state.init_train_state(trainable, tx, 0)
    jitted = jax.jit(fn, donate_argnums=(0,))
    start = time.perf_counter()
    compiled = jitted.lower(train_state, params, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) else cost) or {}

    def run():
        nonlocal train_state
        train_state, metrics = compiled(train_state, params, batch)
        jax.block_until_ready(metrics["loss"])

    return run, compile_s, float(cost.get("flops", 0.0))


def _torch_step(args):
    import diffusers
    import torch

    from personacraft_jax.models import unet as unet_lib

    torch.manual_seed(0)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # As on the JAX side: frozen UNet stored in the compute dtype, ControlNet fp32 master weights, compute in
    # `dtype` (autocast for bf16).
    unet = diffusers.UNet2DConditionModel(**unet_lib.preset(args.preset)).to(device)
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_channels=4).to(device)
    unet.to(dtype)
    unet.requires_grad_(False)
    opt = torch.optim.AdamW(controlnet.parameters(), lr=1e-4, weight_decay=1e-2)
    cfg = unet.config
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    b, px, h = args.batch, args.pixels, args.pixels // 8
    g = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g).to(device, dtype)
    latents, text = rand(b, 4, h, h), rand(b, 77, cfg.cross_attention_dim)
    added = {
        "text_embeds": rand(b, pooled),
        "time_ids": torch.tensor([[px, px, 0, 0, px, px]] * b, dtype=dtype, device=device),
    }
    cond = torch.rand(b, 4, px, px, generator=g).to(device, dtype)
    alphas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000).pow(2).neg().add(1).cumprod(0).to(device)

    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)

    def run():
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (b,), device=device)
        a = alphas[t].view(-1, 1, 1, 1).to(dtype)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        with autocast:
            down, mid = controlnet(noisy, t, text, cond, added_cond_kwargs=added, return_dict=False)
            pred = unet(
                noisy,
                t,
                text,
                added_cond_kwargs=added,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run, device


def _time(run, steps: int) -> float:
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - start) / steps


def _side(args) -> dict:
    """Runs one side in this process and returns its figures."""
    if args.side == "jax":
        import jax

        run, compile_s, flops = _jax_step(args)
        seconds = _time(run, args.steps)
        return {
            "device": str(jax.devices()[0].device_kind),
            "ms_per_step": 1e3 * seconds,
            "compile_s": compile_s,
            "xla_flops_per_step": flops,
        }
    run, device = _torch_step(args)
    return {"device": device, "ms_per_step": 1e3 * _time(run, args.steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "sdxl"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pixels", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--side",
        choices=["jax", "torch"],
        help="run one side only (the default runs both, "
        "each in its own process so neither holds the other's accelerator memory)",
    )
    args = parser.parse_args()
    if args.side:
        print(json.dumps(_side(args)))
        return
    import subprocess
    import sys

    results = {}
    for side in ("jax", "torch"):
        command = [sys.executable, "-m", "benchmarks.bench_train_step", *sys.argv[1:], "--side", side]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[side] = json.loads(output.strip().splitlines()[-1])
    jax_ms, torch_ms = results["jax"]["ms_per_step"], results["torch"]["ms_per_step"]
    result = {
        "preset": args.preset,
        "batch": args.batch,
        "pixels": args.pixels,
        "dtype": args.dtype,
        "jax": results["jax"],
        "torch": results["torch"],
        "torch_over_jax": torch_ms / jax_ms,
    }
    print(f"{'':24}{'ms/step':>10}")
    print(f"{'personacraft-jax (jit)':24}{jax_ms:10.1f}   (compile {results['jax']['compile_s']:.1f} s)")
    print(f"{'diffusers (PyTorch)':24}{torch_ms:10.1f}")
    print(f"speed-up (torch / jax): {torch_ms / jax_ms:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
