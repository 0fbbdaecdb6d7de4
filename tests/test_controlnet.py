"""ControlNetModel: residual parity with diffusers, from_unet (copy + zero residuals), export to diffusers,
config validation, and the SDXL parameter counts."""

from __future__ import annotations

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from personacraft_jax.convert import state_dict as sd
from personacraft_jax.convert.pretrained import abstract_rngs, load_pretrained, save_pretrained
from personacraft_jax.models import controlnet as cn_lib
from personacraft_jax.models import unet as unet_lib
from personacraft_jax.models.controlnet import COPIED_FROM_UNET, ControlNetConfig, ControlNetModel
from personacraft_jax.models.unet import UNet2DConditionModel, UNetConfig
from tests.tiny_diffusers import (
    inputs,
    jnp_tree,
    nchw,
    nhwc,
    randomize_flax,
    randomize_torch,
    rel_err,
    torch_added,
)

TOL = 1e-4
SIZE = 16  # latent side; the conditioning image is 8x that
COND_WIDTHS = tuple(cn_lib.preset("tiny").conditioning_embedding_out_channels)


@nnx.jit
def _controlnet(model, x, cond, scale):
    return model(**x, controlnet_cond=cond, conditioning_scale=scale)


@nnx.jit
def _unet(model, x, down=None, mid=None):
    return model(**x, down_block_additional_residuals=down, mid_block_additional_residual=mid)


def torch_controlnet(model, x, cond, scale) -> tuple[list[np.ndarray], np.ndarray]:
    with torch.no_grad():
        down, mid = model(
            nchw(x["sample"]),
            torch.from_numpy(x["timesteps"]),
            torch.from_numpy(x["encoder_hidden_states"]),
            controlnet_cond=nchw(cond),
            conditioning_scale=scale,
            added_cond_kwargs=torch_added(x),
            return_dict=False,
        )
    return [nhwc(d) for d in down], nhwc(mid)


def _cond(channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(2, 8 * SIZE, 8 * SIZE, channels)).astype(np.float32)


def _max_rel_err(flax_out, torch_out) -> float:
    (fd, fm), (td, tm) = flax_out, torch_out
    assert len(fd) == len(td)
    return max(rel_err(a, b) for a, b in zip([*fd, fm], [*td, tm]))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(torch ControlNet (random, 4 conditioning channels), the Flax one loaded from its folder, inputs, cond)."""
    torch.manual_seed(0)
    ref = randomize_torch(diffusers.ControlNetModel(**cn_lib.preset("tiny")), seed=5)
    folder = tmp_path_factory.mktemp("controlnet")
    ref.save_pretrained(folder)
    model = load_pretrained(ControlNetModel, folder)
    assert model.config.conditioning_channels == 4
    return ref, model, inputs(model.config, seed=6, size=SIZE), _cond(4, seed=7)


@pytest.mark.parametrize("scale", [0.7, 1.0])
def test_controlnet_residual_parity(loaded, scale):
    ref, model, x, cond = loaded
    out = _controlnet(model, jnp_tree(x), jnp.asarray(cond), scale)
    err = _max_rel_err(out, torch_controlnet(ref, x, cond, scale))
    print(f"controlnet scale={scale} max rel err over residuals {err:.2e}")
    assert err <= TOL


@pytest.fixture(scope="module")
def from_unet(tmp_path_factory):
    """A random torch UNet, its Flax import, and both libraries' `from_unet` ControlNets (4 channels)."""
    torch.manual_seed(0)
    unet_ref = randomize_torch(diffusers.UNet2DConditionModel(**unet_lib.preset("tiny")), seed=8)
    folder = tmp_path_factory.mktemp("unet_for_controlnet")
    unet_ref.save_pretrained(folder)
    unet = load_pretrained(UNet2DConditionModel, folder)
    cn_ref = diffusers.ControlNetModel.from_unet(
        unet_ref, conditioning_channels=4, conditioning_embedding_out_channels=COND_WIDTHS
    )
    cn = ControlNetModel.from_unet(
        unet, conditioning_channels=4, conditioning_embedding_out_channels=COND_WIDTHS, rngs=nnx.Rngs(0)
    )
    return unet, cn_ref, cn


def test_from_unet_copies_like_diffusers(from_unet):
    _, cn_ref, cn = from_unet
    assert ControlNetConfig.from_diffusers(dict(cn_ref.config)) == cn.config
    ours, theirs = sd.state_dict(cn), {k: v.numpy() for k, v in cn_ref.state_dict().items()}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    zero = ("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out.")
    copied = tuple(f"{name}." for name in COPIED_FROM_UNET)
    n_copied = n_zero = 0
    for key, value in ours.items():
        if key.startswith(copied):
            np.testing.assert_array_equal(value, theirs[key], err_msg=key)
            n_copied += 1
        elif key.startswith(zero):
            assert not value.any() and not theirs[key].any(), key
            n_zero += 1
    assert n_copied > 100 and n_zero == 2 * (len(cn.controlnet_down_blocks) + 1) + 2


def test_from_unet_residuals_are_zero_and_leave_the_unet_unchanged(from_unet):
    unet, _, cn = from_unet
    x = jnp_tree(inputs(unet.config, seed=9, size=SIZE))
    down, mid = _controlnet(cn, x, jnp.asarray(_cond(4, seed=10)), 1.0)
    assert all(not np.asarray(r).any() for r in [*down, mid])
    np.testing.assert_array_equal(_unet(unet, x, down, mid), _unet(unet, x))


def test_export_round_trip_to_diffusers(from_unet, tmp_path):
    """A Flax ControlNet with every parameter non-zero -> save_pretrained -> diffusers -> same residuals."""
    _, _, cn = from_unet
    model = randomize_flax(nnx.clone(cn), seed=11)
    assert all(np.asarray(v).any() for v in sd.state_dict(model).values())
    save_pretrained(model, tmp_path / "scnet")
    back = diffusers.ControlNetModel.from_pretrained(tmp_path / "scnet").eval()
    x, cond = inputs(model.config, seed=12, size=SIZE), _cond(4, seed=13)
    err = _max_rel_err(_controlnet(model, jnp_tree(x), jnp.asarray(cond), 0.7), torch_controlnet(back, x, cond, 0.7))
    print(f"controlnet export max rel err {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize(
    "key, value",
    [
        ("class_embed_type", "projection"),
        ("encoder_hid_dim_type", "text_proj"),
        ("resnet_time_scale_shift", "scale_shift"),
        ("upcast_attention", "yes"),
        ("act_fn", "tanh"),
        ("only_cross_attention", True),
        ("addition_embed_type", "text"),
        ("controlnet_conditioning_channel_order", "rgba"),
        ("not_a_diffusers_key", 0),
    ],
)
def test_config_validation_names_the_key(key, value):
    cfg = {**cn_lib.preset("tiny").to_dict(), "_class_name": "ControlNetModel", "_name_or_path": "x"}
    ControlNetConfig.from_diffusers(cfg)
    with pytest.raises(ValueError, match=key):
        ControlNetConfig.from_diffusers({**cfg, key: value})


def test_from_unet_config_follows_diffusers_for_ignored_unet_options():
    """upcast_attention is copied, resnet_out_scale_factor (read by no block type here) is not, act_fn is."""
    options = {"upcast_attention": True, "resnet_out_scale_factor": 2.0, "act_fn": "mish"}
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**{**unet_lib.preset("tiny"), **options})
        ref = diffusers.ControlNetModel.from_unet(
            unet, conditioning_channels=4, conditioning_embedding_out_channels=COND_WIDTHS, load_weights_from_unet=False
        )
    ours = ControlNetConfig.from_unet_config(
        UNetConfig.from_diffusers(dict(unet.config)), conditioning_channels=4,
        conditioning_embedding_out_channels=COND_WIDTHS,
    )  # fmt: skip
    assert ControlNetConfig.from_diffusers(dict(ref.config)) == ours
    assert ours.upcast_attention is True and ours.act_fn == "mish"


@pytest.mark.parametrize("channels, expected", [(3, 1_251_014_160), (4, 1_251_014_304)])
def test_sdxl_from_unet_parameter_count_matches_diffusers(channels, expected):
    cfg = unet_lib.preset("sdxl")
    with torch.device("meta"):
        ref = diffusers.ControlNetModel.from_unet(
            diffusers.UNet2DConditionModel(**cfg), conditioning_channels=channels, load_weights_from_unet=False
        )
        from_preset = diffusers.ControlNetModel(**cn_lib.preset("sdxl", conditioning_channels=channels))
    count_ref = sum(p.numel() for p in ref.parameters())
    assert count_ref == expected
    assert sum(p.numel() for p in from_preset.parameters()) == count_ref

    def build():
        unet = UNet2DConditionModel(UNetConfig.from_diffusers(cfg), rngs=abstract_rngs())
        return ControlNetModel.from_unet(unet, conditioning_channels=channels, rngs=abstract_rngs(1))

    abstract = nnx.eval_shape(build)
    assert ControlNetConfig.from_diffusers(dict(ref.config)) == abstract.config
    assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(abstract, nnx.Param))) == count_ref
