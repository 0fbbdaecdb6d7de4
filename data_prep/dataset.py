"""The PersonaCraft scenes dataset: a TFDS ArrayRecord builder, its report, and a random-access reader.

Layout: `data_dir/personacraft_scenes/<version>/` holds the ArrayRecord shards, `dataset_info.json`,
`features.json`, `metadata.json` (the prep counts) and, written last, `prep_report.json`. One data_dir holds
one dataset (synthetic or real; with or without SDXL encodings).

Variable number of people: per-person fields are Tensor features with a leading `None` axis (N = this
image's people); the loader pads them to the configured maximum and builds the validity mask. Multi-axis
arrays (maps, masks, SDXL inputs) are zlib-compressed raw bytes (TFDS `encoding='zlib'`), decoded with numpy;
no TensorFlow is needed for writing or reading.

Incompleteness: TFDS generates into a sibling `incomplete.XXXXXX_<version>/` folder and renames it to
`<version>/` only after every shard and `dataset_info.json` are written; an exception or Ctrl-C deletes that
folder, a hard kill leaves it behind under a name no reader looks at (`build_dataset` removes such leftovers
before building). So a `<version>/` folder exists only for a complete dataset. The prep counts are stored
inside it (`metadata.json`) before the rename; `prep_report.json` is derived from them and written atomically
(temp file + rename) afterwards, and re-created by a re-run if a crash came between the two.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import os
import pathlib
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_prep.examples import SkipExample
from personacraft_jax import atomic_write

NAME = "personacraft_scenes"
REPORT_FILE = "prep_report.json"
MAX_LISTED_SKIPS = 1000  # skipped examples listed by id in the report (all are counted)
ZLIB_LEVEL = 1  # of the zlib-encoded features; TFDS uses zlib's default, 6: ~3x the time for ~20% fewer bytes


def features(include_sdxl: bool) -> tfds.features.FeaturesDict:
    """The feature spec (see `data_prep.examples` for meanings and units)."""
    zlib = tfds.features.Encoding.ZLIB
    per_person = lambda *shape: tfds.features.Tensor(shape=(None, *shape), dtype=np.float32)
    spec: dict[str, Any] = {
        "image_id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
        "caption": tfds.features.Text(),
        "depth": tfds.features.Tensor(shape=(None, None), dtype=np.float16, encoding=zlib),
        "normal": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding=zlib),
        "instance": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding=zlib),
        "amodal": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding=zlib),
        "occlusion": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding=zlib),
        "depth_edges": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding=zlib),
        "face_kps": per_person(5, 2),
        "face_visible": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
        "num_people": tfds.features.Tensor(shape=(), dtype=np.int32),
        "betas": per_person(10),
        "expression": per_person(10),
        "pose": per_person(53, 3),
        "transl": per_person(3),
        "K": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
        "face_embedding": per_person(512),
        "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "crop_top_left": tfds.features.Tensor(shape=(2,), dtype=np.int32),
    }
    if include_sdxl:
        spec.update(
            latent_mean=tfds.features.Tensor(shape=(None, None, None), dtype=np.float32, encoding=zlib),
            latent_logvar=tfds.features.Tensor(shape=(None, None, None), dtype=np.float32, encoding=zlib),
            prompt_embeds=tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding=zlib),
            pooled_prompt_embeds=tfds.features.Tensor(shape=(None,), dtype=np.float32),
        )
    return tfds.features.FeaturesDict({key: _at_zlib_level(feature, ZLIB_LEVEL) for key, feature in spec.items()})


class LeveledZlibTensor(tfds.features.Tensor):
    """`tfds.features.Tensor(encoding='zlib')` that compresses at a given zlib level.

    Saved as (and read back by TFDS as) a plain zlib Tensor: `features.json` is unchanged and decoding
    (`zlib.decompress`) does not depend on the level.
    """

    def __init__(self, *, shape: tuple, dtype: Any, level: int):
        super().__init__(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.ZLIB)
        self._raw = tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)
        self._level = level

    @property
    def _fully_qualified_class_name(self) -> str:
        return f"{tfds.features.Tensor.__module__}.{tfds.features.Tensor.__name__}"

    def encode_example(self, example_data: Any) -> Any:
        encoded = self._raw.encode_example(example_data)  # checked dtype / shape, raw bytes
        if isinstance(encoded, dict):  # dynamic shape: {'value': bytes, 'shape': ...}
            return {**encoded, "value": zlib.compress(encoded["value"], self._level)}
        return zlib.compress(encoded, self._level)


def _at_zlib_level(feature: tfds.features.FeatureConnector, level: int) -> tfds.features.FeatureConnector:
    if type(feature) is not tfds.features.Tensor or feature.to_json_content().encoding != "zlib":
        return feature
    return LeveledZlibTensor(shape=feature.shape, dtype=feature.np_dtype, level=level)


@dataclasses.dataclass
class PrepStats:
    """Counts gathered while generating: written / skipped examples, faces and why some are not visible."""

    written: int = 0
    people: int = 0
    faces_visible: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    faces_not_visible: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped_examples: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "skipped": sum(self.skipped.values()),
            "skip_reasons": dict(sorted(self.skipped.items())),
            "people": self.people,
            "faces_visible": self.faces_visible,
            "faces_not_visible": sum(self.faces_not_visible.values()),
            "face_not_visible_reasons": dict(sorted(self.faces_not_visible.items())),
            "skipped_examples": self.skipped_examples,  # [id, reason, detail], the first MAX_LISTED_SKIPS
        }


# One scene to prepare: (image_id, make) where make() returns (example dict, per-person face reasons) or
# raises SkipExample.
SceneJob = tuple[str, Callable[[], tuple[dict[str, Any], list[str | None]]]]


class PersonaCraftScenes(tfds.core.GeneratorBasedBuilder):
    """Multi-person images with rendered SMPL-X conditioning, fits, face embeddings (and SDXL inputs)."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {  # noqa: RUF012  (TFDS class attribute)
        "1.0.0": "Initial release: DESIGN section 5 schema, variable N people, optional SDXL encodings.",
    }

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        """No code path: nothing is downloaded, so there is no checksums file to find next to the code.

        (TFDS 4.9.10 would otherwise import the `importlib_resources` backport to locate it.)
        """
        return None

    def __init__(
        self,
        *,
        jobs: Iterable[SceneJob] | None = None,
        include_sdxl: bool = False,
        stats: PrepStats | None = None,
        progress: Callable[[], None] | None = None,
        empty_prompt: dict[str, np.ndarray] | None = None,
        **kwargs: Any,
    ):
        self._jobs = jobs
        self._include_sdxl = include_sdxl
        self._empty_prompt = empty_prompt
        self.stats = stats if stats is not None else PrepStats()
        self._progress = progress
        super().__init__(file_format="array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(self._include_sdxl),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # keep source order; the training loader shuffles
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        if self._jobs is None:
            raise ValueError("PersonaCraftScenes was built for reading: pass jobs=... to generate")
        return {"train": self._generate_examples(self._jobs)}

    def _generate_examples(self, jobs: Iterable[SceneJob]) -> Iterator[tuple[str, dict[str, Any]]]:
        for image_id, make in jobs:
            try:
                example, reasons = make()
            except SkipExample as skip:
                self.stats.skipped[skip.reason] += 1
                if len(self.stats.skipped_examples) < MAX_LISTED_SKIPS:
                    self.stats.skipped_examples.append([image_id, skip.reason, skip.detail])
            else:
                self.stats.written += 1
                self.stats.people += len(reasons)
                for reason in reasons:
                    if reason is None:
                        self.stats.faces_visible += 1
                    else:
                        self.stats.faces_not_visible[reason] += 1
                yield image_id, example
            if self._progress is not None:
                self._progress()
        # Stored in metadata.json inside the folder that is renamed into place when the build completes.
        self.info.metadata["prep_stats"] = self.stats.to_dict()
        if self._empty_prompt is not None:  # the caption-dropout target of training, stored with the data
            self.info.metadata["empty_prompt"] = {k: _encode_array(v) for k, v in self._empty_prompt.items()}


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array, np.float32)
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode_array(value: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(value["float32_base64"]), np.float32).reshape(value["shape"])


def load_empty_prompt(data_dir: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The SDXL embeddings of the empty prompt ('' through both text encoders), if the data set has them.

    Returns {'prompt_embeds': (77, D), 'pooled_prompt_embeds': (P,)}, or None for data prepared without
    SDXL encodings.
    """
    if not is_complete(data_dir):
        raise FileNotFoundError(f"no complete {NAME} dataset at {version_dir(data_dir)}")
    metadata = tfds.builder_from_directory(str(version_dir(data_dir))).info.metadata
    stored = metadata.get("empty_prompt")
    return None if stored is None else {k: _decode_array(v) for k, v in stored.items()}


def version_dir(data_dir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(data_dir) / NAME / str(PersonaCraftScenes.VERSION)


def is_complete(data_dir: str | os.PathLike) -> bool:
    """Whether a finished dataset (renamed into place, with its info) exists in `data_dir`."""
    return (version_dir(data_dir) / "dataset_info.json").is_file()


def remove_leftovers(data_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Delete `incomplete.*` folders left by killed builds (never run two builds on one data_dir)."""
    parent = pathlib.Path(data_dir) / NAME
    removed = sorted(parent.glob(f"incomplete.*_{PersonaCraftScenes.VERSION}")) if parent.is_dir() else []
    for path in removed:
        shutil.rmtree(path)
    return removed


def build_dataset(
    data_dir: str | os.PathLike,
    jobs: Iterable[SceneJob],
    *,
    include_sdxl: bool,
    progress: Callable[[], None] | None = None,
    extra_report: dict[str, Any] | None = None,
    empty_prompt: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Generate the dataset into `data_dir` (unless complete already) and write its report last; returns it.

    A complete dataset is reused as is (its report is re-created from its metadata if missing); delete its
    folder to rebuild.
    """
    data_dir = pathlib.Path(data_dir)
    if not is_complete(data_dir):
        remove_leftovers(data_dir)
    builder = PersonaCraftScenes(
        data_dir=str(data_dir), jobs=jobs, include_sdxl=include_sdxl, progress=progress, empty_prompt=empty_prompt
    )
    reused = is_complete(data_dir)
    with tempfile.TemporaryDirectory(prefix="personacraft_prep_") as download_dir:  # nothing is downloaded
        builder.download_and_prepare(download_dir=download_dir)
    info = tfds.builder_from_directory(str(version_dir(data_dir))).info
    report = {
        "dataset": NAME,
        "version": str(PersonaCraftScenes.VERSION),
        "data_dir": str(version_dir(data_dir)),
        "reused_existing": reused,
        "splits": {name: split.num_examples for name, split in info.splits.items()},
        **dict(info.metadata.get("prep_stats", {})),
        **(extra_report or {}),
    }
    atomic_write.write_json(version_dir(data_dir) / REPORT_FILE, report, sort_keys=True)
    return report


class SceneSource:
    """Random-access source (`len`, `[i]`) of numpy example dicts, usable by grain.

    `image` is decoded to RGB uint8 (H, W, 3) (or left as PNG bytes: `open_split(decode_image=False)`),
    `image_id` and `caption` to str, `num_people` to int; other fields are as in `data_prep.examples`.
    """

    _TEXT = ("image_id", "caption")

    def __init__(self, source: Any):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = dict(self._source[index])
        for key in self._TEXT:
            value = example[key]
            example[key] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        example["num_people"] = int(example["num_people"])
        return example

    def __repr__(self) -> str:
        return f"SceneSource({self._source!r})"


def open_split(data_dir: str | os.PathLike, split: str = "train", decode_image: bool = True) -> SceneSource:
    """The `split` of the complete dataset in `data_dir`; raises FileNotFoundError if there is none.

    `decode_image=False` leaves `image` as its stored PNG bytes (training reads latents, not pixels: this
    saves a full-size PNG decode per example)."""
    path = version_dir(data_dir)
    if not is_complete(data_dir):
        raise FileNotFoundError(f"no complete {NAME} dataset at {path} (was its preparation interrupted?)")
    decoders = None if decode_image else {"image": tfds.decode.SkipDecoding()}
    return SceneSource(tfds.builder_from_directory(str(path)).as_data_source(split=split, decoders=decoders))
