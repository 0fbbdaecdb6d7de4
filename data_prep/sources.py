"""Where scenes come from: a folder of real images + fits + captions, or generated synthetic scenes.

A source is a list of `RawScene`s, each a small description with a unique `image_id` that any process
(e.g. a Beam worker) can load: `scene.load(resources)` reads or generates the inputs and raises
`SkipExample` for bad ones. `resources` is that process's `pipeline.ExampleFactory` (its body model and
renderer, which synthetic scenes use). The scene types here are JSON-serialisable (`scene_to_json`).

Real-data layout (`folder_scenes`):
- `image_dir/<stem>.{jpg,jpeg,png}` (pixel conversions: `data_prep.image_files`),
- `fits_dir/<stem>.npz` or `<stem>.json` (format of `data_prep.fits`),
- `captions_jsonl`: `data_prep.captions`.
The stem is the example id; scenes are sorted by it. Refused before anything is prepared (`InputError`,
`CaptionsError`): two images or two fits with one stem, and captions-file problems. Counted as skipped, with
a reason: an image without fit (`missing_fit`) or caption (`missing_caption`), a fit without image
(`missing_image`), a camera that does not fit its image (`bad_intrinsics`), and the fit / image problems of
`data_prep.fits` and `data_prep.image_files`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from data_prep.captions import Captions
from data_prep.examples import SkipExample, validate_camera
from data_prep.fits import FitError, SceneFit, load_scene_fit
from data_prep.image_files import decode_image_file, encode_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FIT_SUFFIXES = (".npz", ".json")
WHITE = (255, 255, 255)


class InputError(ValueError):
    """The input folders cannot be used as they are; nothing is prepared."""


@dataclasses.dataclass(frozen=True)
class SceneInputs:
    """`image` RGB uint8 (H, W, 3) and its encoded bytes (PNG or the source JPEG), the fit, the caption.

    `original_size` (height, width) of the source photo and `crop_top_left` (top, left) of the kept window
    in the resized photo, for SDXL's add_time_ids; None = the image is the source (no resize/crop).
    """

    image: np.ndarray
    image_bytes: bytes
    fit: SceneFit
    caption: str
    original_size: tuple[int, int] | None = None
    crop_top_left: tuple[int, int] = (0, 0)
    # Optional camera-frame (verts (V, 3), joints (127, 3)) per person, when the source already posed them.
    posed: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None


class SceneResources(Protocol):
    """What loading a scene may use: the process's body model and its renderer for a W x H image."""

    body: Any

    def renderer(self, width: int, height: int) -> Any: ...


class RawScene(Protocol):
    image_id: str

    def load(self, resources: SceneResources) -> SceneInputs: ...


def fit_skip_reason(err: FitError) -> str:
    """Countable reason for a FitError (classified by its message; unknown ones are 'malformed_fit')."""
    text = str(err)
    if "does not exist" in text:
        return "missing_fit"
    if "zero people" in text:
        return "zero_people"
    if "NaN or inf" in text:
        return "nonfinite_params"
    if "has shape" in text:
        return "bad_shape"
    return "malformed_fit"


def load_fit(path: pathlib.Path) -> SceneFit:
    try:
        return load_scene_fit(path)
    except FitError as err:
        raise SkipExample(fit_skip_reason(err), str(err)) from err


def crop_scene(inputs: SceneInputs, size: int) -> SceneInputs:
    """Resize (short side -> size) and centre-crop photo and camera to size x size (`render.square_crop`)."""
    from data_prep.render import square_crop

    fit = inputs.fit
    plan = square_crop(fit.K, fit.width, fit.height, size)
    cropped = SceneFit(people=fit.people, K=plan.K, width=size, height=size)
    if plan.is_identity:  # already size x size: the photo's own bytes are stored, not a re-encoded copy
        return SceneInputs(inputs.image, inputs.image_bytes, cropped, inputs.caption, plan.original_size)
    image = plan.apply(inputs.image)
    return SceneInputs(image, encode_png(image), cropped, inputs.caption, plan.original_size, plan.crop_top_left)


@dataclasses.dataclass(frozen=True)
class FolderScene:
    """One real photo with its fit file and caption (None: missing, counted when loaded).

    `resolution`: resize + centre-crop photo and camera to a square of that size; None keeps the photo's
    size. `alpha_background`: the RGB colour transparent pixels are composited over.
    """

    image_id: str
    image_path: str
    fit_path: str | None
    caption: str | None
    resolution: int | None = None
    alpha_background: tuple[int, int, int] = WHITE

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha_background", tuple(int(v) for v in self.alpha_background))

    def load(self, resources: SceneResources | None = None) -> SceneInputs:
        image_path = pathlib.Path(self.image_path)
        if self.fit_path is None:
            raise SkipExample("missing_fit", f"no fit {self.image_id}.npz or .json for {image_path}")
        if self.caption is None:
            raise SkipExample("missing_caption", f"{image_path.name} has no line in the captions file")
        fit = load_fit(pathlib.Path(self.fit_path))
        image, data = decode_image_file(image_path, self.alpha_background)
        if (fit.width, fit.height) != (image.shape[1], image.shape[0]):
            raise SkipExample(
                "size_mismatch", f"fit is for {fit.width}x{fit.height}, image is {image.shape[1]}x{image.shape[0]}"
            )
        validate_camera(fit.K, fit.width, fit.height)
        inputs = SceneInputs(image=image, image_bytes=data, fit=fit, caption=self.caption)
        return inputs if self.resolution is None else crop_scene(inputs, self.resolution)


@dataclasses.dataclass(frozen=True)
class MissingImageScene:
    """A fit file whose image is not in the image folder: always skipped as `missing_image`."""

    image_id: str
    fit_path: str
    image_dir: str

    def load(self, resources: SceneResources | None = None) -> SceneInputs:
        raise SkipExample(
            "missing_image", f"{self.fit_path} has no image {self.image_id}.jpg/.jpeg/.png in {self.image_dir}"
        )


@dataclasses.dataclass(frozen=True)
class SyntheticScene:
    """Random scene `index` of `seed` (`data_prep.scenes`), drawn from its own RNG `default_rng([seed, index])`,
    so that any process builds the same scene."""

    image_id: str
    seed: int
    index: int
    width: int
    height: int
    min_people: int
    max_people: int
    camera_distance: tuple[float, float] = (2.3, 3.6)  # see data_prep.scenes.SceneLayout
    place_anywhere: bool = False

    def load(self, resources: SceneResources) -> SceneInputs:
        from data_prep.scenes import SceneLayout, posed_synthetic_scene, shade_scene

        rng = np.random.default_rng([self.seed, self.index])
        body = resources.body
        layout = SceneLayout(tuple(self.camera_distance), self.place_anywhere)
        fit, caption, posed = posed_synthetic_scene(
            rng, body, self.width, self.height, self.min_people, self.max_people, layout
        )
        meshes = [(verts, body.faces) for verts, _ in posed]
        image = shade_scene(resources.renderer(self.width, self.height), meshes, fit.K, rng)
        return SceneInputs(image=image, image_bytes=encode_png(image), fit=fit, caption=caption, posed=posed)


_KINDS: dict[str, Callable[..., RawScene]] = {
    "folder": FolderScene,
    "missing_image": MissingImageScene,
    "synthetic": SyntheticScene,
}


def scene_to_json(index: int, scene: RawScene) -> str:
    """One line of JSON: the scene's position in its source, its kind and its fields."""
    kind = next((name for name, cls in _KINDS.items() if type(scene) is cls), None)
    if kind is None:
        raise TypeError(f"{type(scene).__name__} is not a serialisable scene type ({', '.join(_KINDS)})")
    return json.dumps({"index": index, "kind": kind, "fields": dataclasses.asdict(scene)})


def scene_from_json(line: str) -> tuple[int, RawScene]:
    """(index, scene) from a `scene_to_json` line."""
    record = json.loads(line)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record["fields"].items()}  # JSON has no tuples
    return int(record["index"]), _KINDS[record["kind"]](**fields)


def _files_by_stem(folder: pathlib.Path, suffixes: tuple[str, ...], what: str) -> dict[str, pathlib.Path]:
    """{stem: file} of the files in `folder` with one of `suffixes`; InputError if two share a stem."""
    found: dict[str, list[pathlib.Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in suffixes and path.is_file():
            found.setdefault(path.stem, []).append(path)
    clashes = [paths for paths in found.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(" and ".join(p.name for p in paths) for paths in clashes[:20])
        more = f" and {len(clashes) - 20} more" if len(clashes) > 20 else ""
        raise InputError(
            f"{folder}: {len(clashes)} {what} id(s) used by more than one file ({listed}{more}); the file stem is "
            f"the example id and must be unique: rename or remove the extra {what} files"
        )
    return {stem: paths[0] for stem, paths in found.items()}


def folder_scenes(
    image_dir: str | pathlib.Path,
    fits_dir: str | pathlib.Path,
    captions_jsonl: str | pathlib.Path,
    resolution: int | None = None,
    alpha_background: tuple[int, int, int] = WHITE,
) -> list[RawScene]:
    """Real scenes, one per image and one per fit without image, sorted by id; see the module docstring."""
    image_dir, fits_dir = pathlib.Path(image_dir).absolute(), pathlib.Path(fits_dir).absolute()
    for folder, what in ((image_dir, "image"), (fits_dir, "fit")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist")
    images = _files_by_stem(image_dir, IMAGE_SUFFIXES, "image")
    fits = _files_by_stem(fits_dir, FIT_SUFFIXES, "fit")
    captions = Captions(pathlib.Path(captions_jsonl))
    scenes: list[RawScene] = []
    for stem in sorted(images.keys() | fits.keys()):
        fit = str(fits[stem]) if stem in fits else None
        if stem not in images:
            scenes.append(MissingImageScene(stem, fit, str(image_dir)))
            continue
        caption = captions.caption_for(images[stem])
        scenes.append(FolderScene(stem, str(images[stem]), fit, caption, resolution, alpha_background))
    return scenes


def synthetic_scenes(
    *,
    num: int,
    width: int,
    height: int,
    seed: int,
    min_people: int,
    max_people: int,
    camera_distance: tuple[float, float] = (2.3, 3.6),
    place_anywhere: bool = False,
) -> list[RawScene]:
    """`num` random scenes (`SyntheticScene`), ids `synthetic_<seed>_<index>`."""
    return [
        SyntheticScene(
            f"synthetic_{seed}_{index:06d}",
            seed,
            index,
            width,
            height,
            min_people,
            max_people,
            tuple(camera_distance),
            place_anywhere,
        )
        for index in range(num)
    ]
