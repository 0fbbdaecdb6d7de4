# ruff: noqa: F811  (the fixtures imported from tests.fixtures_* are used as arguments)
"""Scene files: the documented format (JSON / YAML, fit files, inline people, shape control) and errors that
name the field."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from data_prep.fits import PersonFit, SceneFit, save_scene_fit
from personacraft_jax.sampling.scene_file import (
    FaceInput,
    SceneFileError,
    load_scene_file,
    parse_scene,
    standing_pose,
)
from personacraft_jax.sampling.scene_inputs import check_scene_size, conditioning_bytes_per_pixel
from tests.fixtures_body import standin_model_root  # noqa: F401 (fixture)
from tests.fixtures_faces import face_model_root  # noqa: F401 (fixture)


@pytest.fixture()
def files(tmp_path):
    """A fit file with two people and a face embedding next to the scene files."""
    rng = np.random.default_rng(0)
    people = [
        PersonFit(rng.normal(size=10), rng.normal(size=10), rng.normal(size=(53, 3)) * 0.1, [x, -0.5, 3.0])
        for x in (-0.3, 0.3)
    ]
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]], np.float32)
    save_scene_fit(tmp_path / "fit.npz", SceneFit(tuple(people), K, 128, 96))
    np.save(tmp_path / "ann.npy", rng.normal(size=512).astype(np.float32))
    return tmp_path, people, K


def _scene(**overrides) -> dict:
    scene = {
        "prompt": "two people",
        "width": 256,
        "height": 192,
        "steps": 4,
        "seeds": [3, 4],
        "people": [
            {"name": "ann", "fit": {"file": "fit.npz", "index": 1}, "face": {"embedding": "ann.npy"}},
            {"name": "bob", "betas": [0.5] * 10, "transl": [0.0, -0.4, 3.0], "face": None},
        ],
    }
    scene.update(overrides)
    return scene


def test_valid_scene_resolves_people_camera_and_defaults(files):
    root, people, K = files
    (root / "scene.json").write_text(json.dumps(_scene()))
    spec = load_scene_file(root / "scene.json", size_multiple=64)
    ann, bob = spec.people
    np.testing.assert_array_equal(ann.fit.betas, people[1].betas)
    assert ann.face.embedding.shape == (512,) and bob.face is None
    np.testing.assert_array_equal(bob.fit.rotvec, standing_pose())
    np.testing.assert_array_equal(bob.fit.expression, np.zeros(10))
    np.testing.assert_allclose(spec.K, K * np.array([[2.0], [2.0], [1.0]]))  # 128x96 fit -> 256x192
    assert spec.seeds == (3, 4) and spec.scales["guidance"] == 5.0 and spec.oa_cfg["mode"] == "control"
    json.dumps(spec.resolved())  # JSON-ready


def test_shape_control_and_yaml(files):
    root, people, _ = files
    scene = _scene()
    scene["people"][0]["shape"] = {"gamma": 1.5, "betas_from": ["ann", "bob"]}
    scene["people"][1]["shape"] = {"reference": "ann"}
    (root / "scene.yaml").write_text(yaml.safe_dump(scene))
    ann, bob = load_scene_file(root / "scene.yaml", size_multiple=64).people
    np.testing.assert_allclose(ann.fit.betas, -0.5 * people[1].betas + 1.5 * 0.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bob.fit.betas, people[1].betas, rtol=1e-6)  # the *fitted* betas of ann


@pytest.mark.parametrize(
    "edit, field",
    [
        (
            lambda s: s["people"][0].update(shape={"reference": "zed"}),
            r"people\[0\].shape.reference: unknown person 'zed'",
        ),
        (
            lambda s: s["people"][1].update(shape={"gamma": 0.5, "betas_from": ["ann", "carl"]}),
            r"people\[1\].shape.betas_from\[1\]: unknown person 'carl'",
        ),
        (lambda s: s["people"][1].update(betas=[0.0] * 9), r"people\[1\].betas: has shape \(9,\)"),
        (
            lambda s: s["people"][0].update(shape={"gamma": 1, "betas_from": ["bob", [1.0] * 11]}),
            r"people\[0\].shape.betas_from\[1\]: has shape \(11,\)",
        ),
        (lambda s: s["people"][1].pop("face"), r"people\[1\].face: missing face input"),
        (lambda s: s["people"][0].update(face={}), r"people\[0\].face: missing face input"),
        (lambda s: s["people"][0].update(face={"embedding": "nope.npy"}), r"people\[0\].face.embedding: file"),
        (lambda s: s.update(width=100), "width: 100 is not a multiple of 64"),
        (lambda s: s.update(height=0), "height: expected an integer >= 1"),
        (lambda s: s.update(colour="red"), r"scene: unknown key\(s\) \['colour'\]"),
        (lambda s: s.update(oa_cfg={"mode": "always"}), "oa_cfg.mode: 'always'"),
        (lambda s: s["people"][0]["fit"].update(index=2), r"people\[0\].fit.index: 2 is out of range"),
        (lambda s: s["people"][1].update(name="ann"), r"people\[1\].name: expected a unique"),
    ],
)
def test_errors_name_the_field(files, edit, field):
    root, _, _ = files
    scene = _scene()
    edit(scene)
    with pytest.raises(SceneFileError, match=field):
        parse_scene(scene, root, size_multiple=64)


def test_embedding_files_are_never_unpickled(files):
    root, _, _ = files
    np.save(root / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(root / "short.npy", np.zeros(128, np.float32))
    for name, message in (("obj.npy", "unreadable .npy"), ("short.npy", r"has shape \(128,\)")):
        scene = _scene()
        scene["people"][0]["face"] = {"embedding": name}
        with pytest.raises(SceneFileError, match=message):
            parse_scene(scene, root, size_multiple=64)


def test_file_level_errors(tmp_path):
    with pytest.raises(SceneFileError, match="does not exist"):
        load_scene_file(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SceneFileError, match="invalid JSON"):
        load_scene_file(tmp_path / "bad.json")
    (tmp_path / "scene.txt").write_text("{}")
    with pytest.raises(SceneFileError, match="unknown extension"):
        load_scene_file(tmp_path / "scene.txt")


def test_scene_size_is_checked_against_the_models_multiple_and_the_host_memory(files):
    root, _, _ = files
    spec = parse_scene(_scene(width=272, height=192), root)  # structure only: no multiple
    check_scene_size(spec, 16, memory_bytes=2**30)
    with pytest.raises(SceneFileError, match=r"width: 272 is not a multiple of 32 \(the models' size multiple"):
        check_scene_size(spec, 32, memory_bytes=2**30)
    huge = dataclasses.replace(spec, width=100_000, height=100_000)
    with pytest.raises(SceneFileError, match=r"width, height: 100000 x 100000 is too large: .* 58 bytes per pixel, "
                       r"540\.2 GiB, more than the host's 64\.0 GiB of memory"):  # fmt: skip
        check_scene_size(huge, 32, memory_bytes=64 * 2**30)


def test_conditioning_bytes_bound_the_rendered_arrays(standin_model_root):
    """The per-pixel bound of `check_scene_size` is below what `render_conditioning` really holds."""
    from data_prep.body_model import BodyModel
    from data_prep.render import SceneRenderer
    from personacraft_jax.sampling.scene_inputs import render_conditioning

    spec = parse_scene(_scene(width=64, height=48, people=[
        {"name": "a", "betas": [0.0] * 10, "transl": [-0.2, -0.5, 3.0], "face": None},
        {"name": "b", "betas": [0.0] * 10, "transl": [0.2, -0.5, 3.5], "face": None},
        {"name": "c", "betas": [0.0] * 10, "transl": [0.0, -0.5, 4.0], "face": None},
    ]))  # fmt: skip
    with SceneRenderer(spec.width, spec.height) as renderer:
        cond = render_conditioning(spec, BodyModel(standin_model_root), renderer, latent_factor=8)
    full_resolution = [cond.scnet, cond.oben, cond.face_images, *(m for m in cond.maps.values() if m.size >= 64 * 48)]
    held = sum(a.nbytes for a in full_resolution)
    assert held >= conditioning_bytes_per_pixel(3) * 64 * 48


def test_face_image_that_is_not_an_image_names_the_field(files):
    root, _, _ = files
    (root / "notes.jpg").write_text("not a photo")
    scene = _scene()
    scene["people"][1]["face"] = {"image": "notes.jpg"}
    with pytest.raises(SceneFileError, match=r"people\[1\]\.face\.image: '.*notes\.jpg' is not an image PIL can read"):
        parse_scene(scene, root)


def test_face_photo_that_cannot_be_read_when_embedded_names_the_field(files, face_model_root):
    """The photo is checked when the scene is read; one that is not an image by the time it is embedded (replaced
    on disk, or a format PIL's header check passes) still gets an error naming the field, not PIL's."""
    from configs import sample_tiny
    from personacraft_jax.sampling.sample_job import face_embeddings

    root, _, _ = files
    (root / "notes.jpg").write_text("not a photo")
    spec = parse_scene(_scene(), root)
    spec = dataclasses.replace(spec, people=(spec.people[0], dataclasses.replace(
        spec.people[1], face=FaceInput(image=root / "notes.jpg"))))  # fmt: skip
    cfg = sample_tiny.get_config()
    cfg.face_model_root = str(face_model_root)
    with pytest.raises(ValueError, match=r"people\[1\]\.face\.image: cannot read the reference photo .*notes\.jpg"):
        face_embeddings(spec, cfg, 512)
