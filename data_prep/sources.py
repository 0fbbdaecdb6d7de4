"""Where scenes come from: a folder of real images + fits + captions, or generated synthetic scenes.

A source yields `RawScene`s lazily; `RawScene.load()` reads/generates the inputs and raises
`SkipExample` for bad ones (mapping `FitError`s onto countable reasons).

Real-data layout:
- `image_dir/<stem>.{jpg,jpeg,png}` (sorted by file name),
- `fits_dir/<stem>.npz` or `<stem>.json` (format of `data_prep.fits`),
- `captions_jsonl`: one JSON object per line, `{"image": "<file name or stem>", "caption": "..."}`.

Pixels are taken as stored (EXIF orientation is not applied, as OpenCV's and TFDS's decoders do not apply
it either); a photo with an EXIF rotation tag, or not an RGB PNG/JPEG, is stored re-encoded as PNG.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_prep.examples import SkipExample
from data_prep.fits import FitError, SceneFit, load_scene_fit

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


@dataclasses.dataclass(frozen=True)
class RawScene:
    image_id: str
    load: Callable[[], SceneInputs]


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 (H, W, 3) image."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8), "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_image_file(path: pathlib.Path) -> tuple[np.ndarray, bytes]:
    """RGB uint8 pixels and bytes to store (the file itself if PNG/JPEG RGB, else re-encoded PNG)."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            keep = img.format in ("PNG", "JPEG") and img.mode == "RGB" and img.getexif().get(0x0112, 1) == 1
            pixels = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise SkipExample("unreadable_image", f"{path}: {err}") from err
    return pixels, data if keep else encode_png(pixels)


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


def _read_captions(path: pathlib.Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            name, caption = str(record["image"]), str(record["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: expected {{'image': ..., 'caption': ...}} ({err})") from err
        captions[name] = caption
        captions.setdefault(pathlib.Path(name).stem, caption)
    return captions


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


def folder_scenes(
    image_dir: str | pathlib.Path,
    fits_dir: str | pathlib.Path,
    captions_jsonl: str | pathlib.Path,
    resolution: int | None = None,
) -> Iterator[RawScene]:
    """Real scenes, one per image file (sorted); see the module docstring for the layout.

    `resolution`: resize + centre-crop every photo (and its camera) to a square of that size; None keeps
    the photos as they are.
    """
    image_dir, fits_dir = pathlib.Path(image_dir), pathlib.Path(fits_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    captions = _read_captions(pathlib.Path(captions_jsonl))
    for path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):

        def load(path: pathlib.Path = path) -> SceneInputs:
            fit_path = next(
                (
                    fits_dir / f"{path.stem}{ext}"
                    for ext in (".npz", ".json")
                    if (fits_dir / f"{path.stem}{ext}").exists()
                ),
                None,
            )
            if fit_path is None:
                raise SkipExample("missing_fit", f"no {fits_dir}/{path.stem}.npz or .json")
            caption = captions.get(path.name, captions.get(path.stem))
            if caption is None:
                raise SkipExample("missing_caption", f"{path.name} has no line in the captions file")
            fit = load_fit(fit_path)
            image, data = decode_image_file(path)
            if (fit.width, fit.height) != (image.shape[1], image.shape[0]):
                raise SkipExample(
                    "size_mismatch", f"fit is for {fit.width}x{fit.height}, image is {image.shape[1]}x{image.shape[0]}"
                )
            inputs = SceneInputs(image=image, image_bytes=data, fit=fit, caption=caption)
            return inputs if resolution is None else crop_scene(inputs, resolution)

        yield RawScene(image_id=path.stem, load=load)


def synthetic_scenes(
    body: Any,
    get_renderer: Callable[[int, int], Any],
    *,
    num: int,
    width: int,
    height: int,
    seed: int,
    min_people: int,
    max_people: int,
) -> Iterator[RawScene]:
    """`num` random scenes (`data_prep.scenes`), each from its own RNG `default_rng([seed, index])`.

    `get_renderer(width, height)` gives the renderer that shades the "photo" (share the pipeline's: one GL
    context per process).
    """
    from data_prep.scenes import posed_synthetic_scene, shade_scene

    for index in range(num):

        def load(index: int = index) -> SceneInputs:
            rng = np.random.default_rng([seed, index])
            fit, caption, posed = posed_synthetic_scene(rng, body, width, height, min_people, max_people)
            meshes = [(verts, body.faces) for verts, _ in posed]
            image = shade_scene(get_renderer(width, height), meshes, fit.K, rng)
            return SceneInputs(image=image, image_bytes=encode_png(image), fit=fit, caption=caption, posed=posed)

        yield RawScene(image_id=f"synthetic_{seed}_{index:06d}", load=load)
