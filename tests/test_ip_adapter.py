"""InstantID ip-adapter weights: safe file reading, diffusers' key numbering, strict mapping, and the UNet's
per-person masked IP attention against diffusers' `IPAdapterAttnProcessor2_0` (with `ip_adapter_masks`)."""

from __future__ import annotations

import pickle

import diffusers
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from flax import nnx

from personacraft_jax.convert import ip_adapter as ipa
from personacraft_jax.convert.safetensors_io import WeightFileError, write_safetensors
from personacraft_jax.convert.state_dict import StateDictMismatchError
from personacraft_jax.models import resampler as R
from personacraft_jax.models import unet as unet_lib
from tests.test_resampler import TorchResampler
from tests.tiny_diffusers import inputs, nchw, nhwc, randomize_torch, rel_err, torch_added

TOL = 1e-4
IP_SCALE = 0.6


class _NotATensor:
    """An arbitrary class: unpickling it would run project code, so weights_only must refuse it."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(torch UNet folder, torch UNet, ip-adapter weights as numpy) with the tiny InstantID-style Resampler."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("unet_ip")
    ref = randomize_torch(diffusers.UNet2DConditionModel(**unet_lib.preset("tiny")), seed=1)
    ref.save_pretrained(folder)
    cfg = R.preset("tiny")
    image_proj = {k: v.detach().numpy() for k, v in randomize_torch(TorchResampler(cfg), seed=2).state_dict().items()}
    names = [n for n in ref.attn_processors if n.endswith("attn2.processor")]
    gen = np.random.default_rng(3)
    widths = [ref.get_submodule(n.removesuffix(".processor")).to_k.out_features for n in names]
    ip = {}
    for k, width in enumerate(widths):
        for name in ("to_k_ip", "to_v_ip"):
            ip[f"{1 + 2 * k}.{name}.weight"] = (0.2 * gen.standard_normal((width, cfg.output_dim))).astype(np.float32)
    return folder, ref, {"image_proj": image_proj, "ip_adapter": ip}


def test_numbering_matches_diffusers_attn_processors(setup):
    folder, ref, weights = setup
    unet = ipa.load_unet_with_ip_adapter(folder, weights)
    names = list(ref.attn_processors)
    expected = [(i, n.removesuffix(".processor")) for i, n in enumerate(names) if n.endswith("attn2.processor")]
    assert [(1 + 2 * k, p) for k, p in enumerate(ipa.cross_attention_paths(unet))] == expected


def test_file_formats_are_read_safely(setup, tmp_path):
    _, _, weights = setup
    flat = {f"{part}.{k}": v for part in ipa.PARTS for k, v in weights[part].items()}
    write_safetensors(tmp_path / "ip.safetensors", flat)
    torch.save({p: {k: torch.from_numpy(v) for k, v in weights[p].items()} for p in ipa.PARTS}, tmp_path / "ip.bin")
    for name in ("ip.safetensors", "ip.bin"):
        back = ipa.read_ip_adapter_file(tmp_path / name)
        for part in ipa.PARTS:
            assert back[part].keys() == weights[part].keys()
            for k, v in weights[part].items():
                np.testing.assert_array_equal(back[part][k], v)
    write_safetensors(tmp_path / "bad.safetensors", {**flat, "other.x": np.zeros(2, np.float32)})
    with pytest.raises(WeightFileError, match=r"other\.x"):
        ipa.read_ip_adapter_file(tmp_path / "bad.safetensors")
    torch.save({"image_proj": {"latents": _NotATensor()}, "ip_adapter": {}}, tmp_path / "evil.bin")
    with pytest.raises(pickle.UnpicklingError):  # weights_only refuses arbitrary objects
        ipa.read_ip_adapter_file(tmp_path / "evil.bin")
    (tmp_path / "ip.pkl").write_bytes(b"x")
    with pytest.raises(WeightFileError, match="unknown ip-adapter file type"):
        ipa.read_ip_adapter_file(tmp_path / "ip.pkl")


def test_mapping_is_strict(setup):
    folder, _, weights = setup
    ip = weights["ip_adapter"]
    cases = {
        "missing": ({k: v for k, v in ip.items() if k != "3.to_v_ip.weight"}, "3.to_v_ip.weight"),
        "unexpected": ({**ip, "17.to_k_ip.weight": ip["1.to_k_ip.weight"]}, "17.to_k_ip.weight"),
        "misshaped": ({**ip, "1.to_k_ip.weight": np.zeros((3, 3), np.float32)}, "attn2.to_k_ip.weight"),
    }
    for kind, (state, named) in cases.items():
        with pytest.raises(StateDictMismatchError, match=named.replace(".", r"\.")) as info:
            ipa.load_unet_with_ip_adapter(folder, {**weights, "ip_adapter": state})
        assert getattr(info.value, kind), (kind, info.value)


def test_masked_multi_person_ip_attention_matches_diffusers(setup):
    """Two people, each with its own face tokens and region mask, through the whole tiny UNet."""
    folder, ref, weights = setup
    ref = diffusers.UNet2DConditionModel.from_pretrained(folder).eval()
    ref._load_ip_adapter_weights({p: {k: torch.from_numpy(v) for k, v in weights[p].items()} for p in ipa.PARTS})
    for proc in ref.attn_processors.values():
        if isinstance(proc, IPAdapterAttnProcessor2_0):
            proc.scale = [IP_SCALE]
    unet = ipa.load_unet_with_ip_adapter(folder, weights)
    resampler = R.load_resampler(weights["image_proj"])
    x = inputs(unet.config, seed=4, batch=1, size=8)
    rng = np.random.default_rng(5)
    faces = rng.standard_normal((1, 2, 1, 512)).astype(np.float32)
    # Masks on the 4x4 grid of the tiny UNet's attention layers (diffusers resizes bicubically: identity here).
    masks = np.zeros((1, 2, 4, 4), np.float32)
    masks[0, 0, :, :2] = 1.0
    masks[0, 1, 1:, 1:] = 1.0
    masks[0, 1, 0, 3] = 0.5
    with torch.no_grad():
        added = {**torch_added(x), "image_embeds": [torch.from_numpy(faces)]}
        expected = ref(
            nchw(x["sample"]),
            torch.from_numpy(x["timesteps"]),
            torch.from_numpy(x["encoder_hidden_states"]),
            added_cond_kwargs=added,
            cross_attention_kwargs={"ip_adapter_masks": [torch.from_numpy(masks)]},
        ).sample

    @nnx.jit
    def ours(unet, resampler, x, faces, regions):
        tokens = resampler(faces.reshape(2, 1, 512)).reshape(1, 2, -1, resampler.config.output_dim)
        return unet(**x, ip_tokens=tokens, ip_scale=IP_SCALE * regions)

    regions = np.repeat(np.repeat(np.moveaxis(masks, 1, -1), 2, axis=1), 2, axis=2)  # latent grid (1, 8, 8, 2)
    out = ours(unet, resampler, {k: jnp.asarray(v) for k, v in x.items()}, jnp.asarray(faces), jnp.asarray(regions))
    err = rel_err(out, nhwc(expected))
    print(f"masked two-person IP UNet vs diffusers: rel err {err:.2e}")
    assert err <= TOL
    no_ip = nnx.jit(lambda m, x: m(**x))(unet, {k: jnp.asarray(v) for k, v in x.items()})
    assert rel_err(no_ip, nhwc(expected)) > 1e-3  # the IP branch matters
