"""Photo files -> RGB uint8 pixels and the bytes to store (PNG or the source JPEG).

Conversions, so that the stored image is what the photo shows:
- 16-bit grayscale PNGs (Pillow modes `I;16*` / `I`) are scaled to 8 bits, v8 = round(v16 * 255 / 65535);
  16-bit colour PNGs are read as 8-bit RGB by Pillow itself;
- images with transparency (an alpha channel, or a PNG `tRNS` colour / palette entry) are composited
  over the configured `background` colour: out = (rgb * a + background * (255 - a)) / 255, rounded;
- everything else goes through Pillow's `convert("RGB")` (grayscale, palette, CMYK).

The file's own bytes are stored only for an RGB PNG/JPEG without an EXIF rotation tag; anything converted
is re-encoded as PNG. EXIF orientation is not applied (OpenCV's and TFDS's decoders do not apply it either).
Unreadable files raise `SkipExample('unreadable_image')` naming the file.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_prep.examples import SkipExample

_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 (H, W, 3) image."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8), "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _has_transparency(img: Image.Image) -> bool:
    return "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info


def _gray16_to_rgb8(img: Image.Image, path: pathlib.Path) -> np.ndarray:
    values = np.asarray(img).astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise SkipExample("unreadable_image", f"{path}: mode {img.mode} values outside 0..65535")
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """RGBA uint8 (H, W, 4) over an opaque `background` colour -> RGB uint8 (H, W, 3), rounded."""
    rgb = rgba[..., :3].astype(np.int64)
    alpha = rgba[..., 3:].astype(np.int64)
    bg = np.asarray(background, np.int64)
    return ((rgb * alpha + bg * (255 - alpha) + 127) // 255).astype(np.uint8)


def decode_image_file(path: pathlib.Path, background: tuple[int, int, int]) -> tuple[np.ndarray, bytes]:
    """RGB uint8 (H, W, 3) pixels and the bytes to store; `background` is the colour under transparency."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in _SIXTEEN_BIT_GRAY:
                pixels = _gray16_to_rgb8(img, path)
            elif _has_transparency(img):
                pixels = composite(np.asarray(img.convert("RGBA")), background)
            else:  # an RGB photo is read as is (no conversion copy)
                pixels = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
            keep = (
                img.format in ("PNG", "JPEG")
                and img.mode == "RGB"
                and "transparency" not in img.info
                and img.getexif().get(_EXIF_ORIENTATION, 1) == 1
            )
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise SkipExample("unreadable_image", f"{path}: {err}") from err
    return pixels, data if keep else encode_png(pixels)
