"""Real-data sources: pixel conversions, the folder listing's refusals and counts, captions, camera checks."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from data_prep import captions, examples, scene_outcome, sources
from data_prep.fits import PersonFit, SceneFit, multihmr_intrinsics, save_scene_fit

W, H = 40, 30


def _fit(K=None, width=W, height=H):
    person = PersonFit(np.zeros(10), np.zeros(10), np.zeros((53, 3)), np.array([0.0, 0.0, 3.0]))
    return SceneFit((person,), multihmr_intrinsics(width, height) if K is None else K, width, height)


def _folder(tmp_path, images: dict, fits=("x",), lines=None):
    """image_dir with `images` {file name: PIL image or bytes}, fits for `fits` stems, captions `lines`."""
    image_dir, fits_dir = tmp_path / "images", tmp_path / "fits"
    image_dir.mkdir()
    fits_dir.mkdir()
    for name, image in images.items():
        if isinstance(image, bytes):
            (image_dir / name).write_bytes(image)
        else:
            image.save(image_dir / name)
    for stem in fits:
        save_scene_fit(fits_dir / f"{stem}.npz", _fit())
    path = tmp_path / "captions.jsonl"
    if lines is None:
        lines = [json.dumps({"image": name.rsplit(".", 1)[0], "caption": "c"}) for name in images]
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines))
    return image_dir, fits_dir, path


def _only_scene(tmp_path, images, **kwargs):
    (scene,) = sources.folder_scenes(*_folder(tmp_path, images), **kwargs)
    return scene


def test_16_bit_grayscale_png_is_scaled_to_8_bits(tmp_path):
    values = np.array([0, 257, 257 * 100, 65535, 1000, 40000], np.uint16)
    gray16 = np.resize(values, (H, W)).astype(np.uint16)
    image = Image.fromarray(gray16)
    assert image.mode.startswith("I;16")
    inputs = _only_scene(tmp_path, {"x.png": image}).load()
    expected = np.round(gray16.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert inputs.image.dtype == np.uint8 and inputs.image.shape == (H, W, 3)
    for channel in range(3):
        np.testing.assert_array_equal(inputs.image[..., channel], expected)
    assert inputs.image_bytes.startswith(b"\x89PNG")  # re-encoded as 8-bit RGB
    stored = np.asarray(Image.open(io.BytesIO(inputs.image_bytes)))
    np.testing.assert_array_equal(stored, inputs.image)


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 255)])
def test_transparent_pixels_are_composited_on_the_configured_background(tmp_path, background):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :10, 3] = 0  # transparent: the background shows
    rgba[:, 10:20, 3] = 255  # opaque: the colour
    rgba[:, 20:, 3] = 51  # 20% opaque
    inputs = _only_scene(tmp_path, {"x.png": Image.fromarray(rgba, "RGBA")}, alpha_background=background).load()
    np.testing.assert_array_equal(inputs.image[:, :10], np.broadcast_to(background, (H, 10, 3)))
    np.testing.assert_array_equal(inputs.image[:, 10:20], np.broadcast_to((200, 100, 50), (H, 10, 3)))
    mixed = 0.2 * np.array([200, 100, 50]) + 0.8 * np.array(background)
    np.testing.assert_allclose(inputs.image[0, 25], mixed, atol=1)


def test_palette_transparency_is_composited_too(tmp_path):
    palette = Image.new("P", (W, H), 0)
    palette.putpalette([10, 20, 30, 250, 240, 230] + [0] * 762)
    palette.paste(1, (0, 0, W // 2, H))
    palette.info["transparency"] = 1  # palette entry 1 is transparent
    inputs = _only_scene(tmp_path, {"x.png": palette}, alpha_background=(0, 255, 0)).load()
    np.testing.assert_array_equal(inputs.image[0, 0], (0, 255, 0))
    np.testing.assert_array_equal(inputs.image[0, -1], (10, 20, 30))


def test_an_rgb_png_is_stored_as_given(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    folder = _folder(tmp_path, {"x.png": Image.fromarray(rgb)})
    (scene,) = sources.folder_scenes(*folder)
    inputs = scene.load()
    np.testing.assert_array_equal(inputs.image, rgb)
    assert inputs.image_bytes == (folder[0] / "x.png").read_bytes()


def test_a_fit_without_image_is_counted_as_missing_image(tmp_path):
    folder = _folder(tmp_path, {"x.png": Image.new("RGB", (W, H))}, fits=("x", "orphan"))
    scenes = sources.folder_scenes(*folder)
    assert [s.image_id for s in scenes] == ["orphan", "x"]
    with pytest.raises(examples.SkipExample, match="missing_image") as skip:
        scenes[0].load()
    assert "orphan.npz" in skip.value.detail
    stats = scene_outcome.PrepStats()
    stats.add(scene_outcome.SceneOutcome(0, "orphan", skip.value.reason, skip.value.detail))
    assert stats.to_dict()["skip_reasons"] == {"missing_image": 1}


def test_two_images_with_one_id_are_refused_naming_both(tmp_path):
    folder = _folder(tmp_path, {"x.jpg": Image.new("RGB", (W, H)), "x.png": Image.new("RGB", (W, H))})
    with pytest.raises(sources.InputError, match=r"x\.jpg and x\.png"):
        sources.folder_scenes(*folder)


def test_two_fits_with_one_id_are_refused_naming_both(tmp_path):
    image_dir, fits_dir, path = _folder(tmp_path, {"x.png": Image.new("RGB", (W, H))})
    (fits_dir / "x.json").write_text("{}")
    with pytest.raises(sources.InputError, match=r"x\.json and x\.npz"):
        sources.folder_scenes(image_dir, fits_dir, path)


def test_a_captions_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    lines = [json.dumps({"image": "x", "caption": "fine"}), b'{"image": "y", "caption": "caf\xe9"}']
    folder = _folder(tmp_path, {"x.png": Image.new("RGB", (W, H))}, lines=lines)
    with pytest.raises(captions.CaptionsError, match=r"captions\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        sources.folder_scenes(*folder)


@pytest.mark.parametrize("keys", [("x.png", "x.png"), ("x", "x.png"), ("x", "x")])
def test_two_caption_lines_for_one_image_are_refused_naming_it(tmp_path, keys):
    lines = [json.dumps({"image": key, "caption": f"caption {i}"}) for i, key in enumerate(keys)]
    folder = _folder(tmp_path, {"x.png": Image.new("RGB", (W, H))}, lines=["", *lines])
    with pytest.raises(captions.CaptionsError, match=r"2 caption lines for image x\.png \(lines 2, 3\)"):
        sources.folder_scenes(*folder)


@pytest.mark.parametrize("line", ['{"image": "x", "caption": null}', '{"image": "x", "caption": 3}', "[1, 2]"])
def test_a_caption_must_be_text(tmp_path, line):
    folder = _folder(tmp_path, {"x.png": Image.new("RGB", (W, H))}, lines=[line])
    with pytest.raises(captions.CaptionsError, match=r"captions\.jsonl:1: expected"):
        sources.folder_scenes(*folder)


@pytest.mark.parametrize(
    ("K", "match"),
    [
        ([[50.0, 0, 10 * W], [0, 50.0, H / 2], [0, 0, 1]], r"principal point \(400\.0, 15\.0\) px is outside"),
        ([[50.0, 0, W / 2], [0, 50.0, -5.0], [0, 0, 1]], r"principal point \(20\.0, -5\.0\) px is outside"),
        ([[0.05, 0, W / 2], [0, 0.05, H / 2], [0, 0, 1]], r"fx = 0\.05 px gives a 180 deg field of view"),
        ([[1e6, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]], r"fx = 1e\+06 px gives a 0\.00229 deg"),
    ],
)
def test_a_camera_that_does_not_fit_its_image_is_skipped(tmp_path, K, match):
    image_dir, fits_dir, path = _folder(tmp_path, {"x.png": Image.new("RGB", (W, H))}, fits=())
    save_scene_fit(fits_dir / "x.npz", _fit(np.array(K, np.float32)))
    (scene,) = sources.folder_scenes(image_dir, fits_dir, path)
    with pytest.raises(examples.SkipExample, match=match) as skip:
        scene.load()
    assert skip.value.reason == "bad_intrinsics"


def test_scenes_survive_the_json_lines_beam_workers_read():
    scenes = [
        sources.FolderScene("a", "/in/a.png", "/fits/a.npz", "a caption\nwith é", 512, (1, 2, 3)),
        sources.MissingImageScene("b", "/fits/b.json", "/in"),
        *sources.synthetic_scenes(num=2, width=64, height=48, seed=3, min_people=1, max_people=2),
    ]
    lines = [sources.scene_to_json(i, scene) for i, scene in enumerate(scenes)]
    assert all("\n" not in line for line in lines)
    assert [sources.scene_from_json(line) for line in lines] == list(enumerate(scenes))
