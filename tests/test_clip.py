"""CLIP text encoders: parity with transformers (tiny random weights, fp32), pooling, bridge both ways."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from personacraft_jax.convert import state_dict as sd
from personacraft_jax.convert.pretrained import load_pretrained, save_pretrained
from personacraft_jax.models import clip
from personacraft_jax.models.layers import Precision
from personacraft_jax.models.text_conditioning import sdxl_text_embeddings

TOL = 1e-4
T = 77
EOS_1 = 63  # encoder 1 keeps SDXL's legacy eos_token_id=2: pooling at argmax(ids), the real EOS is the largest id.
EOS_2 = 50  # encoder 2 uses a modern eos_token_id that is NOT the largest id: pooling at its first occurrence.
EOS_POSITIONS = (3, 40, 76)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def make_ids(seed: int, eos: int, pad: int) -> np.ndarray:
    """(3, 77) ids: random tokens (some larger than eos), eos at EOS_POSITIONS per row, then `pad`."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, 62, size=(len(EOS_POSITIONS), T))
    ids[ids == eos] = 5
    for row, pos in enumerate(EOS_POSITIONS):
        ids[row, pos] = eos
        ids[row, pos + 1 :] = pad
    return ids.astype(np.int32)


def randomise(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Adds seeded normal noise to every parameter (LayerNorm scales and biases included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


def torch_outputs(model, ids: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True)
    res = {"last": out.last_hidden_state.numpy(), "penultimate": out.hidden_states[-2].numpy()}
    res["n_hidden"] = len(out.hidden_states)
    if hasattr(out, "text_embeds"):
        res["text_embeds"] = out.text_embeds.numpy()
    else:
        res["pooled"] = out.pooler_output.numpy()
    return res


@nnx.jit
def _run(model, ids):
    return model(ids)


def flax_outputs(model, ids) -> dict[str, np.ndarray]:
    out = _run(model, ids)
    res = {"last": out.last_hidden_state, "penultimate": out.hidden_states[-2], "pooled": out.pooler_output}
    if out.text_embeds is not None:
        res["text_embeds"] = out.text_embeds
    res = {k: np.asarray(v) for k, v in res.items()}
    res["n_hidden"] = len(out.hidden_states)
    return res


def _build(tmp_path_factory, encoder: int, torch_cls, flax_cls, eos_token_id: int, seed: int):
    cfg = clip.preset("tiny", encoder)
    cfg.eos_token_id = eos_token_id
    ref = randomise(torch_cls(transformers.CLIPTextConfig(**cfg)), seed)
    folder = tmp_path_factory.mktemp(f"clip{encoder}")
    ref.save_pretrained(folder)
    model = load_pretrained(flax_cls, folder)
    ids = make_ids(seed, EOS_1 if encoder == 1 else EOS_2, pad=0 if encoder == 1 else EOS_2)
    return dict(
        ref=ref, folder=folder, model=model, ids=ids, out=flax_outputs(model, ids), ref_out=torch_outputs(ref, ids)
    )


@pytest.fixture(scope="module")
def clip_l(tmp_path_factory):
    return _build(tmp_path_factory, 1, transformers.CLIPTextModel, clip.CLIPTextModel, eos_token_id=2, seed=1)


@pytest.fixture(scope="module")
def clip_g(tmp_path_factory):
    return _build(
        tmp_path_factory,
        2,
        transformers.CLIPTextModelWithProjection,
        clip.CLIPTextModelWithProjection,
        eos_token_id=EOS_2,
        seed=2,
    )


@pytest.mark.parametrize("name", ["last", "penultimate", "pooled"])
def test_clip_text_model_parity(clip_l, name):
    assert clip_l["out"]["n_hidden"] == clip_l["ref_out"]["n_hidden"] == 4
    err = rel_err(clip_l["out"][name], clip_l["ref_out"][name])
    print(f"clip-l {name} rel err {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("name", ["last", "penultimate", "text_embeds"])
def test_clip_with_projection_parity(clip_g, name):
    err = rel_err(clip_g["out"][name], clip_g["ref_out"][name])
    print(f"clip-g {name} rel err {err:.2e}")
    assert err <= TOL


def test_pooling_position_per_row(clip_l, clip_g):
    """Legacy eos_token_id=2 pools at argmax(ids); otherwise at the first eos (the ids pad with it, and hold
    larger ids), at a different position in every row."""
    for case in (clip_l, clip_g):
        positions = np.asarray(clip.eos_positions(case["ids"], case["model"].config.eos_token_id))
        np.testing.assert_array_equal(positions, EOS_POSITIONS)
        rows = np.arange(len(EOS_POSITIONS))
        np.testing.assert_array_equal(case["out"]["pooled"], case["out"]["last"][rows, positions])
    ids = clip_g["ids"]
    assert (np.argmax(ids, axis=-1) != EOS_POSITIONS).any()  # the two rules really differ on these ids


def test_export_round_trip(clip_l, clip_g, tmp_path):
    """Flax -> save_pretrained -> transformers.from_pretrained (no missing / unexpected keys), same outputs."""
    for name, case, torch_cls in (
        ("l", clip_l, transformers.CLIPTextModel),
        ("g", clip_g, transformers.CLIPTextModelWithProjection),
    ):
        save_pretrained(case["model"], tmp_path / name)
        back, info = torch_cls.from_pretrained(tmp_path / name, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        ref = torch_outputs(back.eval(), case["ids"])
        for key in ("last", "penultimate", "text_embeds" if name == "g" else "pooled"):
            assert rel_err(ref[key], case["out"][key]) <= TOL, (name, key)


def _prefixed_folder(src, dst, position_ids: np.ndarray):
    """transformers-4 layout (as in SDXL folders): `text_model.` keys plus a `position_ids` buffer."""
    tensors = {f"text_model.{k}": v for k, v in load_file(str(src / "model.safetensors")).items()}
    tensors["text_model.embeddings.position_ids"] = position_ids
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_prefixed_keys_and_position_ids_buffer(clip_l, tmp_path):
    good = _prefixed_folder(clip_l["folder"], tmp_path / "good", np.arange(T, dtype=np.int64)[None])
    model = load_pretrained(clip.CLIPTextModel, good)
    ours, theirs = sd.state_dict(model), sd.state_dict(clip_l["model"])
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])
    bad = _prefixed_folder(clip_l["folder"], tmp_path / "bad", np.arange(T, dtype=np.int64)[None] + 1)
    with pytest.raises(sd.StateDictMismatchError, match=r"text_model\.embeddings\.position_ids"):
        load_pretrained(clip.CLIPTextModel, bad)


def test_sdxl_text_embeddings(clip_l, clip_g):
    ids1, ids2 = clip_l["ids"], clip_g["ids"]
    embeds, pooled = nnx.jit(sdxl_text_embeddings)(clip_l["model"], clip_g["model"], ids1, ids2)
    with torch.no_grad():
        h1 = clip_l["ref"](torch.from_numpy(ids1.astype(np.int64)), output_hidden_states=True).hidden_states[-2]
        out2 = clip_g["ref"](torch.from_numpy(ids2.astype(np.int64)), output_hidden_states=True)
    expected = torch.cat([h1, out2.hidden_states[-2]], dim=-1).numpy()
    assert embeds.shape == (3, T, 16 + 24) and pooled.shape == (3, 12)
    assert rel_err(embeds, expected) <= TOL
    assert rel_err(pooled, out2.text_embeds.numpy()) <= TOL


@pytest.mark.parametrize("key, value", [("hidden_act", "relu"), ("num_attention_heads", 5), ("use_rope", True)])
def test_config_validation_names_the_key(key, value):
    cfg = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **clip.preset("tiny", 1)}
    cfg[key] = value
    with pytest.raises(ValueError, match=key):
        clip.CLIPTextModel.config_from_pretrained(cfg)


@pytest.mark.parametrize(
    "encoder, flax_cls, torch_cls",
    [
        (1, clip.CLIPTextModel, transformers.CLIPTextModel),
        (2, clip.CLIPTextModelWithProjection, transformers.CLIPTextModelWithProjection),
    ],
)
def test_sdxl_parameter_count(encoder, flax_cls, torch_cls):
    cfg = clip.preset("sdxl", encoder)
    model = nnx.eval_shape(lambda: flax_cls(clip.CLIPTextConfig(**cfg), Precision(), rngs=nnx.Rngs(0)))
    with torch.device("meta"):
        ref = torch_cls(transformers.CLIPTextConfig(**cfg))
    ours = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert ours == sum(p.numel() for p in ref.parameters())
    renamed = {flax_cls.rename_source_key(k): tuple(v.shape) for k, v in ref.state_dict().items()}
    renamed.pop("text_model.embeddings.position_ids", None)
    assert sd.expected_keys(model) == renamed
