"""Training the UNet itself (`train.trainable=('unet',)`, no ControlNet): the same sharding, exact resume, NaN
policy and metrics as SCNet training, and export as a whole SDXL folder that diffusers loads.

The tiny UNet preset starts from its random initialisation (base training from nothing, as the demo does).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from personacraft_jax.train import trainer as trainer_lib
from tests import train_fixtures as fx

SOURCE = [fx.example(i) for i in range(8)]


def _config(**mesh):
    c = fx.config(**mesh)
    c.train.trainable = ("unet",)
    c.model.use_scnet = False
    return c


def _trainer(workdir, cfg=None, devices=None, source=SOURCE):
    return trainer_lib.Trainer(cfg or _config(), workdir, source=source, empty_prompt=fx.empty_prompt(),
                               devices=devices)  # fmt: skip


def _params(trainer) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(trainer.state.params)]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Four steps without interruption on the (data=2, fsdp=4) mesh; its workdir."""
    workdir = tmp_path_factory.mktemp("unet_straight")
    trainer = _trainer(workdir)
    history = trainer.train(4)
    params = _params(trainer)
    trainer.close()
    return history, params, workdir


def test_unet_run_trains_only_the_unet(straight_run):
    history, _, workdir = straight_run
    trainer = _trainer(workdir.parent / "inspect")
    assert set(trainer.state.params) == {"unet"} and set(trainer.nets.graphdefs) == {"unet"}
    assert set(trainer.frozen) == set()  # nothing frozen: no ControlNet in a base run
    trainer.close()
    assert history[0]["loss"] != history[-1]["loss"]
    assert all(np.isfinite(r["grad_norm/unet"]) and r["finite"] == 1.0 for r in history)


def test_unet_sharded_step_equals_single_device_step(straight_run, tmp_path):
    history, _, _ = straight_run
    single = _trainer(tmp_path, _config(data=1, fsdp=1), devices=jax.devices()[:1])
    single_history = single.train(2)
    single.close()
    for sharded, one in zip(history[:2], single_history, strict=False):
        np.testing.assert_allclose(sharded["loss"], one["loss"], rtol=1e-5)
        np.testing.assert_allclose(sharded["grad_norm"], one["grad_norm"], rtol=1e-4)


def test_unet_resume_is_exact(straight_run, tmp_path):
    history, params, _ = straight_run
    first = _trainer(tmp_path)
    first.train(2)
    first.close()
    resumed = _trainer(tmp_path)
    assert resumed.step == 2
    resumed_history = resumed.train(2)
    resumed.close()
    np.testing.assert_array_equal([r["loss"] for r in resumed_history], [r["loss"] for r in history[2:4]])
    for a, b in zip(_params(resumed), params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_unet_non_finite_update_is_skipped(tmp_path):
    bad = [dict(e, latent_mean=np.full_like(e["latent_mean"], np.nan)) for e in SOURCE]
    trainer = _trainer(tmp_path, source=bad)
    before = _params(trainer)
    history = trainer.train(1)
    after = _params(trainer)
    trainer.close()
    assert history[0]["finite"] == 0.0
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_frozen_scnet_without_folder_names_use_scnet(tmp_path):
    cfg = _config()
    cfg.model.use_scnet = True
    with pytest.raises(ValueError, match="use_scnet=False"):
        _trainer(tmp_path, cfg)


def test_export_writes_an_sdxl_folder_diffusers_loads(straight_run, tmp_path):
    """launch.export's path: the trained UNet in a whole SDXL folder; diffusers' pipeline loads it and its UNet
    gives the trained Flax UNet's outputs."""
    from diffusers import StableDiffusionXLPipeline

    from data_prep.standin_sdxl import write_standin_sdxl
    from personacraft_jax.train import export

    _, _, workdir = straight_run
    nets = export.restore_trained_nets(export.load_run_config(workdir), workdir)
    assert set(nets) == {"unet"}
    base = write_standin_sdxl(tmp_path / "base", 0)
    folder = export.export_sdxl(nets, base, tmp_path / "out" / "sdxl")
    with pytest.raises(FileExistsError):
        export.export_sdxl(nets, base, folder)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), local_files_only=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
    context = rng.normal(size=(2, fx.TEXT_TOKENS, fx.TEXT_DIM)).astype(np.float32)
    pooled = rng.normal(size=(2, fx.POOLED_DIM)).astype(np.float32)
    time_ids = np.tile(np.array([32, 32, 0, 0, 32, 32], np.float32), (2, 1))
    t = np.array([10, 500])
    ours = np.asarray(nets["unet"](x, t, context, pooled, time_ids))
    with torch.no_grad():
        theirs = pipe.unet(
            torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(context),
            added_cond_kwargs={"text_embeds": torch.from_numpy(pooled), "time_ids": torch.from_numpy(time_ids)},
        ).sample.permute(0, 2, 3, 1).numpy()  # fmt: skip
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) <= 1e-4
    # The rest of the folder is the base's, unchanged.
    assert (folder / "vae" / "config.json").read_text() == (base / "vae" / "config.json").read_text()
    assert not np.allclose(
        pipe.unet.conv_in.weight.detach().numpy(),
        StableDiffusionXLPipeline.from_pretrained(str(base), local_files_only=True)
        .unet.conv_in.weight.detach()
        .numpy(),
    )
