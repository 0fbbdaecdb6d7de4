"""`python -m launch.prep`: --help, and a tiny synthetic run writing shards, report and previews."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep import dataset
from tests.fixtures_prep import EXPECTED_SKIPS, GOOD, write_real_inputs
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
    assert "--data_dir" in result.stdout and "--preview" in result.stdout and "--beam_pipeline_options" in result.stdout


def test_missing_data_dir_is_a_usage_error():
    result = _run("--config=configs/prep_synthetic.py")
    assert result.returncode != 0
    assert "--data_dir" in result.stderr


def test_refusals_are_one_line_errors_before_any_work(tmp_path):
    result = _run(
        "--config=configs/prep_synthetic.py",
        f"--data_dir={tmp_path / 'data'}",
        f"--config.cache_dir={tmp_path / 'cache'}",
        "--beam_pipeline_options=direct_num_workers=2",
    )
    assert (
        result.returncode != 0
        and "prep: --beam_pipeline_options='direct_num_workers=2' names no runner" in result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()
    result = _run("--config=configs/prep_synthetic.py", "--data_dir=gs://bucket/pc", f"--config.cache_dir={tmp_path}")
    assert result.returncode != 0 and "prep: data_dir gs://bucket/pc is a URL" in result.stderr


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
    embedded = np.concatenate([source[i]["has_face_embedding"] for i in range(len(source))])
    embeddings = np.concatenate([source[i]["face_embedding"] for i in range(len(source))])
    assert visible.sum() == report["faces_visible"] and embedded.sum() == report["faces_embedded"]
    np.testing.assert_array_equal(embedded, visible)  # a face model is configured: every visible face embedded
    assert embeddings[embedded].any(axis=-1).all() and not embeddings[~embedded].any()


def test_real_config_run(tmp_path):
    overrides = write_real_inputs(tmp_path / "inputs")
    data_dir = tmp_path / "data"
    result = _run(
        "--config=configs/prep_real.py",
        f"--data_dir={data_dir}",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
        "--config.resolution=64",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((dataset.version_dir(data_dir) / dataset.REPORT_FILE).read_text())
    assert report["written"] == len(GOOD) and report["skip_reasons"] == EXPECTED_SKIPS
    assert {tuple(s[:2]) for s in report["skipped_examples"]} == {
        ("nofit", "missing_fit"), ("farcam", "bad_intrinsics"), ("orphan", "missing_image")
    }  # fmt: skip
    # Person 2 of "outside" stands far off the image: counted, with no pixels in any map.
    assert report["people_not_visible"] == 1 and report["people_not_visible_examples"] == [
        ["outside", 1, "outside_image"]
    ]
    # No face model: the renderer's visibility is kept, and no face has an embedding.
    assert report["faces_embedded"] == 0 and report["faces_visible"] >= 1
    assert report["face_not_embedded_reasons"] == {"no_face_model": report["faces_visible"]}
    source = dataset.open_split(data_dir)
    visible = np.concatenate([source[i]["face_visible"] for i in range(len(source))])
    assert visible.sum() == report["faces_visible"]
    assert not any(
        source[i]["has_face_embedding"].any() or source[i]["face_embedding"].any() for i in range(len(source))
    )
    example = next(source[i] for i in range(len(source)) if source[i]["image_id"] == "two")
    assert example["num_people"] == 2 and example["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(example["original_size"], [64, 96])
    np.testing.assert_array_equal(example["crop_top_left"], [0, 16])
    assert "latent_mean" not in example  # no SDXL folder configured
    assert (example["instance"] == 1).any() and (example["instance"] == 2).any()


def test_sdxl_encoders_from_config(tiny_sdxl_dir, tmp_path):  # noqa: F811
    from configs import prep_synthetic
    from data_prep import prep_job as prep

    cfg = prep_synthetic.get_config()
    cfg.cache_dir = str(tmp_path / "cache")
    spec = prep.factory_spec(cfg)
    assert not spec.include_sdxl and spec.text_encoder() is None and spec.vae_encoder() is None
    cfg.sdxl_folder = str(tiny_sdxl_dir)
    spec = prep.factory_spec(cfg)
    assert spec.text_encoder().encode(["a"])[0].shape == (1, 77, 40)
    assert spec.vae_encoder().vae.config.latent_channels == 4
    cfg.sdxl_vae_folder = str(tiny_sdxl_dir / "vae")  # a separate VAE folder (e.g. the fp16-fix VAE)
    assert prep.factory_spec(cfg).vae_encoder().encode(np.zeros((16, 16, 3), np.uint8))[0].shape == (4, 2, 2)


def _parse_prep_flags(*args: str):
    """The config launch.prep would run with these command-line arguments (absl + ml_collections parsing)."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["launch.prep", *args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def test_documented_resolution_values_are_reachable_from_the_command_line():
    from data_prep import prep_job

    assert _parse_prep_flags("--config=configs/prep_real.py").resolution == 1024
    assert _parse_prep_flags("--config=configs/prep_real.py", "--config.resolution=512").resolution == 512
    keep = _parse_prep_flags("--config=configs/prep_real.py", "--config.resolution=None")
    assert keep.resolution is None
    for key in ("image_dir", "fits_dir", "captions_jsonl"):
        keep[key] = "/x"
    prep_job.check_config(keep)
    bad = _parse_prep_flags("--config=configs/prep_real.py", "--config.resolution=big", "--config.image_dir=/x",
                            "--config.fits_dir=/x", "--config.captions_jsonl=/x")  # fmt: skip
    with pytest.raises(prep_job.ConfigError, match=r"config\.resolution = 'big'"):
        prep_job.check_config(bad)
