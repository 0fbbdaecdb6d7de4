"""AutoencoderKL parity with diffusers (tiny random weights, fp32) and the strict two-way weight bridge."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchVAE
from flax import nnx
from safetensors.numpy import load_file, save_file

from personacraft_jax.convert import state_dict as sd
from personacraft_jax.convert.pretrained import load_pretrained, save_pretrained
from personacraft_jax.models import vae as vae_lib
from personacraft_jax.models.layers import Precision

TOL = 1e-4
WEIGHTS = "diffusion_pytorch_model.safetensors"


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def randomise(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Adds seeded normal noise to every parameter (norm scales and biases included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


@nnx.jit
def _encode(model, x):
    return model.encode(x)


@nnx.jit
def _decode(model, z):
    return model.decode(z)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Torch reference, its folder, the Flax import, inputs (non-square: catches H/W mix-ups) and outputs."""
    torch.manual_seed(0)
    ref = randomise(TorchVAE(**vae_lib.preset("tiny")), seed=0)
    folder = tmp_path_factory.mktemp("vae_src")
    ref.save_pretrained(folder)
    model = load_pretrained(vae_lib.AutoencoderKL, folder)
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
    z = rng.normal(size=(2, 8, 12, 4)).astype(np.float32)
    mean, logvar = _encode(model, x)
    with torch.no_grad():
        dist = ref.encode(nchw(x)).latent_dist
        ref_out = {"mean": nhwc(dist.mean), "logvar": nhwc(dist.logvar), "decode": nhwc(ref.decode(nchw(z)).sample)}
    out = {"mean": np.asarray(mean), "logvar": np.asarray(logvar), "decode": np.asarray(_decode(model, z))}
    return dict(ref=ref, folder=folder, model=model, x=x, z=z, out=out, ref_out=ref_out)


@pytest.mark.parametrize("name", ["mean", "logvar", "decode"])
def test_parity_with_diffusers(case, name):
    assert case["out"][name].shape == case["ref_out"][name].shape
    err = rel_err(case["out"][name], case["ref_out"][name])
    print(f"vae {name} rel err {err:.2e}")
    assert err <= TOL


def test_scaling_factor_and_config(case):
    model = case["model"]
    assert model.scaling_factor == pytest.approx(0.13025)
    assert model.shift_factor == 0.0
    assert model.config.downsample_factor == 2


def test_export_round_trip(case, tmp_path):
    """Flax -> save_pretrained -> diffusers.from_pretrained gives the Flax outputs."""
    save_pretrained(case["model"], tmp_path / "vae")
    back = TorchVAE.from_pretrained(tmp_path / "vae").eval()
    with torch.no_grad():
        mean = nhwc(back.encode(nchw(case["x"])).latent_dist.mean)
        decoded = nhwc(back.decode(nchw(case["z"])).sample)
    assert rel_err(mean, case["out"]["mean"]) <= TOL
    assert rel_err(decoded, case["out"]["decode"]) <= TOL


def _write(folder, src, tensors):
    folder.mkdir()
    (folder / "config.json").write_text((src / "config.json").read_text())
    save_file(tensors, str(folder / WEIGHTS))
    return folder


def test_legacy_attention_names_load(case, tmp_path):
    tensors = load_file(str(case["folder"] / WEIGHTS))
    legacy = {}
    for key, value in tensors.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[key] = value
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in legacy
    assert "decoder.mid_block.attentions.0.query.bias" in legacy
    model = load_pretrained(vae_lib.AutoencoderKL, _write(tmp_path / "legacy", case["folder"], legacy))
    ours, theirs = sd.state_dict(model), sd.state_dict(case["model"])
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_rename_source_key():
    rename = vae_lib.AutoencoderKL.rename_source_key
    assert rename("decoder.mid_block.attentions.0.proj_attn.weight") == "decoder.mid_block.attentions.0.to_out.0.weight"
    assert rename("encoder.mid_block.attentions.0.key.bias") == "encoder.mid_block.attentions.0.to_k.bias"
    assert rename("encoder.down_blocks.0.resnets.0.conv1.weight") == "encoder.down_blocks.0.resnets.0.conv1.weight"


@pytest.mark.parametrize("kind", ["missing", "unexpected", "misshaped"])
def test_strict_import_errors(case, tmp_path, kind):
    tensors = load_file(str(case["folder"] / WEIGHTS))
    key = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
    assert key in tensors
    if kind == "missing":
        del tensors[key]
    elif kind == "unexpected":
        key = "decoder.up_blocks.1.resnets.0.extra.weight"
        tensors[key] = np.zeros((3,), np.float32)
    else:
        tensors[key] = tensors[key][:, :-1]
    folder = _write(tmp_path / kind, case["folder"], tensors)
    with pytest.raises(sd.StateDictMismatchError) as info:
        load_pretrained(vae_lib.AutoencoderKL, folder)
    assert key in str(info.value)
    assert key in getattr(info.value, kind)[0]


@pytest.mark.parametrize(
    "overrides", [{"mid_block_add_attention": False}, {"use_quant_conv": False, "use_post_quant_conv": False}]
)
def test_optional_parts_match_diffusers_keys(overrides):
    cfg = dict(vae_lib.preset("tiny"), **overrides)
    model = nnx.eval_shape(
        lambda: vae_lib.AutoencoderKL(vae_lib.AutoencoderKLConfig(**cfg), Precision(), rngs=nnx.Rngs(0))
    )
    with torch.device("meta"):
        ref = TorchVAE(**cfg)
    assert sd.expected_keys(model) == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize(
    "key, value",
    [
        ("act_fn", "mish"),
        ("down_block_types", ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
        ("norm_num_groups", 3),
        ("not_a_field", 1),
    ],
)
def test_config_validation_names_the_key(key, value):
    cfg = {"_class_name": "AutoencoderKL", **vae_lib.preset("tiny"), key: value}
    with pytest.raises(ValueError, match=key):
        vae_lib.AutoencoderKL.config_from_pretrained(cfg)


def test_sdxl_parameter_count():
    cfg = vae_lib.AutoencoderKLConfig(**vae_lib.preset("sdxl"))
    model = nnx.eval_shape(lambda: vae_lib.AutoencoderKL(cfg, Precision(), rngs=nnx.Rngs(0)))
    with torch.device("meta"):
        ref = TorchVAE(**vae_lib.preset("sdxl"))
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert sd.expected_keys(model) == expected
    ours = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert ours == sum(p.numel() for p in ref.parameters())
