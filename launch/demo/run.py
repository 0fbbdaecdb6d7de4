"""`run_demo(cfg)`: the whole miniature world, stage after stage (see `launch.demo` for what each shows).

Output folder (`cfg.out_dir`): `report.html`, `metrics.json` (every figure), `runs/{base,scnet,oben}`
(checkpoints, TensorBoard), `export/{scnet,oben}` (diffusers ControlNet folders), `images/` (the report's
pictures), `user_path/` (a held-out scene through launch.sample and launch.evaluate). The world's data and
the trained base are cached in `cfg.cache_dir`.
"""

from __future__ import annotations

import pathlib
import shutil
import time
from typing import Any

import ml_collections

from launch.demo import base_model, evaluation, generation, report_page, training, world
from launch.demo import cache as cache_lib
from personacraft_jax import atomic_write
from personacraft_jax.eval import sample_folder

# What makes the world's data: the renderer, scenes, body model, prep and its config.
WORLD_SOURCES = ("data_prep", "configs/prep_synthetic.py", "launch/demo/world.py")


def _log(message: str) -> None:
    print(f"[demo] {message}", flush=True)


class _Clock:
    """Wall time per stage, logged as each ends."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._start, 1)
        self._start = now
        _log(f"{name}: {self.timings[name]:.1f} s")


def _world(cfg: ml_collections.ConfigDict, cache: pathlib.Path) -> dict[str, pathlib.Path]:
    """The rendered (unencoded) training and held-out sets, cached by their config and code."""
    settings = {"seed": cfg.seed, "resolution": cfg.resolution, "data": cfg.data.to_dict()}
    folder = cache / f"world_{cache_lib.cache_key(settings, WORLD_SOURCES)}"
    sets = {"data": folder / "data", "heldout": folder / "heldout"}
    _log(f"world: {cfg.data.train_examples} training + {cfg.data.heldout_examples} held-out scenes in {folder}")
    world.prepare(cfg, sets["data"], cfg.data.train_examples, cfg.seed)
    world.prepare(cfg, sets["heldout"], cfg.data.heldout_examples, cfg.seed + 1, preview=4, faces=True)
    return sets


def _fresh(path: pathlib.Path) -> pathlib.Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def run_demo(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """Runs every stage; writes and returns the metrics."""
    out = pathlib.Path(cfg.out_dir).expanduser().resolve()
    cache = pathlib.Path(cfg.cache_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()

    _log("1/6 the world: synthetic multi-person scenes through the real prep path")
    sets = _world(cfg, cache)
    clock.lap("world")

    _log("2/6 the base model: VAE + UNet from nothing (cached after the first run)")
    base = base_model.build_base(cfg, cache, sets, out, _log)
    clock.lap("base_model")

    _log(f"3/6 SCNet on the frozen base ({cfg.scnet.steps} steps)")
    export = out / "export"
    scnet_run = _fresh(out / "runs" / "scnet")
    scnet_history = training.run_training(
        training.train_config(cfg, "scnet", base.sdxl, base.data), scnet_run, "[demo] SCNet"
    )
    training.export_run(scnet_run, export)
    clock.lap("scnet")

    _log(f"4/6 OBEN with SCNet frozen ({cfg.oben.steps} steps, lambda_occ {cfg.oben.lambda_occ})")
    oben_run = _fresh(out / "runs" / "oben")
    oben_history = training.run_training(
        training.train_config(cfg, "oben", base.sdxl, base.data, export / "scnet"), oben_run, "[demo] OBEN"
    )
    training.export_run(oben_run, export)
    clock.lap("oben")

    _log("5/6 evaluation on generated pixels: person reader, layout, occlusion, body shape, launch.evaluate")
    train_scenes, heldout = world.read_scenes(base.data), world.read_scenes(base.heldout)
    reader, reader_validation, reader_history = evaluation.train_and_validate_reader(
        cfg, train_scenes, evaluation.vae_reconstructions(base.sdxl, train_scenes.images), heldout,
        evaluation.vae_reconstructions(base.sdxl, heldout.images), _log,
    )  # fmt: skip
    gen = generation.Generator(cfg, base.sdxl, export / "scnet", export / "oben")
    seeds = tuple(cfg.sample.seeds)
    layout = evaluation.layout_adherence(gen, reader, heldout, seeds)
    occlusion = evaluation.occlusion_boundaries(gen, reader, heldout, seeds, cfg)
    shape = evaluation.shape_control(gen, reader, cfg, seeds)
    from launch.demo.user_path import sample_and_evaluate

    user = sample_and_evaluate(
        cfg, heldout.examples[occlusion.metrics["scene_indices"][0]],
        {"sdxl": base.sdxl, "scnet": export / "scnet", "oben": export / "oben"},
        world.standin_face_root(cfg), world.standin_body_root(cfg), _fresh(out / "user_path"),
    )  # fmt: skip
    clock.lap("evaluation")

    metrics = {
        "reader_validation": reader_validation,
        "layout_adherence_iou": layout.metrics,
        "occlusion_boundary": occlusion.metrics,
        "shape_control": shape.metrics,
        "launch_evaluate": {"note": user["note"], "summary": user["summary"], "metrics": user["metrics"]},
        "targets": report_page.targets(
            layout.metrics, shape.metrics, reader_validation["heldout_photos"]["foreground_iou"], cfg.reader.min_iou
        ),
        "training": report_page.final_losses(base.history, scnet_history, oben_history, reader_history),
        "base_from_cache": base.cached,
        "timings_s": clock.timings,
    }
    _log("6/6 report")
    images = {**layout.images, **occlusion.images, **shape.images}
    report_page.write(out, cfg, metrics, images, heldout, occlusion.metrics["scene_indices"],
                      {"VAE": base.history["vae"], "base UNet": base.history["unet"], "SCNet": scnet_history,
                       "OBEN": oben_history, "person reader": reader_history}, user)  # fmt: skip
    clock.lap("report")
    metrics["timings_s"] = clock.timings
    atomic_write.write_json(out / "metrics.json", sample_folder.json_ready(metrics))
    _log(f"done in {sum(clock.timings.values()):.0f} s: open {out / 'report.html'}")
    return metrics
