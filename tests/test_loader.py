"""The grain loader: model inputs, deterministic resume from the iterator state, global batches."""

import numpy as np
import pytest

from personacraft_jax.data import conditioning
from personacraft_jax.data import loader as loader_lib
from personacraft_jax.parallel import mesh as mesh_lib


def _example(index: int, size: int = 16, with_sdxl: bool = True) -> dict:
    rng = np.random.default_rng(index)
    example = {
        "image_id": f"ex{index}",
        "depth": rng.uniform(1, 3, (size, size)).astype(np.float16),
        "normal": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "occlusion": (rng.uniform(size=(size, size)) > 0.8).astype(np.uint8),
        "depth_edges": (rng.uniform(size=(size, size)) > 0.9).astype(np.uint8),
        "original_size": np.array([size * 2, size * 3], np.int32),
        "crop_top_left": np.array([0, index], np.int32),
    }
    if with_sdxl:
        example.update(
            latent_mean=np.full((4, size // 8, size // 8), index, np.float32),
            latent_logvar=np.zeros((4, size // 8, size // 8), np.float32),
            prompt_embeds=np.full((7, 6), index, np.float32),
            pooled_prompt_embeds=np.full((5,), index, np.float32),
        )
    return example


SOURCE = [_example(i) for i in range(12)]
OPTIONS = loader_lib.InputOptions(caption_dropout=0.5)


def _loader(seed=0):
    return loader_lib.make_loader(SOURCE, global_batch_size=4, seed=seed, options=OPTIONS)


def test_batch_contents_match_conditioning_functions():
    batch = next(iter(_loader()))
    assert batch["latent_mean"].shape == (4, 2, 2, 4)
    assert batch["scnet_cond"].shape == (4, 16, 16, 4) and batch["oben_cond"].shape == (4, 16, 16, 2)
    assert batch["occlusion_mask"].shape == (4, 2, 2) and batch["drop_caption"].dtype == np.bool_
    index = int(batch["pooled_prompt_embeds"][0, 0])  # which example landed first
    source = SOURCE[index]
    np.testing.assert_array_equal(batch["latent_mean"][0], np.moveaxis(source["latent_mean"], 0, -1))
    np.testing.assert_array_equal(
        batch["scnet_cond"][0], conditioning.scnet_conditioning(source["depth"], source["normal"])
    )
    np.testing.assert_array_equal(batch["time_ids"][0], [32, 48, 0, index, 16, 16])


def test_resume_from_iterator_state_gives_same_batches():
    iterator = iter(_loader())
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]
    resumed = iter(_loader())
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_order_depends_on_seed_and_covers_an_epoch():
    first = [int(x) for b, _ in zip(iter(_loader(0)), range(3), strict=False) for x in b["pooled_prompt_embeds"][:, 0]]
    other = [int(x) for b, _ in zip(iter(_loader(1)), range(3), strict=False) for x in b["pooled_prompt_embeds"][:, 0]]
    assert sorted(first) == list(range(12)) and first != other


def test_missing_sdxl_fields_error_says_how_to_fix():
    source = [_example(i, with_sdxl=False) for i in range(4)]
    loader = loader_lib.make_loader(source, global_batch_size=2, seed=0, options=OPTIONS)
    with pytest.raises(Exception, match="without SDXL encodings"):
        next(iter(loader))


def test_batch_size_checks():
    with pytest.raises(ValueError, match="fewer than one batch"):
        loader_lib.make_loader(SOURCE[:2], global_batch_size=4, seed=0, options=OPTIONS)


def test_global_batch_is_sharded_over_data_and_fsdp():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    local = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3)}
    out = loader_lib.global_batch(local, mesh)
    assert out["x"].shape == (8, 3)
    assert len(out["x"].sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(out["x"]), local["x"])
