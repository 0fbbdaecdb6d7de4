"""The main job on the embedded tiny default: data -> SCNet -> OBEN -> metrics -> OA-CFG samples -> export.

    python -m launch.demo [--config=configs/demo.py] [--config.out_dir=demo_out]    (or: make demo)

Writes `out_dir/`:
- `report.html`: conditioning maps of held-out examples, samples with and without OA-CFG, loss curves;
- `metrics.json`: held-out denoising losses (SCNet vs its conditioning zeroed; occlusion-region loss with
  vs without OBEN), final training losses, timings;
- `data/`, `heldout/` (TFDS shards + previews), `runs/scnet`, `runs/oben` (checkpoints, TensorBoard),
  `export/` (diffusers ControlNet folders), `samples/` (launch.sample outputs).

What it shows and what it does not: every stage runs for real (renders, shards, sharded jit training,
checkpoints, export, the jitted sampler), but on tiny randomly initialised networks and synthetic data, so
the images are not pictures; the metrics show that the control branches learn to use their inputs. Real
use needs SDXL, SMPL-X and face model folders (see README).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from ml_collections import config_flags

from launch import entry
from personacraft_jax import atomic_write

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo config (configs/demo.py).")


def _log(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _prep(cfg, sdxl: pathlib.Path, data_dir: pathlib.Path, num: int, seed: int, preview: int) -> dict:
    from configs import prep_synthetic
    from data_prep.prep_job import run_prep

    prep = prep_synthetic.get_config()
    prep.num_examples, prep.width, prep.height, prep.seed = num, cfg.resolution, cfg.resolution, seed
    prep.max_people = cfg.data.max_people
    prep.min_people = 2
    prep.cache_dir = cfg.cache_dir
    prep.sdxl_folder = str(sdxl)
    prep.preview_tile = 128
    return run_prep(prep, data_dir, num_preview=preview)


def _train(cfg, stage: str, sdxl: pathlib.Path, data_dir: pathlib.Path, workdir: pathlib.Path, scnet_folder=None):
    from configs import train_tiny
    from data_prep import dataset
    from personacraft_jax.train.metrics_writer import MetricsWriter
    from personacraft_jax.train.trainer import Trainer

    stage_cfg = cfg[stage]
    train = train_tiny.get_config()
    train.seed = cfg.seed
    train.model.sdxl_folder = str(sdxl)
    train.data.data_dir = str(data_dir)
    train.data.batch_size = cfg.batch_size
    train.train.num_steps = stage_cfg.steps
    train.train.learning_rate = stage_cfg.learning_rate
    train.train.warmup_steps = 10
    train.checkpoint.every_steps = stage_cfg.steps
    train.log.every_steps = 25
    if stage == "oben":
        train.train.trainable = ("oben",)
        train.train.lambda_occ = stage_cfg.lambda_occ
        train.model.scnet_folder = str(scnet_folder)
    trainer = Trainer(
        train,
        workdir,
        source=dataset.open_split(data_dir, decode_image=False),
        empty_prompt=dataset.load_empty_prompt(data_dir),
    )
    writer = MetricsWriter(workdir / "tensorboard", log_every=train.log.every_steps)
    try:
        history = trainer.train(writer=writer)
    finally:
        writer.close()
        trainer.close()
    return history


def _export(workdir: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    from personacraft_jax.train import export

    nets = export.restore_trained_nets(export.load_run_config(workdir), workdir)
    (folder,) = export.export_diffusers(nets, out, overwrite=True)
    return folder


def _heldout_metrics(cfg, sdxl, heldout_dir, scnet_folder, oben_folder) -> dict:
    from data_prep import dataset
    from personacraft_jax.data import loader
    from personacraft_jax.eval.denoising import heldout_losses
    from personacraft_jax.train import networks, step

    model = ml_collections.ConfigDict(
        dict(
            sdxl_folder=str(sdxl), scnet_folder=str(scnet_folder), oben_folder=str(oben_folder), dtype="float32",
            frozen_param_dtype="float32", attention="xla", remat="none",
        )
    )  # fmt: skip
    nets, params = step.split_networks(networks.build_networks(model, ("scnet",), True, cfg.seed))
    source = dataset.open_split(heldout_dir)
    transform = loader.TrainingInputs(loader.InputOptions(caption_dropout=0.0))
    rng = np.random.default_rng(0)
    examples = [transform.random_map(source[i], rng) for i in range(len(source))]
    examples = [{k: v for k, v in e.items() if k != "drop_caption"} for e in examples]
    batches = [
        {k: np.stack([e[k] for e in examples[i : i + cfg.batch_size]]) for k in examples[0]}
        for i in range(0, len(examples) - cfg.batch_size + 1, cfg.batch_size)
    ]
    scaling_factor = json.loads((sdxl / "vae" / "config.json").read_text())["scaling_factor"]
    return heldout_losses(nets, params, batches, scaling_factor=scaling_factor)


def _heldout_scene(cfg, out: pathlib.Path) -> pathlib.Path:
    """A held-out synthetic scene (new seed) as a fit file + scene JSON for launch.sample."""
    from data_prep.body_model import BodyModel, write_standin_smplx_model
    from data_prep.fits import save_scene_fit
    from data_prep.scenes import posed_synthetic_scene

    root = pathlib.Path(os.path.expanduser(cfg.cache_dir)) / "standin_smplx"
    if not (root / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
        write_standin_smplx_model(root)
    rng = np.random.default_rng(10_000 + cfg.seed)
    size = cfg.resolution
    fit, caption, _ = posed_synthetic_scene(rng, BodyModel(root), size, size, cfg.sample.people, cfg.sample.people)
    out.mkdir(parents=True, exist_ok=True)
    save_scene_fit(out / "heldout_scene.npz", fit)
    scene = {
        "prompt": caption,
        "width": size,
        "height": size,
        "steps": cfg.sample.steps,
        "seeds": list(cfg.sample.seeds),
        "scales": {"guidance": cfg.sample.guidance, "scnet": 1.0, "oben": 1.0},
        "oa_cfg": {"mode": "control", "scale": cfg.sample.oa_scale, "fraction": cfg.sample.oa_fraction},
        "people": [
            {"name": f"person{i}", "fit": {"file": "heldout_scene.npz", "index": i}, "face": None}
            for i in range(len(fit.people))
        ],
    }
    path = out / "heldout_scene.json"
    path.write_text(json.dumps(scene, indent=2))
    off = dict(scene, oa_cfg={"mode": "none", "scale": 0.0, "fraction": 0.0})
    (out / "heldout_scene_no_oacfg.json").write_text(json.dumps(off, indent=2))
    return path


def _sample(cfg, sdxl, scnet_folder, oben_folder, scene_path: pathlib.Path, out: pathlib.Path) -> dict:
    from configs import sample_tiny
    from personacraft_jax.sampling.sample_job import run_sample

    sample = sample_tiny.get_config()
    sample.model.sdxl_folder = str(sdxl)
    sample.model.scnet_folder = str(scnet_folder)
    sample.model.oben_folder = str(oben_folder)
    sample.cache_dir = cfg.cache_dir
    return run_sample(sample, scene_path, out)


def run_demo(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The whole demo (see the module docstring); returns the metrics it writes."""
    from data_prep.standin_sdxl import write_standin_sdxl

    out = pathlib.Path(cfg.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()
        _log(f"{name}: {timings[name]:.1f} s")

    _log("1/7 tiny random SDXL stand-in (diffusers format)")
    from data_prep import standin_sdxl

    # Cached per seed and per version of the generator's source (a changed generator writes a new folder).
    version = hashlib.sha256(pathlib.Path(standin_sdxl.__file__).read_bytes()).hexdigest()[:10]
    cache = pathlib.Path(os.path.expanduser(cfg.cache_dir))
    sdxl = write_standin_sdxl(cache / f"standin_sdxl_{cfg.seed}_{version}", cfg.seed)
    lap("standin_sdxl")
    _log(f"2/7 synthetic data: {cfg.data.train_examples} training + {cfg.data.heldout_examples} held-out scenes")
    _prep(cfg, sdxl, out / "data", cfg.data.train_examples, cfg.seed, preview=0)
    _prep(cfg, sdxl, out / "heldout", cfg.data.heldout_examples, cfg.seed + 1, preview=4)
    lap("prep")
    _log(f"3/7 training SCNet ({cfg.scnet.steps} steps)")
    scnet_history = _train(cfg, "scnet", sdxl, out / "data", out / "runs" / "scnet")
    scnet_folder = _export(out / "runs" / "scnet", out / "export")
    lap("train_scnet")
    _log(f"4/7 training OBEN with SCNet frozen ({cfg.oben.steps} steps, lambda_occ {cfg.oben.lambda_occ})")
    oben_history = _train(cfg, "oben", sdxl, out / "data", out / "runs" / "oben", scnet_folder)
    oben_folder = _export(out / "runs" / "oben", out / "export")
    lap("train_oben")
    _log("5/7 held-out denoising losses")
    heldout = _heldout_metrics(cfg, sdxl, out / "heldout", scnet_folder, oben_folder)
    lap("heldout_metrics")
    _log("6/7 sampling a held-out scene with and without OA-CFG")
    scene = _heldout_scene(cfg, out / "samples")
    _sample(cfg, sdxl, scnet_folder, oben_folder, scene, out / "samples" / "oa_cfg_on")
    _sample(cfg, sdxl, scnet_folder, oben_folder, scene.with_name("heldout_scene_no_oacfg.json"),
            out / "samples" / "oa_cfg_off")  # fmt: skip
    lap("sample")
    metrics = {
        "heldout": heldout,
        "scnet_vs_zeroed_conditioning": {
            "mse_with_scnet": heldout["scnet"]["mse"],
            "mse_with_conditioning_zeroed": heldout["scnet_zero_cond"]["mse"],
        },
        "occluded_mse_with_vs_without_oben": {
            "with_oben": heldout["scnet_oben"]["mse_occluded"],
            "without_oben": heldout["scnet"]["mse_occluded"],
        },
        "train": {
            "scnet_first_loss": scnet_history[0]["loss"], "scnet_last_loss": scnet_history[-1]["loss"],
            "oben_first_loss": oben_history[0]["loss"], "oben_last_loss": oben_history[-1]["loss"],
        },
        "timings_s": timings,
    }  # fmt: skip
    atomic_write.write_json(out / "metrics.json", metrics)
    _log("7/7 report")
    _write_report(out, metrics, scnet_history, oben_history)
    lap("report")
    _log(f"done in {sum(timings.values()):.0f} s: open {out / 'report.html'}")
    return metrics


def _write_report(out: pathlib.Path, metrics: dict, scnet_history: list, oben_history: list) -> None:
    from personacraft_jax.eval import report

    curve = lambda h, k: ([r["step"] for r in h], report.smooth([r[k] for r in h], 10))
    plots = report.line_plot_svg(
        {"SCNet loss": curve(scnet_history, "loss"), "SCNet occluded mse": curve(scnet_history, "mse_occluded")},
        title="SCNet training (10-step moving average)",
    ) + report.line_plot_svg(
        {"OBEN loss (occlusion-weighted)": curve(oben_history, "loss"),
         "OBEN occluded mse": curve(oben_history, "mse_occluded")},
        title="OBEN training (SCNet frozen)",
    )  # fmt: skip
    h = metrics["heldout"]
    table = report.metrics_table(
        [[name, f"{v['mse']:.4f}", f"{v['mse_occluded']:.4f}"] for name, v in h.items()],
        ["held-out variant", "mse", "mse in occlusion regions"],
    )
    previews = sorted((out / "heldout" / "preview").glob("*.png"))
    conditioning = report.image_grid([(p.stem, str(p)) for p in previews], out, size=512)
    samples = []
    for variant in ("oa_cfg_off", "oa_cfg_on"):
        for image in sorted((out / "samples" / variant).glob("image_seed*.png")):
            samples.append((f"{variant.replace('_', ' ')}: {image.stem}", str(image)))
    cond_dir = out / "samples" / "oa_cfg_on" / "conditioning"
    maps = [(p.stem, str(p)) for p in sorted(cond_dir.glob("*.png")) if not p.stem.startswith("face_kps")]
    notes = (
        "<p>Tiny, randomly initialised networks on synthetic scenes with a stand-in body model: every stage "
        "of the system runs for real, but the samples are not pictures. What the figures show is whether the "
        "control branches learn to use their inputs: the held-out loss with SCNet against SCNet fed zeroed "
        "conditioning, and the loss inside occlusion regions with and without OBEN.</p>"
    )
    report.write_report(
        out / "report.html",
        "personacraft-jax demo",
        [
            ("What this is", notes),
            ("Held-out metrics", table + f"<pre>{json.dumps(metrics['timings_s'])}</pre>"),
            ("Training", plots),
            ("Samples (held-out scene): OA-CFG off / on", report.image_grid(samples, out)),
            ("The scene's conditioning", report.image_grid(maps, out, size=160)),
            ("Held-out examples (contact sheets)", conditioning),
        ],
    )


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    import jax
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # the demo prints its own progress

    cache = pathlib.Path(os.path.expanduser(_CONFIG.value.cache_dir)) / "xla"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    run_demo(_CONFIG.value)


if __name__ == "__main__":
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    entry.run(main)
