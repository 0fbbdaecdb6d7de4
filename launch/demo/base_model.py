"""The demo's base-model stage: an SDXL-architecture model trained from nothing on the world's photos.

1. A random stand-in SDXL folder at the demo shapes (`data_prep.standin_sdxl`, UNet / VAE preset 'demo'):
   its text encoders stay random and frozen (so captions are only weakly informative), the rest is trained.
2. The VAE (`train.autoencoder`, reconstruction + KL on random crops of the training photos), its
   `scaling_factor` set from the trained latents; written into the folder (`convert.pipeline_folders`).
3. The training and held-out sets re-encoded with that VAE and the text encoders (`data_prep.encode_dataset`).
4. The UNet trained as a text-to-image diffusion model by the project's Trainer (`train.trainable=('unet',)`),
   exported through the project's export path into the final folder, which the later stages load exactly as
   they would load SDXL base.

The result is cached under `cache_dir/base_<key>/` (`sdxl/`, `data/`, `heldout/`, `history.json`), keyed by the
world's and the stage's config and the source code that makes them (`launch.demo.cache`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Callable

import ml_collections

from launch.demo import training
from personacraft_jax import atomic_write

# What makes the base: the renderer and scenes, the models, the training code, this stage.
BASE_SOURCES = ("data_prep", "personacraft_jax/models", "personacraft_jax/train", "personacraft_jax/convert",
                "personacraft_jax/data", "launch/demo/base_model.py", "launch/demo/training.py",
                "launch/demo/world.py")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """The trained base: `sdxl` (diffusers SDXL folder), the training / held-out datasets encoded with it,
    the per-step metrics of its VAE and UNet training, and whether it came from the cache."""

    sdxl: pathlib.Path
    data: pathlib.Path
    heldout: pathlib.Path
    history: dict[str, list[dict[str, float]]]
    cached: bool


def base_settings(cfg: ml_collections.ConfigDict) -> dict:
    """The config values the base depends on."""
    keys = ("seed", "resolution", "latent_factor", "batch_size", "data", "vae", "base")
    return {k: cfg[k].to_dict() if isinstance(cfg[k], ml_collections.ConfigDict) else cfg[k] for k in keys}


def train_vae(
    cfg: ml_collections.ConfigDict, skeleton: pathlib.Path, images, log: Callable[[str], None]
) -> tuple[object, list[dict[str, float]]]:
    """A VAE of the skeleton's architecture trained on `images` (N, H, W, 3) uint8, with its scaling factor set.

    It starts from Flax's default initialisers (LeCun-normal kernels, zero biases), seeded, not from the
    folder's random weights: from PyTorch's default init (what diffusers writes) this small VAE trains to grey
    reconstructions within the demo's steps (measured: chroma std 0.03 of the photos' 0.15 after 300 steps,
    against 0.12 from Flax's init)."""
    from flax import nnx

    from personacraft_jax.convert.folders import read_config
    from personacraft_jax.models.vae import AutoencoderKL
    from personacraft_jax.progress import progress_bar
    from personacraft_jax.train import autoencoder

    v = cfg.vae
    settings = autoencoder.AutoencoderTraining(
        steps=v.steps, batch_size=cfg.batch_size, learning_rate=v.learning_rate, warmup_steps=v.warmup_steps,
        kl_weight=v.kl_weight, crop_size=v.crop_size, seed=cfg.seed,
    )  # fmt: skip
    config = AutoencoderKL.config_from_pretrained(read_config(skeleton / "vae"))
    vae = AutoencoderKL(config, rngs=nnx.Rngs(cfg.seed))
    bar = progress_bar(v.steps, "[demo] VAE", unit="step")

    def on_step(step: int, record: dict) -> None:
        bar.update(1)
        bar.set_postfix(l1=f"{record['l1']:.4f}", refresh=False)

    try:
        vae, history = autoencoder.train_autoencoder(vae, images, settings, on_step=on_step)
    finally:
        bar.close()
    factor = autoencoder.latent_scaling_factor(vae, images)
    log(f"VAE: l1 {history[-1]['l1']:.4f}, kl {history[-1]['kl']:.3f}; scaling_factor {factor:.4f}")
    return autoencoder.with_scaling_factor(vae, factor), history


def build_base(
    cfg: ml_collections.ConfigDict,
    cache: pathlib.Path,
    world: dict[str, pathlib.Path],
    out: pathlib.Path,
    log: Callable[[str], None],
) -> BaseModel:
    """The cached base, or trains it (module docstring). `world`: {'data', 'heldout'} unencoded datasets;
    `out`: the demo's output folder (the UNet run's workdir goes to `out/runs/base`)."""
    from launch.demo import cache as cache_lib
    from launch.demo.world import read_scenes

    key = cache_lib.cache_key(base_settings(cfg), BASE_SOURCES)
    folder = cache / f"base_{key}"
    done = folder / "history.json"
    if done.is_file():
        log(f"base model from the cache: {folder}")
        return BaseModel(folder / "sdxl", folder / "data", folder / "heldout", json.loads(done.read_text()), True)
    if folder.exists():  # an interrupted build: start it again
        shutil.rmtree(folder)
    work = folder.with_name(folder.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    from data_prep.encode_dataset import encode_dataset
    from data_prep.standin_sdxl import write_standin_sdxl
    from personacraft_jax.convert.pipeline_folders import write_pipeline_folder
    from personacraft_jax.train import export

    skeleton = write_standin_sdxl(work / "skeleton", cfg.seed, unet_preset="demo", vae_preset="demo")
    vae, vae_history = train_vae(cfg, skeleton, read_scenes(world["data"]).images, log)
    with_vae = write_pipeline_folder(skeleton, work / "with_vae", {"vae": vae})
    for name in ("data", "heldout"):
        encode_dataset(world[name], work / name, with_vae)
    log("encoded the training and held-out sets with the trained VAE and the text encoders")

    run = out / "runs" / "base"
    shutil.rmtree(run, ignore_errors=True)
    train = training.train_config(cfg, "base", with_vae, work / "data")
    unet_history = training.run_training(train, run, "[demo] base UNet")
    nets = export.restore_trained_nets(export.load_run_config(run), run)
    export.export_sdxl(nets, with_vae, work / "sdxl")
    history = {"vae": vae_history, "unet": unet_history}
    atomic_write.write_json(work / "history.json", history)
    for scratch in ("skeleton", "with_vae"):
        shutil.rmtree(work / scratch)
    work.rename(folder)
    return BaseModel(folder / "sdxl", folder / "data", folder / "heldout", history, False)
