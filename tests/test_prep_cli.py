"""`python -m launch.prep`: --help, and a tiny synthetic run writing shards, report and previews."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

from data_prep import dataset
from tests.fixtures_sdxl import tiny_sdxl_dir  # noqa: F401  (pytest fixture)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "launch.prep", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_help_exits_zero():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "--data_dir" in result.stdout and "--preview" in result.stdout


def test_missing_data_dir_is_a_usage_error():
    result = _run("--config=configs/prep_synthetic.py")
    assert result.returncode != 0
    assert "--data_dir" in result.stderr


def test_tiny_synthetic_run(tmp_path):
    data_dir = tmp_path / "data"
    result = _run(
        "--config=configs/prep_synthetic.py",
        f"--data_dir={data_dir}",
        "--config.num_examples=4",
        "--config.width=256",
        "--config.height=256",
        "--config.max_people=2",
        "--config.standin_face_models=True",
        f"--config.cache_dir={tmp_path / 'cache'}",
        "--config.preview_tile=96",
        "--preview=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    version = dataset.version_dir(data_dir)
    assert sorted(version.glob("*.array_record-*")), list(version.iterdir())
    report = json.loads((version / dataset.REPORT_FILE).read_text())
    assert report["written"] + report["skipped"] == 4
    assert report["written"] >= 1
    assert report["config"]["width"] == 256
    assert report["faces_visible"] + report["faces_not_visible"] == report["people"]
    assert report["faces_visible"] >= 1  # seed 0 at 256 px has frontal, unoccluded faces

    previews = sorted((data_dir / "preview").glob("*.png"))
    assert len(previews) == min(2, report["written"])
    sheet = np.asarray(Image.open(previews[0]))
    assert sheet.shape[1] == 7 * 96 and sheet.std() > 0

    source = dataset.open_split(data_dir)
    assert len(source) == report["written"]
    example = source[0]
    assert example["image"].shape == (256, 256, 3)
    assert example["depth"].shape == (256, 256) and (example["depth"] > 0).any()
    assert 1 <= example["num_people"] <= 2
    visible = np.concatenate([source[i]["face_visible"] for i in range(len(source))])
    embeddings = np.concatenate([source[i]["face_embedding"] for i in range(len(source))])
    assert visible.sum() == report["faces_visible"]
    assert embeddings[visible].any(axis=-1).all() and not embeddings[~visible].any()


def test_real_config_run(tmp_path):
    from data_prep.body_model import write_standin_smplx_model
    from data_prep.fits import PersonFit, SceneFit, multihmr_intrinsics, save_scene_fit

    images, fits = tmp_path / "images", tmp_path / "fits"
    images.mkdir()
    fits.mkdir()
    upright = np.zeros((53, 3), np.float32)
    upright[0] = [np.pi, 0.0, 0.0]  # SMPL-X canonical (y up) -> OpenCV camera (y down), facing the camera
    rng = np.random.default_rng(0)
    for stem, xs in (("two", (-0.3, 0.3)), ("one", (0.0,)), ("nofit", (0.0,))):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(images / f"{stem}.png")
        people = tuple(PersonFit(np.zeros(10), np.zeros(10), upright, np.array([x, -0.3, 2.5])) for x in xs)
        if stem != "nofit":
            save_scene_fit(fits / f"{stem}.npz", SceneFit(people, multihmr_intrinsics(96, 64), 96, 64))
    captions = tmp_path / "captions.jsonl"
    captions.write_text(
        "".join(json.dumps({"image": f"{s}.png", "caption": s}) + "\n" for s in ("two", "one", "nofit"))
    )
    smplx_root = write_standin_smplx_model(tmp_path / "smplx_root").parents[1]

    data_dir = tmp_path / "data"
    result = _run(
        "--config=configs/prep_real.py",
        f"--data_dir={data_dir}",
        f"--config.image_dir={images}",
        f"--config.fits_dir={fits}",
        f"--config.captions_jsonl={captions}",
        f"--config.smplx_model_root={smplx_root}",
        "--config.resolution=64",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((dataset.version_dir(data_dir) / dataset.REPORT_FILE).read_text())
    assert report["written"] == 2 and report["skip_reasons"] == {"missing_fit": 1}
    assert report["face_not_visible_reasons"].get("no_face_model", 0) >= 1  # no face model configured
    source = dataset.open_split(data_dir)
    example = next(source[i] for i in range(len(source)) if source[i]["image_id"] == "two")
    assert example["num_people"] == 2 and example["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(example["original_size"], [64, 96])
    np.testing.assert_array_equal(example["crop_top_left"], [0, 16])
    assert "latent_mean" not in example  # no SDXL folder configured
    assert (example["instance"] == 1).any() and (example["instance"] == 2).any()


def test_sdxl_encoders_from_config(tiny_sdxl_dir):  # noqa: F811
    from configs import prep_real
    from data_prep import prep_job as prep

    cfg = prep_real.get_config()
    assert prep._sdxl_encoders(cfg) == (None, None)
    cfg.sdxl_folder = str(tiny_sdxl_dir)
    text, vae = prep._sdxl_encoders(cfg)
    assert text.encode(["a"])[0].shape == (1, 77, 40) and vae.vae.config.latent_channels == 4
    cfg.sdxl_vae_folder = str(tiny_sdxl_dir / "vae")  # a separate VAE folder (e.g. the fp16-fix VAE)
    assert prep._sdxl_encoders(cfg)[1].encode(np.zeros((16, 16, 3), np.uint8))[0].shape == (4, 2, 2)
