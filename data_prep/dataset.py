"""The PersonaCraft scenes dataset: a TFDS ArrayRecord builder, its report, and a random-access reader.

Layout: `data_dir/personacraft_scenes/<version>/` holds the ArrayRecord shards, `dataset_info.json`,
`features.json`, `metadata.json` (the prep counts, the fingerprint of the inputs and config, the config, how
it was generated: in process or on which Beam runner) and, written last, `prep_report.json`. One data_dir
holds one dataset (synthetic or real; with or without SDXL encodings); a re-run with other inputs or another
config is refused (`DatasetMismatchError`), never mixed with or mistaken for the old data. `data_dir` is a
local (or FUSE-mounted) path: ArrayRecord is written with local file I/O.

Variable number of people: per-person fields are Tensor features with a leading `None` axis (N = this
image's people); the loader pads them to the configured maximum and builds the validity mask. Multi-axis
arrays (maps, masks, SDXL inputs) are zlib-compressed raw bytes (TFDS `encoding='zlib'`), decoded with numpy;
no TensorFlow is needed for writing or reading. Example i is scene i of the source (its key); records are
re-serialized with sorted feature keys (`DeterministicExampleWriter`), so a record's bytes depend on the
example alone, whichever process, runner or number of Beam workers wrote it.

Incompleteness: TFDS generates into a sibling `incomplete.XXXXXX_<version>/` folder and renames it to
`<version>/` only after every shard and `dataset_info.json` are written; an exception or Ctrl-C deletes that
folder, a hard kill leaves it behind under a name no reader looks at (`build_dataset` removes such leftovers
before building). So a `<version>/` folder exists only for a complete dataset. The prep counts are stored
inside it (`metadata.json`) before the rename; `prep_report.json` is derived from them and written atomically
(temp file + rename) afterwards, and re-created by a re-run if a crash came between the two.
"""

from __future__ import annotations

import base64
import os
import pathlib
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from data_prep import fingerprint as fingerprint_lib
from data_prep.scene_outcome import NoExamplesError, PrepStats, no_examples_message, prepare_scene
from personacraft_jax import atomic_write

NAME = "personacraft_scenes"
ZLIB_LEVEL = 1  # of the zlib-encoded features; TFDS uses zlib's default, 6: ~3x the time for ~20% fewer bytes
REPORT_FILE = "prep_report.json"


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
        "has_face_embedding": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
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


class DatasetMismatchError(ValueError):
    """`data_dir` holds a complete dataset built from other inputs or another config."""


class DataDirError(ValueError):
    """`data_dir` is not a path ArrayRecord can be written to."""


class DeterministicExampleWriter(tfds.core.writer.ExampleWriter):
    """Stores each serialized tf.train.Example re-serialized with its feature map sorted by key.

    TFDS serializes the feature map in protobuf's (upb's) hash order, which differs from process to process,
    so the same example would get different bytes in different processes. Sorted, a record's bytes depend on
    the example alone: the same for every run, runner and number of workers. (Same length, so TFDS's shard
    sizes are unchanged.)
    """

    def write(self, path: Any, examples: Iterable[tuple[Any, bytes]]) -> Any:
        return super().write(path, ((key, _sorted_example(data)) for key, data in examples))


def _sorted_example(serialized: bytes) -> bytes:
    example = tf_example_pb2.Example()
    example.ParseFromString(serialized)
    return example.SerializeToString(deterministic=True)


class PersonaCraftScenes(tfds.core.GeneratorBasedBuilder):
    """Multi-person images with rendered SMPL-X conditioning, fits, face embeddings (and SDXL inputs).

    Generation (`build_dataset`): `scenes` (a list of `sources.RawScene`) through `factory` in this process,
    or through `beam` (a `data_prep.beam_prep.BeamGeneration`) on a Beam runner. Either way example i is
    scene i of the list (its key), written in scene order, and `metadata.json` holds the counts
    (`scene_outcome.PrepStats`) and `metadata` (fingerprint, config, generation).
    """

    name = NAME
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {  # noqa: RUF012  (TFDS class attribute)
        "1.0.0": "Initial release: DESIGN section 5 schema, variable N people, optional SDXL encodings.",
        "2.0.0": "face_visible is the renderer's visibility; new has_face_embedding says whether face_embedding "
        "holds an embedding (1.0.0's face_visible meant 'embedded'). metadata.json records the fingerprint of "
        "the inputs and config, the config and how the data was generated.",
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
        scenes: Sequence[Any] | None = None,
        factory: Any | None = None,
        beam: Any | None = None,
        include_sdxl: bool = False,
        progress: Callable[[], None] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        self._scenes = scenes
        self._factory = factory
        self._beam = beam
        self._include_sdxl = include_sdxl
        self._progress = progress
        self._metadata = dict(metadata or {})
        super().__init__(file_format="array_record", **kwargs)

    # TFDS prints "Downloading and preparing dataset ..." / "... downloaded and prepared" to stdout; nothing is
    # downloaded here and launch.prep reports progress itself, so they go to the log at INFO instead.
    def _log_download_bytes(self) -> None:
        logging.info("preparing %s in %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        logging.info("prepared %s in %s", self.name, self.data_dir)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(self._include_sdxl),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # keep source order; the training loader shuffles
        )

    def _example_writer(self) -> DeterministicExampleWriter:
        return DeterministicExampleWriter(file_format=self.info.file_format)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        if self._scenes is None or (self._factory is None) == (self._beam is None):
            raise ValueError("PersonaCraftScenes generates from scenes=... with factory=... or beam=... (not both)")
        # Stored in metadata.json inside the folder that is renamed into place when the build completes.
        self.info.metadata.update(self._metadata)
        if self._beam is not None:  # self.data_dir is the incomplete.* folder while generating
            return {"train": self._beam.transform(self._scenes, pathlib.Path(self.data_dir))}
        return {"train": self._generate_examples(self._scenes)}

    def _generate_examples(self, scenes: Sequence[Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        stats = PrepStats()
        for index, scene in enumerate(scenes):
            outcome, example = prepare_scene(self._factory, index, scene)
            stats.add(outcome)
            if example is not None:
                yield index, example
            if self._progress is not None:
                self._progress()
        self._store_stats(stats.to_dict())

    def _process_pipeline_result(self, pipeline_result: Any) -> None:
        self._store_stats(self._beam.collect_stats(pathlib.Path(self.data_dir)))

    def _store_stats(self, counts: dict[str, Any]) -> None:
        if counts["written"] == 0:
            raise NoExamplesError(no_examples_message(counts))
        self.info.metadata["prep_stats"] = counts

    def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
        super()._download_and_prepare(dl_manager, download_config)
        counted, stored = self.info.metadata["prep_stats"]["written"], self.info.splits["train"].num_examples
        if counted != stored:  # inside the incomplete.* folder: raising discards it
            raise RuntimeError(f"{stored} examples were written but {counted} were counted as written")


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array, np.float32)
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode_array(value: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(value["float32_base64"]), np.float32).reshape(value["shape"])


def stored_metadata(data_dir: str | os.PathLike, what: str = "no metadata to read") -> dict[str, Any]:
    """The complete dataset's `metadata.json` (fingerprint, config, generation, counts, empty prompt)."""
    if not is_complete(data_dir):
        raise _not_found(data_dir, what)
    return dict(tfds.builder_from_directory(str(version_dir(data_dir))).info.metadata)


def load_empty_prompt(data_dir: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The SDXL embeddings of the empty prompt ('' through both text encoders), if the data set has them.

    Returns {'prompt_embeds': (77, D), 'pooled_prompt_embeds': (P,)}, or None for data prepared without
    SDXL encodings.
    """
    stored = stored_metadata(data_dir, "no empty prompt to read").get("empty_prompt")
    return None if stored is None else {k: _decode_array(v) for k, v in stored.items()}


def version_dir(data_dir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(data_dir) / NAME / str(PersonaCraftScenes.VERSION)


def local_data_dir(data_dir: str | os.PathLike) -> pathlib.Path:
    """`data_dir` as a local path; a URL (gs://, s3://, ...) is refused: ArrayRecord shards are written with
    local file I/O, so write to a local or FUSE-mounted folder (every Beam worker must see it at that path)."""
    text = os.fspath(data_dir)
    if "://" in text:
        raise DataDirError(
            f"data_dir {text} is a URL: ArrayRecord shards are written with local file I/O. Give a local or "
            "FUSE-mounted path (e.g. a bucket mounted with gcsfuse at /gcs/BUCKET) that the launcher and every "
            "Beam worker see at the same path, or prepare locally and copy the finished folder up"
        )
    return pathlib.Path(text).expanduser()


def other_versions(data_dir: str | os.PathLike) -> list[str]:
    """Versions other than this code's found in `data_dir` (complete ones)."""
    parent = pathlib.Path(data_dir) / NAME
    current = str(PersonaCraftScenes.VERSION)
    found = parent.glob("*/dataset_info.json") if parent.is_dir() else ()
    return sorted(p.parent.name for p in found if p.parent.name != current)


def _not_found(data_dir: str | os.PathLike, what: str) -> FileNotFoundError:
    older = other_versions(data_dir)
    hint = (
        f"; it holds version {', '.join(older)} with an older schema: re-run `python -m launch.prep` to build "
        f"version {PersonaCraftScenes.VERSION}"
        if older
        else ""
    )
    return FileNotFoundError(f"no complete {NAME} dataset at {version_dir(data_dir)} ({what}){hint}")


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


def _check_fingerprint(data_dir: pathlib.Path, stored: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> None:
    if stored is not None and stored.get("digest") == wanted["digest"]:
        return
    changes = fingerprint_lib.differences(stored or {}, wanted)
    folder = version_dir(data_dir)
    raise DatasetMismatchError(
        f"{folder} holds a complete dataset built from other inputs or another config ({'; '.join(changes)}). "
        f"It is not reused. To rebuild it, delete it (rm -r '{folder}') and run again, or use another --data_dir."
    )


def build_dataset(
    data_dir: str | os.PathLike,
    scenes: Sequence[Any],
    *,
    include_sdxl: bool,
    fingerprint: Mapping[str, Any],
    factory: Any | None = None,
    beam: Any | None = None,
    progress: Callable[[], None] | None = None,
    config: Mapping[str, Any] | None = None,
    empty_prompt: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Generate the dataset into `data_dir` (unless complete already) and write its report last; returns it.

    `scenes` go through `factory` (an `ExampleFactory`, in this process) or `beam` (a
    `beam_prep.BeamGeneration`). `fingerprint` (`data_prep.fingerprint.fingerprint`) identifies the inputs
    and config: a complete dataset with the same fingerprint is reused as is (its report is re-created from
    its metadata if missing); one with another fingerprint raises `DatasetMismatchError`.
    """
    data_dir = local_data_dir(data_dir)
    reused = is_complete(data_dir)
    if reused:
        stored = tfds.builder_from_directory(str(version_dir(data_dir))).info.metadata
        _check_fingerprint(data_dir, stored.get("fingerprint"), fingerprint)
    else:
        remove_leftovers(data_dir)
        generation = beam.describe() if beam is not None else {"runner": "in_process"}
        metadata = {"fingerprint": dict(fingerprint), "config": dict(config or {}), "generation": generation}
        if empty_prompt is not None:  # the caption-dropout target of training, stored with the data
            metadata["empty_prompt"] = {k: _encode_array(v) for k, v in empty_prompt.items()}
        builder = PersonaCraftScenes(
            data_dir=str(data_dir), scenes=scenes, factory=factory, beam=beam, include_sdxl=include_sdxl,
            progress=progress, metadata=metadata,
        )  # fmt: skip
        download_config = beam.download_config() if beam is not None else None
        with tempfile.TemporaryDirectory(prefix="personacraft_prep_") as download_dir:  # nothing is downloaded
            builder.download_and_prepare(download_dir=download_dir, download_config=download_config)
    info = tfds.builder_from_directory(str(version_dir(data_dir))).info
    report = {
        "dataset": NAME,
        "version": str(PersonaCraftScenes.VERSION),
        "data_dir": str(version_dir(data_dir)),
        "reused_existing": reused,
        "splits": {name: split.num_examples for name, split in info.splits.items()},
        **{key: info.metadata[key] for key in ("fingerprint", "config", "generation")},
        **dict(info.metadata["prep_stats"]),
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
        raise _not_found(data_dir, "was its preparation interrupted?")
    decoders = None if decode_image else {"image": tfds.decode.SkipDecoding()}
    return SceneSource(tfds.builder_from_directory(str(path)).as_data_source(split=split, decoders=decoders))
