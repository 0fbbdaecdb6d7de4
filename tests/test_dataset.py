"""The TFDS ArrayRecord dataset: schema, round trip, bad-input skipping with reasons, interrupted builds.

A small fake body model / renderer stands in for SMPL-X + pyrender (tested elsewhere): it puts each person's
face keypoints around the projection of `transl`, so placing a person off-screen moves the face out of frame.
"""

import io
import json
import pathlib
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import dataset, examples, sources
from data_prep.faces import FaceEmbedder
from data_prep.fits import PersonFit, SceneFit, multihmr_intrinsics, save_scene_fit
from data_prep.image_files import encode_png
from data_prep.pipeline import ExampleFactory
from data_prep.scene_outcome import ExamplePrepError, NoExamplesError
from data_prep.sdxl_encoders import SDXLTextEncoder, SDXLVaeEncoder
from tests.fixtures_faces import face_model_root  # noqa: F401  (pytest fixture)
from tests.fixtures_sdxl import tiny_sdxl_dir  # noqa: F401  (pytest fixture)

W, H = 64, 48
TEMPLATE = np.array([[-6, -4], [6, -4], [0, 0], [-5, 6], [5, 6]], np.float32)


class FakeBody:
    faces = np.zeros((1, 3), np.int64)

    def posed(self, person):
        return np.tile(person.transl, (4, 1)), np.tile(person.transl, (127, 1))


class FakeRenderer:
    def __init__(self, width, height):
        self.width, self.height = width, height

    def render(self, meshes, K, joints):
        n, h, w = len(meshes), self.height, self.width
        rng = np.random.default_rng(int(abs(K[0, 2])) + n)
        centres = [(K @ j[0])[:2] / j[0][2] for j in joints]
        amodal = rng.integers(0, 2, (n, h, w), dtype=np.uint8)
        return {
            "depth": rng.uniform(1, 5, (h, w)).astype(np.float16),
            "normal": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "instance": rng.integers(0, n + 1, (h, w), dtype=np.uint8),
            "amodal": amodal,
            "occlusion": (amodal.sum(0) > 1).astype(np.uint8),
            "depth_edges": rng.integers(0, 2, (h, w), dtype=np.uint8),
            "face_kps": np.stack([TEMPLATE + c for c in centres]).astype(np.float32),
            "face_visible": np.array([i != 2 for i in range(n)]),  # the third person's face is "hidden"
        }


def _fit(xs, width=W, height=H, seed=0):
    rng = np.random.default_rng(seed)
    people = tuple(
        PersonFit(rng.normal(size=10), rng.normal(size=10), rng.normal(size=(53, 3)) * 0.1, np.array([x, 0.0, 3.0]))
        for x in xs
    )
    return SceneFit(people, multihmr_intrinsics(width, height), width, height)


def _image(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


class _Scene:
    """A scene given by its inputs (image from `seed`, the fit, caption "caption <id>")."""

    def __init__(self, image_id, fit, seed):
        self.image_id, self._fit, self._image = image_id, fit, _image(seed)

    def load(self, resources):
        return sources.SceneInputs(self._image, encode_png(self._image), self._fit, f"caption {self.image_id}")


_raw = _Scene
FINGERPRINT = {"digest": "test-inputs"}


def _build(data_dir, scenes, factory, **kwargs):
    kwargs.setdefault("include_sdxl", False)
    kwargs.setdefault("fingerprint", FINGERPRINT)
    return dataset.build_dataset(data_dir, scenes, factory=factory, **kwargs)


@pytest.fixture()
def factory(face_model_root):  # noqa: F811
    return ExampleFactory(
        body=FakeBody(), make_renderer=FakeRenderer, max_people=3, face_embedder=FaceEmbedder(face_model_root)
    )


@pytest.mark.parametrize("with_sdxl", [False, True])
def test_round_trip(tmp_path, factory, with_sdxl, tiny_sdxl_dir):  # noqa: F811
    if with_sdxl:
        factory = ExampleFactory(
            body=FakeBody(),
            make_renderer=FakeRenderer,
            max_people=3,
            face_embedder=factory.face_embedder,
            text_encoder=SDXLTextEncoder(tiny_sdxl_dir),
            vae_encoder=SDXLVaeEncoder(tiny_sdxl_dir),
        )
    raws = [_raw("a", _fit([0.0]), 1), _raw("b", _fit([-0.5, 0.5], seed=2), 2), _raw("c", _fit([-0.5, 0, 0.5]), 3)]
    empty = None
    if with_sdxl:
        prompt_embeds, pooled = factory.text_encoder.encode([""])
        empty = {"prompt_embeds": prompt_embeds[0], "pooled_prompt_embeds": pooled[0]}
    report = _build(tmp_path, raws, factory, include_sdxl=with_sdxl, empty_prompt=empty)
    assert report["written"] == 3 and report["skipped"] == 0 and report["splits"] == {"train": 3}
    assert report["face_not_visible_reasons"] == {"hidden": 1}

    source = dataset.open_split(tmp_path, "train")
    assert len(source) == 3
    for i, raw in enumerate(raws):
        expected, _ = factory(raw)
        got = source[i]
        assert set(got) == set(expected)
        assert set(got) == set(dataset.features(with_sdxl).keys())
        assert got["image_id"] == raw.image_id and got["caption"] == f"caption {raw.image_id}"
        np.testing.assert_array_equal(got["image"], _image(i + 1))
        for key, value in expected.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype, key
                np.testing.assert_array_equal(got[key], value, err_msg=key)
        n = got["num_people"]
        assert got["pose"].shape == (n, 53, 3) and got["face_embedding"].shape == (n, 512)
        # A visible face's stored embedding is the embedding of the stored image at the stored keypoints.
        np.testing.assert_allclose(
            got["face_embedding"][0], factory.face_embedder.embed_face(got["image"], got["face_kps"][0]), rtol=1e-5
        )
    assert not source[2]["face_visible"][2] and not source[2]["face_embedding"][2].any()
    if with_sdxl:
        got = source[1]
        assert got["latent_mean"].shape == got["latent_logvar"].shape == (4, H // 8, W // 8)
        assert got["prompt_embeds"].shape == (77, 16 + 24) and got["pooled_prompt_embeds"].shape == (12,)
        embeds, _ = factory.text_encoder.encode(["caption b"])
        np.testing.assert_array_equal(got["prompt_embeds"], embeds[0])
        np.testing.assert_array_equal(got["latent_mean"], factory.vae_encoder.encode(_image(2))[0])
        stored = dataset.load_empty_prompt(tmp_path)
        for key, value in empty.items():
            np.testing.assert_array_equal(stored[key], value)
    else:
        assert dataset.load_empty_prompt(tmp_path) is None


def _write_fit_file(path: pathlib.Path, arrays: dict) -> None:
    np.savez(path, **arrays)


def test_bad_inputs_are_skipped_with_reasons(tmp_path, factory):
    images, fits = tmp_path / "images", tmp_path / "fits"
    images.mkdir()
    fits.mkdir()
    good = _fit([0.0, 0.4])
    stems = ["good", "no_fit", "malformed", "unreadable", "zero", "nan", "shape", "offscreen", "no_caption", "crowd"]
    for i, stem in enumerate(stems):
        (images / f"{stem}.png").write_bytes(encode_png(_image(i)))
    (images / "unreadable.png").write_bytes(b"not an image")
    (images / "notes.txt").write_text("ignored: not an image suffix")
    arrays = {
        "K": good.K,
        "image_size": np.array([W, H]),
        "betas": np.zeros((2, 10)),
        "expression": np.zeros((2, 10)),
        "rotvec": np.zeros((2, 53, 3)),
        "transl": np.array([[0, 0, 3.0], [0.4, 0, 3.0]]),
    }
    for stem in ("good", "unreadable", "no_caption"):
        save_scene_fit(fits / f"{stem}.npz", good)
    (fits / "malformed.json").write_text('{"K": [[1, 0')
    _write_fit_file(
        fits / "zero.npz", {**arrays, **{k: arrays[k][:0] for k in ("betas", "expression", "rotvec", "transl")}}
    )
    _write_fit_file(fits / "nan.npz", {**arrays, "betas": np.full((2, 10), np.nan)})
    _write_fit_file(fits / "shape.npz", {**arrays, "rotvec": np.zeros((2, 52, 3))})
    save_scene_fit(fits / "offscreen.npz", _fit([0.0, 5.0]))  # second person far right: face out of frame
    save_scene_fit(fits / "crowd.npz", _fit([-1, -0.5, 0, 0.5]))  # 4 people > max_people=3
    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(json.dumps({"image": f"{s}.png", "caption": s}) for s in stems if s != "no_caption"))

    report = _build(tmp_path / "out", sources.folder_scenes(images, fits, captions), factory)
    assert report["written"] == 2
    assert report["skip_reasons"] == {
        "missing_fit": 1,
        "malformed_fit": 1,
        "unreadable_image": 1,
        "zero_people": 1,
        "nonfinite_params": 1,
        "bad_shape": 1,
        "missing_caption": 1,
        "too_many_people": 1,
    }
    assert report["face_not_visible_reasons"] == {"out_of_frame": 1}
    assert {tuple(s[:2]) for s in report["skipped_examples"]} >= {
        ("no_fit", "missing_fit"),
        ("nan", "nonfinite_params"),
    }
    on_disk = json.loads((dataset.version_dir(tmp_path / "out") / dataset.REPORT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(report))
    source = dataset.open_split(tmp_path / "out")
    offscreen = next(source[i] for i in range(len(source)) if source[i]["image_id"] == "offscreen")
    np.testing.assert_array_equal(offscreen["face_visible"], [True, False])
    assert not offscreen["face_embedding"][1].any() and offscreen["face_embedding"][0].any()


def test_validate_scene_rejects_bad_objects():
    class Obj:
        pass

    fit = _fit([0.0])
    bad = Obj()
    bad.people, bad.K, bad.width, bad.height = fit.people, np.full((3, 3), np.nan), W, H
    with pytest.raises(examples.SkipExample, match="nonfinite_params"):
        examples.validate_scene(bad, W, H, 3)
    with pytest.raises(examples.SkipExample, match="size_mismatch"):
        examples.validate_scene(fit, W + 8, H, 3)
    bad.people, bad.K = (), fit.K
    with pytest.raises(examples.SkipExample, match="zero_people"):
        examples.validate_scene(bad, W, H, 3)
    bad.people = (Obj(),)
    bad.people[0].betas, bad.people[0].expression = np.zeros(9), np.zeros(10)
    bad.people[0].rotvec, bad.people[0].transl = np.zeros((53, 3)), np.array([0, 0, 3.0])
    with pytest.raises(examples.SkipExample, match="bad_shape"):
        examples.validate_scene(bad, W, H, 3)


class _FailingScene:
    def __init__(self, image_id, error):
        self.image_id, self._error = image_id, error

    def load(self, resources):
        raise self._error("interrupted")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_build_never_looks_complete_and_rerun_completes(tmp_path, factory, error):
    raws = [_raw(f"s{i}", _fit([0.0]), i) for i in range(4)]
    with pytest.raises(error, match="interrupted"):
        _build(tmp_path, [*raws[:2], _FailingScene("s2", error), *raws[2:]], factory)
    assert not dataset.is_complete(tmp_path)
    assert not dataset.version_dir(tmp_path).exists()
    with pytest.raises(FileNotFoundError, match="interrupted"):
        dataset.open_split(tmp_path)

    report = _build(tmp_path, raws, factory)
    assert report["written"] == 4 and not report["reused_existing"]
    assert len(dataset.open_split(tmp_path)) == 4


def test_unexpected_error_names_the_example(tmp_path, factory):
    raws = [_raw("s0", _fit([0.0]), 0), _FailingScene("broken_one", ValueError)]
    with pytest.raises(ExamplePrepError, match=r"'broken_one' \(scene 1\).*ValueError: interrupted"):
        _build(tmp_path, raws, factory)
    assert not dataset.is_complete(tmp_path)


def test_killed_build_leftovers_are_ignored_and_removed(tmp_path, factory):
    leftover = tmp_path / dataset.NAME / f"incomplete.ABC123_{dataset.PersonaCraftScenes.VERSION}"
    leftover.mkdir(parents=True)
    (leftover / "personacraft_scenes-train.array_record-00000-of-00001").write_bytes(b"partial")
    assert not dataset.is_complete(tmp_path)
    report = _build(tmp_path, [_raw("x", _fit([0.0]), 0)], factory)
    assert report["written"] == 1 and not leftover.exists()


def test_report_is_recreated_for_a_complete_dataset(tmp_path, factory):
    _build(tmp_path, [_raw("x", _fit([0.0]), 0)], factory, config={"seed": 1})
    report_path = dataset.version_dir(tmp_path) / dataset.REPORT_FILE
    report_path.unlink()  # as if killed between the rename and the report

    # A complete dataset with the same fingerprint is reused: nothing is prepared again.
    report = _build(tmp_path, [_FailingScene("x", AssertionError)], factory, config={"seed": 2})
    assert report_path.is_file() and report["reused_existing"] and report["written"] == 1
    assert report["config"] == {"seed": 1}  # the report describes the stored data, not this call


def test_a_dataset_from_other_inputs_is_refused_not_reused(tmp_path, factory):
    first = {"digest": "a", "config": {"resolution": 1024}, "scenes": {"count": 2, "digest": "s1"}}
    _build(tmp_path, [_raw("x", _fit([0.0]), 0)], factory, fingerprint=first)
    report_before = (dataset.version_dir(tmp_path) / dataset.REPORT_FILE).read_text()
    second = {"digest": "b", "config": {"resolution": 512}, "scenes": {"count": 3, "digest": "s2"}}
    with pytest.raises(dataset.DatasetMismatchError) as err:
        _build(tmp_path, [_FailingScene("y", AssertionError)], factory, fingerprint=second)
    message = str(err.value)
    assert "config.resolution: 1024 -> 512" in message and "2 scenes" in message and "3 scenes" in message
    assert f"rm -r '{dataset.version_dir(tmp_path)}'" in message
    assert (dataset.version_dir(tmp_path) / dataset.REPORT_FILE).read_text() == report_before


def test_an_older_schema_version_is_named(tmp_path, factory):
    old = tmp_path / dataset.NAME / "1.0.0"
    old.mkdir(parents=True)
    (old / "dataset_info.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"holds version 1\.0\.0 with an older schema"):
        dataset.open_split(tmp_path)


def test_a_url_data_dir_is_refused(factory):
    with pytest.raises(dataset.DataDirError, match=r"gs://bucket/data is a URL.*FUSE"):
        _build("gs://bucket/data", [_raw("x", _fit([0.0]), 0)], factory)


def test_nothing_written_is_an_error_with_the_reasons(tmp_path, factory):
    crowd = _raw("crowd", _fit([-1, -0.5, 0, 0.5]), 0)  # 4 people > max_people=3
    with pytest.raises(NoExamplesError, match=r"none of the 1 scenes.*too_many_people"):
        _build(tmp_path, [crowd], factory)
    assert not dataset.is_complete(tmp_path)


def test_real_photos_are_cropped_to_the_training_resolution(tmp_path, factory):
    images, fits = tmp_path / "images", tmp_path / "fits"
    images.mkdir()
    fits.mkdir()
    fit = _fit([0.0])
    (images / "p.jpg").write_bytes(encode_png(_image(0)))  # content decides, not the suffix
    save_scene_fit(fits / "p.npz", fit)
    captions = tmp_path / "c.jsonl"
    captions.write_text(json.dumps({"image": "p", "caption": "one person"}) + "\n")
    scenes = sources.folder_scenes(images, fits, captions, resolution=32)
    assert _build(tmp_path / "out", scenes, factory)["written"] == 1
    got = dataset.open_split(tmp_path / "out")[0]
    # 64 x 48 -> short side 32: 43 x 32, centre crop 32 x 32 starting at column (43 - 32) // 2 = 5.
    np.testing.assert_array_equal(got["original_size"], [H, W])
    np.testing.assert_array_equal(got["crop_top_left"], [0, 5])
    assert got["image"].shape == (32, 32, 3) and got["depth"].shape == (32, 32)
    undecoded = dataset.open_split(tmp_path / "out", decode_image=False)[0]  # what training reads
    assert isinstance(undecoded["image"], bytes) and undecoded["image"].startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(undecoded["image"]))), got["image"])
    np.testing.assert_array_equal(undecoded["depth"], got["depth"])
    expected_k = np.diag([43 / W, 32 / H, 1.0]) @ fit.K
    expected_k[0, 2] -= 5
    np.testing.assert_allclose(got["K"], expected_k, rtol=1e-5)


@pytest.mark.parametrize("with_sdxl", [False, True])
def test_zlib_features_are_saved_as_plain_tensors_and_written_at_the_level(with_sdxl):
    spec = dataset.features(with_sdxl)
    leveled = {k: v for k, v in spec.items() if isinstance(v, dataset.LeveledZlibTensor)}
    assert {"depth", "normal", "instance", "amodal", "occlusion", "depth_edges"} <= set(leveled)
    plain = {
        k: tfds.features.Tensor(shape=v.shape, dtype=v.np_dtype, encoding="zlib") if k in leveled else v
        for k, v in spec.items()
    }
    assert spec.to_json() == tfds.features.FeaturesDict(plain).to_json()  # features.json as before
    assert all(
        type(v) is not dataset.LeveledZlibTensor for v in tfds.features.FeaturesDict.from_json(spec.to_json()).values()
    )
    depth = np.random.default_rng(0).uniform(1, 5, (H, W)).astype(np.float16)
    encoded = leveled["depth"].encode_example(depth)
    assert encoded["value"] == zlib.compress(depth.tobytes(), dataset.ZLIB_LEVEL)
    assert dataset.ZLIB_LEVEL != 6 and encoded["value"] != zlib.compress(depth.tobytes())
    with pytest.raises(ValueError, match=r"[Dd]type"):
        leveled["depth"].encode_example(depth.astype(np.float32))


def test_a_photo_already_at_the_resolution_is_stored_as_its_own_bytes(tmp_path, factory):
    images, fits = tmp_path / "images", tmp_path / "fits"
    images.mkdir()
    fits.mkdir()
    square = np.random.default_rng(0).integers(0, 256, (H, H, 3), dtype=np.uint8)
    Image.fromarray(square).save(images / "p.jpg", quality=90)
    save_scene_fit(fits / "p.npz", _fit([0.0], width=H, height=H))
    captions = tmp_path / "c.jsonl"
    captions.write_text(json.dumps({"image": "p", "caption": "one person"}) + "\n")
    scenes = list(sources.folder_scenes(images, fits, captions, resolution=H))
    assert _build(tmp_path / "out", scenes, factory)["written"] == 1
    undecoded = dataset.open_split(tmp_path / "out", decode_image=False)[0]
    assert undecoded["image"] == (images / "p.jpg").read_bytes()  # not re-encoded
    got = dataset.open_split(tmp_path / "out")[0]
    np.testing.assert_array_equal(got["image"], np.asarray(Image.open(images / "p.jpg")))  # = what was embedded
    np.testing.assert_array_equal(got["original_size"], [H, H])
    np.testing.assert_array_equal(got["crop_top_left"], [0, 0])
