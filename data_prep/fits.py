"""SMPL-X scene fits in Multi-HMR's output convention: types, validation, file I/O.

File format (one file per image):

- ``.npz`` (read with ``allow_pickle=False``) or ``.json`` (the same keys as nested lists):

  ==============  ==============  ==============================================================
  key             shape           meaning
  ==============  ==============  ==============================================================
  ``K``           (3, 3)          OpenCV intrinsics (x right, y down, z forward), pixels
  ``image_size``  (2,)            (W, H) in pixels
  ``betas``       (N, 10)         SMPL-X shape
  ``expression``  (N, 10)         SMPL-X expression
  ``rotvec``      (N, 53, 3)      axis-angle: [global orient, 21 body, 15 left hand, 15 right hand, jaw]
  ``transl``      (N, 3)          camera-frame position (metres) of the HEAD joint (Multi-HMR)
  ==============  ==============  ==============================================================

N >= 1. Every value must be finite. Problems raise :class:`FitError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_BETAS = 10
NUM_EXPRESSION = 10
NUM_ROTVEC = 53  # global + 21 body + 15 left hand + 15 right hand + jaw
PERSON_FIELDS = {
    "betas": (NUM_BETAS,),
    "expression": (NUM_EXPRESSION,),
    "rotvec": (NUM_ROTVEC, 3),
    "transl": (3,),
}
SCENE_KEYS = ("K", "image_size", *PERSON_FIELDS)


class FitError(ValueError):
    """A fit file or fit object that does not follow the documented format."""


@dataclass(frozen=True)
class PersonFit:
    """One person's SMPL-X parameters (Multi-HMR convention, float32).

    betas (10,), expression (10,), rotvec (53, 3) axis-angle
    [global orient, 21 body, 15 left hand, 15 right hand, jaw], transl (3,) = camera-frame head joint (m).
    """

    betas: np.ndarray
    expression: np.ndarray
    rotvec: np.ndarray
    transl: np.ndarray

    def __post_init__(self) -> None:
        for name, shape in PERSON_FIELDS.items():
            value = np.asarray(getattr(self, name), dtype=np.float32)
            _check_array(value, shape, f"field '{name}'")
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class SceneFit:
    """All people of one image plus the camera: K (3, 3) OpenCV intrinsics, image width/height in px."""

    people: tuple[PersonFit, ...]
    K: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "people", tuple(self.people))
        if not self.people:
            raise FitError("scene has zero people, expected at least 1")
        if not all(isinstance(p, PersonFit) for p in self.people):
            raise FitError("scene 'people' must hold PersonFit objects")
        K = np.asarray(self.K, dtype=np.float32)
        _check_array(K, (3, 3), "field 'K'")
        object.__setattr__(self, "K", K)
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise FitError(f"image size must be positive, got (W, H) = ({self.width}, {self.height})")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def num_people(self) -> int:
        return len(self.people)


def _check_array(value: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if value.shape != shape:
        raise FitError(f"{what} has shape {value.shape}, expected {shape}")
    if not np.all(np.isfinite(value)):
        raise FitError(f"{what} contains NaN or inf, expected finite values")


def multihmr_intrinsics(width: int, height: int, fov_deg: float = 60.0) -> np.ndarray:
    """Multi-HMR camera at W x H: f = max(W, H) / (2 tan(fov / 2)), principal point (W / 2, H / 2)."""
    focal = max(width, height) / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], np.float32)


def scene_from_arrays(arrays: dict, source: str = "<arrays>") -> SceneFit:
    """Validate a dict of the documented keys and build a SceneFit; errors name ``source`` and the field."""
    for key in SCENE_KEYS:
        if key not in arrays:
            raise FitError(f"{source}: missing key '{key}'")
    try:
        values = {key: np.asarray(arrays[key], dtype=np.float64) for key in SCENE_KEYS}
    except (TypeError, ValueError) as err:
        raise FitError(f"{source}: a field is not a numeric array ({err})") from err
    try:
        _check_array(values["K"], (3, 3), "field 'K'")
        _check_array(values["image_size"], (2,), "field 'image_size'")
    except FitError as err:
        raise FitError(f"{source}: {err}") from None
    num = values["betas"].shape[0] if values["betas"].ndim >= 1 else 0
    if num == 0:
        raise FitError(f"{source}: field 'betas' holds zero people, expected at least 1")
    people = []
    for i in range(num):
        fields = {}
        for name, shape in PERSON_FIELDS.items():
            array = values[name]
            if array.ndim != len(shape) + 1 or array.shape[0] != num:
                raise FitError(f"{source}: field '{name}' has shape {array.shape}, expected {(num, *shape)}")
            try:
                _check_array(array[i], shape, f"person {i} field '{name}'")
            except FitError as err:
                raise FitError(f"{source}: {err}") from None
            fields[name] = array[i]
        people.append(PersonFit(**fields))
    width, height = values["image_size"]
    if width != int(width) or height != int(height) or width <= 0 or height <= 0:
        raise FitError(f"{source}: field 'image_size' = {values['image_size'].tolist()}, expected positive ints")
    return SceneFit(people=tuple(people), K=values["K"], width=int(width), height=int(height))


def scene_to_arrays(fit: SceneFit) -> dict[str, np.ndarray]:
    """The documented keys as stacked arrays (float32; image_size int64)."""
    stacked = {name: np.stack([getattr(p, name) for p in fit.people]) for name in PERSON_FIELDS}
    return {"K": fit.K, "image_size": np.array([fit.width, fit.height], np.int64), **stacked}


def load_scene_fit(path: str | os.PathLike) -> SceneFit:
    """Read a ``.npz`` (no pickles) or ``.json`` fit file; raises FitError on any format problem."""
    path = Path(path)
    if not path.exists():
        raise FitError(f"{path}: file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except ValueError as err:  # object arrays need pickles
            raise FitError(f"{path}: unreadable npz ({err})") from err
    elif suffix == ".json":
        try:
            arrays = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise FitError(f"{path}: invalid JSON ({err})") from err
        if not isinstance(arrays, dict):
            raise FitError(f"{path}: top level must be an object with keys {list(SCENE_KEYS)}")
    else:
        raise FitError(f"{path}: unknown extension '{suffix}', expected .npz or .json")
    return scene_from_arrays(arrays, source=str(path))


def save_scene_fit(path: str | os.PathLike, fit: SceneFit) -> Path:
    """Write ``fit`` as ``.npz`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise FitError(f"{path}: save_scene_fit writes .npz files only")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **scene_to_arrays(fit))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
