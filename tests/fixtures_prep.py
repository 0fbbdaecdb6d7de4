"""Shared prep inputs: a small real-data folder (images, Multi-HMR-format fits, captions) with bad inputs."""

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from data_prep.body_model import write_standin_smplx_model
from data_prep.fits import PersonFit, SceneFit, multihmr_intrinsics, save_scene_fit

WIDTH, HEIGHT = 96, 64
# What `write_real_inputs` holds, by id: people's camera x (m), and what prep must make of it.
GOOD = {"one": (0.0,), "two": (-0.3, 0.3), "outside": (0.0, 20.0)}  # "outside": person 2 is far off the image
EXPECTED_SKIPS = {"missing_fit": 1, "bad_intrinsics": 1, "missing_image": 1}


def write_real_inputs(root: pathlib.Path) -> dict[str, str]:
    """--config overrides for configs/prep_real.py reading the folders written under `root`.

    Written: GOOD scenes; `nofit` (image without fit), `farcam` (principal point far outside the image),
    `orphan` (fit without image).
    """
    images, fits = root / "images", root / "fits"
    images.mkdir(parents=True)
    fits.mkdir()
    upright = np.zeros((53, 3), np.float32)
    upright[0] = [np.pi, 0.0, 0.0]  # SMPL-X canonical (y up) -> OpenCV camera (y down), facing the camera
    rng = np.random.default_rng(0)
    far_camera = multihmr_intrinsics(WIDTH, HEIGHT)
    far_camera[0, 2] = 50 * WIDTH
    scenes = {
        **{stem: (xs, None) for stem, xs in GOOD.items()},
        "farcam": ((0.0,), far_camera),
        "orphan": ((0.0,), None),
    }
    for stem, (xs, K) in scenes.items():
        if stem != "orphan":
            Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(images / f"{stem}.png")
        people = tuple(PersonFit(np.zeros(10), np.zeros(10), upright, np.array([x, -0.3, 2.5])) for x in xs)
        K = multihmr_intrinsics(WIDTH, HEIGHT) if K is None else K
        save_scene_fit(fits / f"{stem}.npz", SceneFit(people, K, WIDTH, HEIGHT))
    Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(images / "nofit.png")
    captions = root / "captions.jsonl"
    stems = [*scenes, "nofit"]
    captions.write_text("".join(json.dumps({"image": f"{s}.png", "caption": s}) + "\n" for s in stems))
    smplx_root = write_standin_smplx_model(root / "smplx_root").parents[1]
    return {"image_dir": str(images), "fits_dir": str(fits), "captions_jsonl": str(captions),
            "smplx_model_root": str(smplx_root)}  # fmt: skip


class _FailingFactory:
    """An ExampleFactory that raises RuntimeError for one scene id: a fault no input check catches."""

    def __init__(self, factory, image_id: str):
        self._factory, self._image_id = factory, image_id

    def __call__(self, scene):
        if scene.image_id == self._image_id:
            raise RuntimeError("injected fault")
        return self._factory(scene)

    def close(self) -> None:
        self._factory.close()


@dataclasses.dataclass(frozen=True)
class FailOn:
    """Picklable factory maker (for Beam workers) whose factories fail on `image_id`."""

    make_factory: Callable
    image_id: str

    def __call__(self) -> _FailingFactory:
        return _FailingFactory(self.make_factory(), self.image_id)


@dataclasses.dataclass(frozen=True)
class CountBuilds:
    """Picklable factory maker that appends a line to `log` (one file for every process) per factory built."""

    make_factory: Callable
    log: str

    def __call__(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return self.make_factory()
