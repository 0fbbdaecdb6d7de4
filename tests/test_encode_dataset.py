"""Re-encoding a finished dataset's SDXL inputs with another SDXL folder (`data_prep.encode_dataset`): the new
latents / text embeddings equal diffusers' own encoders on the stored image and caption, every other field is
copied as stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep import dataset
from data_prep.encode_dataset import encode_dataset
from tests.fixtures_sdxl import tiny_sdxl_dir  # noqa: F401  (pytest fixture)
from tests.test_dataset import FakeBody, FakeRenderer, _build, _fit, _raw


@pytest.fixture()
def source_dir(tmp_path):
    from data_prep.pipeline import ExampleFactory

    factory = ExampleFactory(body=FakeBody(), make_renderer=FakeRenderer, max_people=3)
    raws = [_raw("a", _fit([0.0]), 1), _raw("b", _fit([-0.5, 0.5], seed=2), 2)]
    _build(tmp_path / "plain", raws, factory)
    return tmp_path / "plain"


def test_encoded_copy_matches_diffusers_and_keeps_every_stored_field(source_dir, tmp_path, tiny_sdxl_dir):  # noqa: F811
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    report = encode_dataset(source_dir, tmp_path / "encoded", tiny_sdxl_dir)
    assert report["written"] == 2 and report["config"]["encoded_from"] == str(source_dir)
    before = dataset.open_split(source_dir)
    after = dataset.open_split(tmp_path / "encoded")
    assert set(after[0]) == set(dataset.features(True).keys())
    vae = AutoencoderKL.from_pretrained(str(tiny_sdxl_dir / "vae")).eval()
    tokenizers = [CLIPTokenizer.from_pretrained(str(tiny_sdxl_dir / n)) for n in ("tokenizer", "tokenizer_2")]
    encoders = [CLIPTextModel.from_pretrained(str(tiny_sdxl_dir / "text_encoder")).eval(),
                CLIPTextModelWithProjection.from_pretrained(str(tiny_sdxl_dir / "text_encoder_2")).eval()]  # fmt: skip
    for i in range(2):
        old, new = before[i], after[i]
        for key, value in old.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(new[key], value, err_msg=key)
            else:
                assert new[key] == value, key
        with torch.no_grad():
            x = torch.from_numpy(old["image"]).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            dist = vae.encode(x).latent_dist
            np.testing.assert_allclose(new["latent_mean"], dist.mean[0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(new["latent_logvar"], dist.logvar[0].numpy(), rtol=1e-5, atol=1e-6)
            hidden = []
            for tok, enc in zip(tokenizers, encoders):
                ids = tok([old["caption"]], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
                out = enc(ids.input_ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2][0].numpy())
            np.testing.assert_allclose(new["prompt_embeds"], np.concatenate(hidden, -1), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(new["pooled_prompt_embeds"], out.text_embeds[0].numpy(), rtol=1e-5, atol=1e-6)
    assert dataset.load_empty_prompt(tmp_path / "encoded")["prompt_embeds"].shape == (77, 40)
    # A rerun is the same dataset (reused); a different SDXL folder is another one (refused).
    assert encode_dataset(source_dir, tmp_path / "encoded", tiny_sdxl_dir)["reused_existing"]
    with pytest.raises(dataset.DatasetMismatchError):
        encode_dataset(source_dir, tmp_path / "encoded", tmp_path / "other_sdxl")


def test_encoding_into_the_source_folder_is_refused(source_dir, tiny_sdxl_dir):  # noqa: F811
    with pytest.raises(ValueError, match="same folder"):
        encode_dataset(source_dir, source_dir, tiny_sdxl_dir)
