"""The captions file of real data: JSON lines `{"image": "<file name or stem>", "caption": "..."}`, UTF-8.

Problems raise `CaptionsError` naming the file and line: bytes that are not UTF-8, a line that is not such
an object, and two lines that caption the same image (by file name or by stem), which would otherwise make
one of them win silently.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib


class CaptionsError(ValueError):
    """The captions file does not follow the documented format."""


@dataclasses.dataclass(frozen=True)
class CaptionLine:
    number: int  # 1-based line number in the file
    key: str  # the "image" value: a file name or a stem
    caption: str


def read_caption_lines(path: pathlib.Path) -> list[CaptionLine]:
    """Every non-blank line of the captions file, in file order."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CaptionsError(f"cannot read the captions file {path}: {err}") from err
    lines = []
    for number, data in enumerate(raw.split(b"\n"), 1):
        try:
            text = data.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise CaptionsError(
                f"{path}:{number}: not valid UTF-8 (byte {data[err.start]:#04x} at column {err.start + 1}); "
                "save the captions file as UTF-8"
            ) from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise CaptionsError(
                f"{path}:{number}: not JSON ({err}); expected {{'image': ..., 'caption': ...}}"
            ) from err
        if not (
            isinstance(record, dict) and isinstance(record.get("image"), str) and isinstance(record.get("caption"), str)
        ):
            raise CaptionsError(
                f"{path}:{number}: expected {{'image': <str>, 'caption': <str>}}, got {text.strip()[:200]}"
            )
        lines.append(CaptionLine(number, record["image"], record["caption"]))
    return lines


class Captions:
    """Lookup of one caption per image file; see the module docstring."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._by_key: dict[str, list[CaptionLine]] = {}
        for line in read_caption_lines(path):
            self._by_key.setdefault(line.key, []).append(line)

    def caption_for(self, image_file: pathlib.Path) -> str | None:
        """The caption of `image_file` (matched by file name or stem), None if it has none."""
        keys = dict.fromkeys((image_file.name, image_file.stem))
        lines = [line for key in keys for line in self._by_key.get(key, [])]
        if len(lines) > 1:
            numbers = ", ".join(str(line.number) for line in sorted(lines, key=lambda line: line.number))
            raise CaptionsError(
                f"{self.path}: {len(lines)} caption lines for image {image_file.name} (lines {numbers}); keep one"
            )
        return lines[0].caption if lines else None
