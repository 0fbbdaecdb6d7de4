"""UNet2DConditionModel: parity with diffusers (two tiny configs), residual inputs, export, strict import,
config validation, the IP-Adapter seam, and the SDXL parameter count."""

from __future__ import annotations

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from personacraft_jax.convert import state_dict as sd
from personacraft_jax.convert.pretrained import abstract_rngs, load_pretrained, save_pretrained
from personacraft_jax.convert.state_dict import StateDictMismatchError
from personacraft_jax.models import unet as unet_lib
from personacraft_jax.models.layers import Precision
from personacraft_jax.models.unet import UNet2DConditionModel, UNetConfig
from personacraft_jax.models.unet_blocks import Attention
from tests.tiny_diffusers import (
    UNET_CONFIGS,
    inputs,
    jnp_tree,
    nchw,
    nhwc,
    randomize_torch,
    rel_err,
    skip_shapes,
    torch_added,
)

TOL = 1e-4


@nnx.jit
def _unet(model, x, down=None, mid=None):
    return model(**x, down_block_additional_residuals=down, mid_block_additional_residual=mid)


def torch_unet(model, x, down=None, mid=None) -> np.ndarray:
    with torch.no_grad():
        out = model(
            nchw(x["sample"]),
            torch.from_numpy(x["timesteps"]),
            torch.from_numpy(x["encoder_hidden_states"]),
            added_cond_kwargs=torch_added(x),
            down_block_additional_residuals=None if down is None else tuple(nchw(r) for r in down),
            mid_block_additional_residual=None if mid is None else nchw(mid),
        ).sample
    return nhwc(out)


@pytest.fixture(scope="module", params=sorted(UNET_CONFIGS))
def pair(request, tmp_path_factory):
    """(name, torch UNet, folder, Flax UNet loaded from the folder, inputs) for one tiny config."""
    name = request.param
    torch.manual_seed(0)
    ref = randomize_torch(diffusers.UNet2DConditionModel(**UNET_CONFIGS[name]), seed=1)
    folder = tmp_path_factory.mktemp(f"unet_{name}")
    ref.save_pretrained(folder)
    model = load_pretrained(UNet2DConditionModel, folder)
    return name, ref, folder, model, inputs(model.config, seed=2)


def test_unet_parity(pair):
    name, ref, _, model, x = pair
    err = rel_err(_unet(model, jnp_tree(x)), torch_unet(ref, x))
    print(f"unet[{name}] rel err {err:.2e}")
    assert err <= TOL


def test_unet_parity_with_controlnet_residuals(pair):
    name, ref, _, model, x = pair
    rng = np.random.default_rng(3)
    shapes, mid_shape = skip_shapes(model.config, *x["sample"].shape[:2])
    down = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    mid = rng.standard_normal(mid_shape).astype(np.float32)
    expected = torch_unet(ref, x, down, mid)
    out = _unet(model, jnp_tree(x), jnp_tree(down), jnp.asarray(mid))
    err = rel_err(out, expected)
    print(f"unet[{name}] + residuals rel err {err:.2e}")
    assert err <= TOL
    assert rel_err(expected, torch_unet(ref, x)) > 1e-2  # the residuals matter


def test_unet_export_round_trip(pair, tmp_path):
    name, _, _, model, x = pair
    save_pretrained(model, tmp_path / "out")
    back = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "out").eval()
    err = rel_err(_unet(model, jnp_tree(x)), torch_unet(back, x))
    print(f"unet[{name}] export rel err {err:.2e}")
    assert err <= TOL


def _abstract(cfg: UNetConfig) -> UNet2DConditionModel:
    return nnx.eval_shape(lambda: UNet2DConditionModel(cfg, rngs=abstract_rngs()))


def test_strict_import_names_the_key(pair):
    _, ref, _, model, _ = pair
    tensors = {k: v.numpy() for k, v in ref.state_dict().items()}
    key = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    cases = {
        "missing": {k: v for k, v in tensors.items() if k != key},
        "unexpected": {**tensors, "mid_block.extra.weight": np.zeros(3, np.float32)},
        "misshaped": {**tensors, key: np.zeros((3, 3), np.float32)},
    }
    for kind, state in cases.items():
        with pytest.raises(StateDictMismatchError) as info:
            sd.load_state_dict(_abstract(model.config), state, source=kind)
        named = "mid_block.extra.weight" if kind == "unexpected" else key
        assert [k.split(":")[0] for k in getattr(info.value, kind)] == [named], (kind, info.value)
        assert named in str(info.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("class_embed_type", "timestep"),
        ("encoder_hid_dim_type", "text_proj"),
        ("time_embedding_type", "fourier"),
        ("resnet_time_scale_shift", "scale_shift"),
        ("attention_type", "gated"),
        ("dual_cross_attention", True),
        ("only_cross_attention", [True, False]),
        ("num_attention_heads", [1, 2]),
        ("addition_embed_type", "text_image"),
        ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
        ("down_block_types", ["AttnDownBlock2D", "CrossAttnDownBlock2D"]),
        # The blocks that read resnet_out_scale_factor / resnet_skip_time_act / cross_attention_norm are refused.
        ("down_block_types", ["ResnetDownsampleBlock2D", "CrossAttnDownBlock2D"]),
        ("up_block_types", ["SimpleCrossAttnUpBlock2D", "UpBlock2D"]),
        ("act_fn", "tanh"),
        ("act_fn", None),
        ("dropout", 1.5),
        ("cross_attention_norm", "batch_norm"),
        ("upcast_attention", "yes"),
        ("not_a_diffusers_key", 1),
    ],
)
def test_config_validation_names_the_key(key, value):
    cfg = {**unet_lib.preset("tiny").to_dict(), "_class_name": "UNet2DConditionModel", "_diffusers_version": "x"}
    UNetConfig.from_diffusers(cfg)  # '_' keys are ignored
    with pytest.raises(ValueError, match=key):
        UNetConfig.from_diffusers({**cfg, key: value})


# diffusers options this UNet must follow: read nowhere in its block types (`ignored`: the same weights give the
# same outputs in diffusers with and without them) or changing the activations.
_IGNORED_OPTIONS = {
    "resnet_out_scale_factor": {"resnet_out_scale_factor": 2.0},
    "no_op_options": {
        "upcast_attention": True,
        "mid_block_only_cross_attention": True,
        "dropout": 0.1,
        "cross_attention_norm": "layer_norm",
        "resnet_skip_time_act": True,
    },
}
_ACTIVATION_OPTIONS = {"mish": {"act_fn": "mish"}, "relu": {"act_fn": "ReLU"}}


@pytest.mark.parametrize("name", sorted({**_IGNORED_OPTIONS, **_ACTIVATION_OPTIONS}))
def test_diffusers_options_match_diffusers(name, tmp_path):
    options = {**_IGNORED_OPTIONS, **_ACTIVATION_OPTIONS}[name]
    torch.manual_seed(0)
    ref = randomize_torch(diffusers.UNet2DConditionModel(**{**unet_lib.preset("tiny"), **options}), seed=1)
    ref.save_pretrained(tmp_path)
    model = load_pretrained(UNet2DConditionModel, tmp_path)
    x = inputs(model.config, seed=2, size=16)
    expected = torch_unet(ref, x)
    err = rel_err(_unet(model, jnp_tree(x)), expected)
    print(f"unet with {options}: rel err {err:.2e}")
    assert err <= TOL
    plain = diffusers.UNet2DConditionModel(**unet_lib.preset("tiny")).eval()
    plain.load_state_dict(ref.state_dict())  # strict: the options change no weight
    if name in _IGNORED_OPTIONS:
        np.testing.assert_array_equal(torch_unet(plain, x), expected)  # ... and, in diffusers, no output
    else:
        assert rel_err(torch_unet(plain, x), expected) > 1e-2
    assert UNetConfig.from_diffusers(model.config.to_diffusers()) == model.config


def test_pretrained_config_builds_the_same_diffusers_model():
    cfg = UNetConfig.from_diffusers(unet_lib.preset("tiny"))
    assert UNetConfig.from_diffusers(cfg.to_diffusers()) == cfg
    a = diffusers.UNet2DConditionModel.from_config(cfg.to_diffusers())
    b = diffusers.UNet2DConditionModel(**unet_lib.preset("tiny"))
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_ip_adapter_attention_matches_hand_written_torch():
    """out = to_out(Attn(q, K, V) + s * Attn(q, K_ip, V_ip)), checked against F.scaled_dot_product_attention."""
    dim, heads, cross, scale = 16, 2, 24, 0.8
    attn = Attention(dim, heads, dim // heads, Precision(), nnx.Rngs(0), cross_attention_dim=cross, ip_adapter=True)
    rng = np.random.default_rng(0)
    x, ctx, ip = (rng.standard_normal(s).astype(np.float32) for s in [(2, 9, dim), (2, 5, cross), (2, 4, cross)])
    out = attn(jnp.asarray(x), jnp.asarray(ctx), ip_tokens=jnp.asarray(ip), ip_scale=scale)
    w = {k: torch.from_numpy(v) for k, v in sd.state_dict(attn).items()}

    def mha(q, k, v):
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
        return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)

    tx, tc, ti = map(torch.from_numpy, (x, ctx, ip))
    q = tx @ w["to_q.weight"].T
    hidden = mha(q, tc @ w["to_k.weight"].T, tc @ w["to_v.weight"].T)
    hidden = hidden + scale * mha(q, ti @ w["to_k_ip.weight"].T, ti @ w["to_v_ip.weight"].T)
    expected = hidden @ w["to_out.0.weight"].T + w["to_out.0.bias"]
    assert set(w) == {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias",
                      "to_k_ip.weight", "to_v_ip.weight"}  # fmt: skip
    err = rel_err(out, expected.numpy())
    print(f"ip-adapter attention rel err {err:.2e}")
    assert err <= TOL
    no_ip = attn(jnp.asarray(x), jnp.asarray(ctx))
    assert rel_err(no_ip, out) > 1e-3


def test_unet_ip_tokens_change_only_with_the_ip_branch():
    cfg = UNetConfig.from_diffusers(unet_lib.preset("tiny"))
    model = UNet2DConditionModel(cfg, rngs=nnx.Rngs(0), ip_adapter_tokens=3)
    assert any("to_k_ip" in k for k in sd.expected_keys(model))
    x = jnp_tree(inputs(cfg, seed=4, size=8))
    ip = jax.random.normal(jax.random.key(0), (2, 3, cfg.cross_attention_dims[0]))
    call = nnx.jit(lambda m, x, ip, s: m(**x, ip_tokens=ip, ip_scale=s))
    base, with_ip = call(model, x, ip, 0.0), call(model, x, ip, 1.0)
    np.testing.assert_array_equal(base, call(model, x, 0 * ip, 1.0))
    assert rel_err(with_ip, base) > 1e-4
    with pytest.raises(ValueError, match="ip_tokens shape"):
        model(**x, ip_tokens=ip[:, :2])


def test_sdxl_parameter_count_matches_diffusers():
    cfg = unet_lib.preset("sdxl")
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**cfg)
    expected = sum(p.numel() for p in ref.parameters())
    assert UNetConfig.from_diffusers(dict(ref.config)) == UNetConfig.from_diffusers(cfg)  # every key diffusers writes
    abstract = nnx.eval_shape(lambda: UNet2DConditionModel(UNetConfig.from_diffusers(cfg), rngs=abstract_rngs()))
    count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert expected == 2_567_463_684
    assert count == expected


def _load_block(block, ref: torch.nn.Module):
    """Fills an NNX block strictly from a torch module's state dict."""
    graphdef, state = nnx.split(block)
    abstract = nnx.merge(graphdef, jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state))
    return sd.load_state_dict(abstract, {k: v.numpy() for k, v in ref.state_dict().items()}, source="torch")


def _shrink_norms_and_biases(model: torch.nn.Module) -> torch.nn.Module:
    """Norm affines and biases x 1e-3: activations stay ~1e-3 everywhere, so every norm's eps matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.mul_(1e-3)
    return model


def test_blocks_match_diffusers_on_low_variance_inputs():
    """Low-variance activations make every eps matter (GroupNorm 1e-6, LayerNorm 1e-5, resnet norm_eps).

    The Transformer2DModel is compared without its skip (out - x), which would otherwise dominate.
    """
    from diffusers.models.resnet import ResnetBlock2D as TorchResnet
    from diffusers.models.transformers.transformer_2d import Transformer2DModel as TorchTransformer

    from personacraft_jax.models.unet_blocks import AttnSettings, ResnetBlock2D, ResnetSettings, Transformer2DModel

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = (1e-3 * rng.standard_normal((2, 4, 4, 16))).astype(np.float32)
    ctx = rng.standard_normal((2, 5, 24)).astype(np.float32)
    temb = (1e-3 * rng.standard_normal((2, 32))).astype(np.float32)
    ref_t = TorchTransformer(
        2, 8, in_channels=16, cross_attention_dim=24, norm_num_groups=8, use_linear_projection=True
    )
    ref_t = _shrink_norms_and_biases(randomize_torch(ref_t, seed=0, std=0.01))
    ours_t = _load_block(Transformer2DModel(16, 1, AttnSettings(2, 24), 8, Precision(), nnx.Rngs(0)), ref_t)
    with torch.no_grad():
        expected = nhwc(ref_t(nchw(x), encoder_hidden_states=torch.from_numpy(ctx)).sample)
    err_t = rel_err(ours_t(jnp.asarray(x), jnp.asarray(ctx)) - x, expected - x)
    ref_r = TorchResnet(in_channels=16, out_channels=8, temb_channels=32, groups=4, eps=1e-5)
    ref_r = _shrink_norms_and_biases(randomize_torch(ref_r, seed=1, std=0.01))
    ours_r = _load_block(ResnetBlock2D(16, 8, ResnetSettings(32, 1e-5, 4), Precision(), nnx.Rngs(0)), ref_r)
    with torch.no_grad():
        expected = nhwc(ref_r(nchw(x), torch.from_numpy(temb)))
    err_r = rel_err(ours_r(jnp.asarray(x), jnp.asarray(temb)), expected)
    print(f"low-variance blocks rel err: transformer {err_t:.2e}, resnet {err_r:.2e}")
    assert err_t <= TOL and err_r <= TOL


@pytest.mark.parametrize("src, dst", [((5, 7), (10, 14)), ((5, 7), (9, 13)), ((4, 4), (7, 9))])
def test_nearest_resize_matches_torch(src, dst):
    from personacraft_jax.models.unet_blocks import nearest_resize

    x = np.random.default_rng(0).standard_normal((1, *src, 3)).astype(np.float32)
    expected = nhwc(F.interpolate(nchw(x), size=dst, mode="nearest"))
    np.testing.assert_array_equal(nearest_resize(jnp.asarray(x), dst), expected)
