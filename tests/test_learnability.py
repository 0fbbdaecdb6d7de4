"""Learnability: a scaled-down demo world must learn to put generated people where the 3D conditioning says.

The demo's stages at 32 x 32 pixels (8 x 8 latents): scenes through the prep path, a base model trained
from nothing (VAE, then the UNet with the Trainer), SCNet trained on the frozen base through the shards and
the grain loader, then held-out scenes generated with the jitted sampler and read by a person reader trained
on the training photos. SCNet's input at sampling time is derived from the rendered maps by an encoding
written here from DESIGN section 4, independently of the library's, so the test fails when the conditioning
path is broken anywhere the two disagree (maps flipped or transposed relative to the latents, channels
swapped or mis-scaled in the training inputs, residuals that do not reach the UNet): the generated
foreground must then match its own scene's silhouettes no better than another scene's. Channel order is
checked on the training inputs directly (`_assert_training_inputs_follow_design`): a permutation of
channels that are all zero on the background leaves every silhouette in place.
"""

from __future__ import annotations

import numpy as np

from configs import demo


def design_scnet_input(depth: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """DESIGN section 4: channel 0 = 1 - (z - zmin) / (zmax - zmin) over the foreground (near = bright,
    background 0); channels 1-3 = the normal map's RGB / 255."""
    z = np.asarray(depth, np.float64)
    fg = z > 0
    near_bright = np.zeros_like(z)
    if fg.any():
        lo, hi = z[fg].min(), z[fg].max()
        near_bright[fg] = 1.0 - (z[fg] - lo) / (hi - lo) if hi > lo else 1.0
    return np.dstack([near_bright, np.asarray(normal, np.float64) / 255.0]).astype(np.float32)


def _assert_training_inputs_follow_design(data_dir, latent_factor: int) -> None:
    """The SCNet input the training loader derives from stored examples is the DESIGN encoding, pixel for
    pixel and channel for channel. The generated layout alone cannot see a channel permutation (every channel
    is 0 on the background, so each one carries the silhouette); this check does."""
    from data_prep import dataset
    from personacraft_jax.data import loader

    inputs = loader.TrainingInputs(loader.InputOptions(control_nets=("scnet",), latent_factor=latent_factor))
    stored = dataset.open_split(data_dir)
    for i in range(4):
        element = stored[i]
        got = inputs.random_map(element, np.random.default_rng(i))["scnet_cond"]
        want = design_scnet_input(element["depth"], element["normal"])
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"example {i}: SCNet input is not DESIGN's")


def _config(tmp_path):
    cfg = demo.get_config()
    cfg.out_dir, cfg.cache_dir = str(tmp_path / "out"), str(tmp_path / "cache")
    cfg.resolution = 32
    cfg.data.update(train_examples=160, heldout_examples=16)
    cfg.vae.update(steps=150, crop_size=16)
    cfg.base.steps = 150
    cfg.scnet.steps = 200
    cfg.reader.update(steps=200, min_iou=0.6)  # a guard: the assertions compare scenes read by one reader
    cfg.sample.update(steps=10, scenes=16, seeds=(0,))
    return cfg


def test_scnet_makes_the_generator_follow_the_geometry(tmp_path):
    import pathlib

    from launch.demo import base_model, evaluation, generation, training, world

    cfg = _config(tmp_path)
    out, cache = pathlib.Path(cfg.out_dir), pathlib.Path(cfg.cache_dir)
    sets = {"data": cache / "data", "heldout": cache / "heldout"}
    world.prepare(cfg, sets["data"], cfg.data.train_examples, cfg.seed)
    world.prepare(cfg, sets["heldout"], cfg.data.heldout_examples, cfg.seed + 1)
    base = base_model.build_base(cfg, cache, sets, out, print)
    run = out / "runs" / "scnet"
    training.run_training(training.train_config(cfg, "scnet", base.sdxl, base.data), run, "scnet")
    training.export_run(run, out / "export")

    _assert_training_inputs_follow_design(base.data, cfg.latent_factor)

    train, heldout = world.read_scenes(base.data), world.read_scenes(base.heldout)
    reader, validation, _ = evaluation.train_and_validate_reader(
        cfg, train, evaluation.vae_reconstructions(base.sdxl, train.images), heldout,
        evaluation.vae_reconstructions(base.sdxl, heldout.images), print,
    )  # fmt: skip
    assert validation["heldout_photos"]["foreground_iou"] >= cfg.reader.min_iou, validation
    gen = generation.Generator(cfg, base.sdxl, out / "export" / "scnet", scnet_encoding=design_scnet_input)
    iou = evaluation.layout_adherence(gen, reader, heldout, cfg.sample.seeds).metrics
    own, other = iou["base_scnet"]["mean"], iou["base_scnet_other_conditioning"]["mean"]
    followed = iou["other_conditioning_vs_that_scene"]["mean"]
    print(f"IoU own scene {own:.3f}, other scene's conditioning {other:.3f} (vs that scene {followed:.3f}), "
          f"base {iou['base']['mean']:.3f}")  # fmt: skip
    # At 32 x 32 (8 x 8 latents) a correct path measured own 0.20, other 0.11, base 0.10, followed 0.23;
    # with the training maps mirrored, own and followed fall to the level of other and base.
    assert own >= 1.5 * max(other, iou["base"]["mean"]), iou
    assert followed >= 1.5 * other, iou
