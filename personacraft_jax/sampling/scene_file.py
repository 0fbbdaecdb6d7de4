"""Scene files for `launch.sample`: who is where, who looks like whom, what to generate (JSON or YAML).

Format (JSON; `.yaml` / `.yml` read with `yaml.safe_load`); relative paths are relative to the scene file:

    {
      "prompt": "two people in a park",              # required
      "negative_prompt": null,                        # null / absent = zero negative embeddings (SDXL)
      "width": 1024, "height": 1024,                  # pixels, multiples of the models' size multiple (SDXL: 32)
      "steps": 30, "seeds": [0, 1],                   # one image per seed (the batch)
      "K": [[f, 0, cx], [0, f, cy], [0, 0, 1]],       # optional OpenCV intrinsics at width x height; default:
                                                      #   the first fit file's K rescaled, else Multi-HMR's 60 deg camera
      "scales": {"guidance": 5.0, "scnet": 1.0, "oben": 1.0, "identity": 0.8, "ip": 0.8},
      "oa_cfg": {"mode": "control", "scale": 1.0, "fraction": 0.5},
      "people": [
        {"name": "ann",
         "fit": {"file": "fits/scene.npz", "index": 0},           # a data_prep fit file (.npz / .json) ...
         "face": {"embedding": "faces/ann.npy"},                  # 512-d ArcFace .npy (allow_pickle=False)
         "shape": {"gamma": 0.5, "betas_from": ["ann", "bob"]}},  # beta = (1-g) beta_a + g beta_b
        {"name": "bob",
         "betas": [10 floats], "transl": [x, y, z],              # ... or inline SMPL-X parameters; optional
         "expression": [10 floats], "rotvec": [53 x 3],          #   (default: neutral, upright, facing the camera)
         "face": {"image": "faces/bob.jpg"},                      # a photo: the largest detected face is embedded
         "shape": {"reference": "ann"}}                           # take ann's betas (gamma 1 toward ann)
      ]
    }

`face: null` = no identity for that person. `betas_from` entries are person names or 10-number lists;
`reference` may carry a `gamma` (default 1) to interpolate from the person's own betas toward the reference's.
Shape control always reads the *fitted* betas (before any shape control), so the order of people does not
matter. Every problem raises `SceneFileError` naming the field (e.g. `people[1].shape.betas_from[0]`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data_prep.fits import (
    NUM_BETAS,
    NUM_EXPRESSION,
    NUM_ROTVEC,
    FitError,
    PersonFit,
    load_scene_fit,
    multihmr_intrinsics,
)
from personacraft_jax.body.shape_control import interpolate_betas
from personacraft_jax.sampling.guidance import MODES

EMBEDDING_DIM = 512
DEFAULT_SCALES = {"guidance": 5.0, "scnet": 1.0, "oben": 1.0, "identity": 0.8, "ip": 0.8}
DEFAULT_OA_CFG = {"mode": "control", "scale": 1.0, "fraction": 0.5}
TOP_KEYS = {"prompt", "negative_prompt", "width", "height", "steps", "seeds", "K", "scales", "oa_cfg", "people"}
PERSON_KEYS = {"name", "fit", "betas", "expression", "rotvec", "transl", "face", "shape"}


class SceneFileError(ValueError):
    """A scene file that does not follow the documented format; the message names the field."""


@dataclasses.dataclass(frozen=True)
class FaceInput:
    """Exactly one of: `embedding` (512,) float32, or `image` (a photo path, embedded by the launcher)."""

    embedding: np.ndarray | None = None
    image: pathlib.Path | None = None


@dataclasses.dataclass(frozen=True)
class PersonSpec:
    """One person: SMPL-X parameters after shape control, and the face input (None = no identity)."""

    name: str
    fit: PersonFit
    face: FaceInput | None
    shape: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """A validated scene file (see the module docstring)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    seeds: tuple[int, ...]
    K: np.ndarray
    scales: dict[str, float]
    oa_cfg: dict[str, Any]
    people: tuple[PersonSpec, ...]
    source: str = "<dict>"

    def resolved(self) -> dict[str, Any]:
        """JSON-ready resolved settings (what `settings.json` records)."""
        people = []
        for p in self.people:
            face = None
            if p.face is not None:
                face = {"image": str(p.face.image)} if p.face.image is not None else {"embedding": "given"}
            people.append({
                "name": p.name, "betas": p.fit.betas.tolist(), "expression": p.fit.expression.tolist(),
                "rotvec": p.fit.rotvec.tolist(), "transl": p.fit.transl.tolist(), "face": face, "shape": p.shape,
            })  # fmt: skip
        return {
            "source": self.source, "prompt": self.prompt, "negative_prompt": self.negative_prompt,
            "width": self.width, "height": self.height, "steps": self.steps, "seeds": list(self.seeds),
            "K": self.K.tolist(), "scales": self.scales, "oa_cfg": self.oa_cfg, "people": people,
        }  # fmt: skip


def standing_pose() -> np.ndarray:
    """(53, 3) zeros except the global orientation: pi about x (upright in OpenCV axes, facing the camera)."""
    rot = np.zeros((NUM_ROTVEC, 3), np.float32)
    rot[0, 0] = np.pi
    return rot


def _err(field: str, message: str) -> SceneFileError:
    return SceneFileError(f"{field}: {message}")


def _array(value: Any, shape: tuple[int, ...], field: str) -> np.ndarray:
    try:
        array = np.asarray(value, np.float32)
    except (TypeError, ValueError):
        raise _err(field, f"expected numbers of shape {shape}, got {value!r}") from None
    if array.shape != shape:
        raise _err(field, f"has shape {array.shape} (length {array.size}), expected {shape}")
    if not np.all(np.isfinite(array)):
        raise _err(field, "contains NaN or inf")
    return array


def _int(value: Any, field: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _err(field, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _err(field, f"expected a finite number, got {value!r}")
    return float(value)


def check_dimensions(width: int, height: int, multiple: int, reason: str = "the model's size multiple") -> None:
    """Raises `SceneFileError` naming `width` / `height` when one is not a multiple of `multiple`."""
    for key, value in (("width", width), ("height", height)):
        if value % multiple:
            raise _err(key, f"{value} is not a multiple of {multiple} ({reason})")


def _unknown(data: Mapping, allowed: set[str], field: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise _err(field, f"unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _path(base: pathlib.Path, value: Any, field: str) -> pathlib.Path:
    if not isinstance(value, str) or not value:
        raise _err(field, f"expected a file path, got {value!r}")
    path = pathlib.Path(os.path.expanduser(value))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise _err(field, f"file {str(path)!r} does not exist")
    return path


def _image_path(base: pathlib.Path, value: Any, field: str) -> pathlib.Path:
    """An existing file whose header PIL recognises as an image (decoding happens when it is embedded)."""
    from PIL import Image

    path = _path(base, value, field)
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError; broken PNG chunks: SyntaxError
        raise _err(field, f"{str(path)!r} is not an image PIL can read ({type(e).__name__}: {e})") from None
    return path


def _face(value: Any, base: pathlib.Path, field: str) -> FaceInput | None:
    hint = "give {'embedding': FILE.npy} or {'image': FILE}, or null for no identity"
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(set(value) & {"embedding", "image"}) != 1:
        raise _err(field, f"missing face input ({hint})")
    _unknown(value, {"embedding", "image"}, field)
    if "image" in value:
        return FaceInput(image=_image_path(base, value["image"], f"{field}.image"))
    path = _path(base, value["embedding"], f"{field}.embedding")
    try:
        embedding = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise _err(f"{field}.embedding", f"unreadable .npy ({e})") from None
    return FaceInput(embedding=_array(np.reshape(embedding, -1), (EMBEDDING_DIM,), f"{field}.embedding"))


def _fit(person: Mapping, base: pathlib.Path, field: str, fits: list) -> PersonFit:
    if "fit" in person:
        inline = sorted(set(person) & {"betas", "expression", "rotvec", "transl"})
        if inline:
            raise _err(field, f"give either 'fit' or inline parameters, not both (found {inline})")
        spec = person["fit"]
        spec = {"file": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping):
            raise _err(f"{field}.fit", f"expected a path or {{'file': PATH, 'index': N}}, got {spec!r}")
        _unknown(spec, {"file", "index"}, f"{field}.fit")
        path = _path(base, spec.get("file"), f"{field}.fit.file")
        try:
            scene = load_scene_fit(path)
        except FitError as e:
            raise _err(f"{field}.fit.file", str(e)) from None
        index = _int(spec.get("index", 0), f"{field}.fit.index")
        if index >= scene.num_people:
            raise _err(f"{field}.fit.index", f"{index} is out of range: {path.name} holds {scene.num_people} people")
        fits.append(scene)
        return scene.people[index]
    if "transl" not in person or "betas" not in person:
        raise _err(field, "needs 'fit' or inline 'betas' and 'transl'")
    return PersonFit(
        betas=_array(person["betas"], (NUM_BETAS,), f"{field}.betas"),
        expression=_array(person.get("expression", [0.0] * NUM_EXPRESSION), (NUM_EXPRESSION,), f"{field}.expression"),
        rotvec=_array(person["rotvec"], (NUM_ROTVEC, 3), f"{field}.rotvec") if "rotvec" in person else standing_pose(),
        transl=_array(person["transl"], (3,), f"{field}.transl"),
    )


def _betas_source(value: Any, fitted: Mapping[str, np.ndarray], field: str) -> np.ndarray:
    if isinstance(value, str):
        if value not in fitted:
            raise _err(field, f"unknown person {value!r}; people are {sorted(fitted)}")
        return fitted[value]
    return _array(value, (NUM_BETAS,), field)


def _shape(spec: Any, own: np.ndarray, fitted: Mapping[str, np.ndarray], field: str) -> np.ndarray:
    if not isinstance(spec, Mapping):
        raise _err(field, f"expected {{'gamma': g, 'betas_from': [a, b]}} or {{'reference': name}}, got {spec!r}")
    _unknown(spec, {"gamma", "betas_from", "reference"}, field)
    if ("betas_from" in spec) == ("reference" in spec):
        raise _err(field, "give exactly one of 'betas_from' and 'reference'")
    if "reference" in spec:
        gamma = _number(spec.get("gamma", 1.0), f"{field}.gamma")
        return interpolate_betas(own, _betas_source(spec["reference"], fitted, f"{field}.reference"), gamma)
    sources = spec["betas_from"]
    if not isinstance(sources, Sequence) or isinstance(sources, str) or len(sources) != 2:
        raise _err(f"{field}.betas_from", f"expected two entries [a, b], got {sources!r}")
    if "gamma" not in spec:
        raise _err(f"{field}.gamma", "required with 'betas_from'")
    a, b = (_betas_source(s, fitted, f"{field}.betas_from[{i}]") for i, s in enumerate(sources))
    return interpolate_betas(a, b, _number(spec["gamma"], f"{field}.gamma"))


def parse_scene(
    data: Any, base_dir: str | os.PathLike = ".", *, size_multiple: int = 1, source: str = "<dict>"
) -> SceneSpec:
    """Validates a scene dict (see the module docstring); `size_multiple` constrains width and height (the
    sampling job checks them against the loaded models: `scene_inputs.check_scene_size`)."""
    base = pathlib.Path(base_dir)
    if not isinstance(data, Mapping):
        raise _err("scene", f"top level must be an object, got {type(data).__name__}")
    _unknown(data, TOP_KEYS, "scene")
    if not isinstance(data.get("prompt"), str):
        raise _err("prompt", f"required string, got {data.get('prompt')!r}")
    negative = data.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _err("negative_prompt", f"expected a string or null, got {negative!r}")
    size = {key: _int(data.get(key, 1024), key, minimum=1) for key in ("width", "height")}
    check_dimensions(size["width"], size["height"], size_multiple)
    steps = _int(data.get("steps", 30), "steps", minimum=1)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise _err("seeds", f"expected a non-empty list of integers, got {seeds!r}")
    seeds = tuple(_int(s, f"seeds[{i}]") for i, s in enumerate(seeds))
    scales_in = data.get("scales", {})
    if not isinstance(scales_in, Mapping):
        raise _err("scales", f"expected an object, got {scales_in!r}")
    _unknown(scales_in, set(DEFAULT_SCALES), "scales")
    scales = {k: _number(scales_in.get(k, v), f"scales.{k}") for k, v in DEFAULT_SCALES.items()}
    oa_in = data.get("oa_cfg", {})
    if not isinstance(oa_in, Mapping):
        raise _err("oa_cfg", f"expected an object, got {oa_in!r}")
    _unknown(oa_in, set(DEFAULT_OA_CFG), "oa_cfg")
    oa = {**DEFAULT_OA_CFG, **oa_in}
    if oa["mode"] not in MODES:
        raise _err("oa_cfg.mode", f"{oa['mode']!r} is not one of {list(MODES)}")
    oa["scale"] = _number(oa["scale"], "oa_cfg.scale")
    oa["fraction"] = _number(oa["fraction"], "oa_cfg.fraction")
    if not 0.0 <= oa["fraction"] <= 1.0:
        raise _err("oa_cfg.fraction", f"{oa['fraction']} is not in [0, 1]")

    people_in = data.get("people")
    if not isinstance(people_in, list) or not people_in:
        raise _err("people", "required non-empty list")
    names, fits, raw = [], [], []
    for i, person in enumerate(people_in):
        field = f"people[{i}]"
        if not isinstance(person, Mapping):
            raise _err(field, f"expected an object, got {person!r}")
        _unknown(person, PERSON_KEYS, field)
        name = person.get("name", f"person{i}")
        if not isinstance(name, str) or not name or name in names:
            raise _err(f"{field}.name", f"expected a unique non-empty string, got {name!r}")
        if "face" not in person:
            raise _err(f"{field}.face", "missing face input (give {'embedding': FILE.npy} or {'image': FILE}, "
                       "or null for no identity)")  # fmt: skip
        names.append(name)
        raw.append((field, person, _fit(person, base, field, fits), _face(person["face"], base, f"{field}.face")))
    fitted = {name: fit.betas for name, (_, _, fit, _) in zip(names, raw)}
    people = []
    for name, (field, person, fit, face) in zip(names, raw):
        shape = person.get("shape")
        if shape is not None:
            fit = dataclasses.replace(fit, betas=_shape(shape, fit.betas, fitted, f"{field}.shape"))
        people.append(PersonSpec(name, fit, face, dict(shape) if shape is not None else None))

    if "K" in data:
        K = _array(data["K"], (3, 3), "K")
    elif fits:
        scale = np.array([[size["width"] / fits[0].width], [size["height"] / fits[0].height], [1.0]], np.float32)
        K = fits[0].K * scale
    else:
        K = multihmr_intrinsics(size["width"], size["height"])
    return SceneSpec(
        prompt=data["prompt"], negative_prompt=negative, width=size["width"], height=size["height"], steps=steps,
        seeds=seeds, K=K, scales=scales, oa_cfg=oa, people=tuple(people), source=source,
    )  # fmt: skip


def load_scene_file(path: str | os.PathLike, *, size_multiple: int = 1) -> SceneSpec:
    """Reads and validates a .json / .yaml / .yml scene file."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise SceneFileError(f"{path}: scene file does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SceneFileError(f"{path}: invalid YAML ({e})") from None
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SceneFileError(f"{path}: invalid JSON ({e})") from None
    else:
        raise SceneFileError(f"{path}: unknown extension {path.suffix!r}; expected .json, .yaml or .yml")
    try:
        return parse_scene(data, path.parent, size_multiple=size_multiple, source=str(path))
    except SceneFileError as e:
        raise SceneFileError(f"{path}: {e}") from None
