"""Generating the dataset with Apache Beam: the same examples as in-process generation, on many workers.

`BeamGeneration(make_factory, BeamOptions("runner=...,key=value,..."))` takes Beam pipeline options in TFDS's
`--beam_pipeline_options` convention (comma-separated `key=value`, each becoming `--key=value`); the runner
must be named. The dataset builder (`dataset.build_dataset(..., beam=...)`) then:

1. writes the scene list as JSON lines (`scenes.jsonl`) into the dataset's `incomplete.*` folder; the
   pipeline reads it back with `ReadFromText` (a large list does not go into the job graph) and reshuffles
   the scenes over the workers;
2. runs `prepare_scene` on every scene in a DoFn whose `setup` gets the worker process's one
   `ExampleFactory` (body model, renderer, face and SDXL models, built once and kept for the process's
   lifetime, on one thread: `_ProcessFactory`). Example i is scene i of the list (its key), so TFDS's Beam writer stores the examples in the
   same order, with the same bytes, as the in-process path: every example's randomness comes from its
   scene (synthetic: `default_rng([seed, index])`), never from the worker or the order of work;
3. sends every scene's outcome to a side output, combined into one `PrepStats` (`prep_stats.json`, read by
   the builder after the run and removed with `scenes.jsonl`), so the report counts each scene exactly
   once whatever the runner's retries. Beam counters `personacraft_prep/{written,skipped}` show progress
   in the runner's UI.

A scene that raises anything but `SkipExample` fails the job with the example id in the message
(`ExamplePrepError`); TFDS then deletes the `incomplete.*` folder, so nothing looks complete.

Runners: `runner=DirectRunner` runs here on Beam's FnApiRunner, named explicitly because Beam's DirectRunner
first tries the Prism runner, which downloads a binary; add `direct_num_workers=N,
direct_running_mode=multi_processing` for N worker processes (their logs default to WARNING). Other runners
(DataflowRunner, FlinkRunner, SparkRunner, PortableRunner) get the options as given. Every worker must see
`data_dir`, the inputs, the model folders and `cache_dir` at the same paths (a shared or FUSE-mounted file
system): ArrayRecord shards are written with local file I/O.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from data_prep import sources
from data_prep.scene_outcome import NoExamplesError, PrepStats, SceneOutcome, no_examples_message, prepare_scene
from personacraft_jax import atomic_write

SCENES_FILE = "scenes.jsonl"
STATS_FILE = "prep_stats.json"
OUTCOMES = "outcomes"
COUNTER_NAMESPACE = "personacraft_prep"


class BeamOptionsError(ValueError):
    """`--beam_pipeline_options` cannot be used as given."""


def parse_pipeline_options(text: str) -> dict[str, str]:
    """'runner=X,a=1,b=2' -> {'runner': 'X', 'a': '1', 'b': '2'} (TFDS's `--beam_pipeline_options` format)."""
    options: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise BeamOptionsError(f"--beam_pipeline_options: expected key=value, got {item!r} in {text!r}")
        if key in options:
            raise BeamOptionsError(f"--beam_pipeline_options: {key} is given twice in {text!r}")
        options[key] = value.strip()
    if "runner" not in options:
        raise BeamOptionsError(
            f"--beam_pipeline_options={text!r} names no runner: add runner=DirectRunner (this machine; with "
            "direct_num_workers=N,direct_running_mode=multi_processing), DataflowRunner, FlinkRunner or SparkRunner"
        )
    return options


def _fn_api_runner(options: PipelineOptions) -> Any:
    """Beam's local FnApiRunner with the pipeline options provisioned to its workers (as Beam's DirectRunner
    builds it when it does not pick Prism)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(provision))


class _ProcessFactory:
    """This worker process's one `ExampleFactory`, built and used on one thread of its own.

    Beam may call a DoFn from several threads (and run several DoFn instances per process); the renderer's
    EGL context is bound to the thread that made it current, and a factory holds large models. So every
    call goes to this single thread, and `beam.utils.shared.Shared` gives all DoFn instances of the process
    the same object. It lives as long as the process (exiting releases the GL context): closing it from
    `DoFn.teardown`, which runs on yet another thread, would fail.
    """

    def __init__(self, make_factory: Callable[[], Any]):
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="personacraft_prep")
        self._factory = self._thread.submit(make_factory).result()

    def prepare(self, index: int, scene: Any) -> tuple[SceneOutcome, dict[str, Any] | None]:
        return self._thread.submit(prepare_scene, self._factory, index, scene).result()


class _PrepareSceneFn(beam.DoFn):
    """(index, scene) -> (index, example) for written scenes, and every scene's outcome on `OUTCOMES`."""

    def __init__(self, make_factory: Callable[[], Any]):
        self._make_factory = make_factory
        self._shared = shared.Shared()  # one _ProcessFactory per worker process
        self._worker = None

    def setup(self) -> None:
        self._worker = self._shared.acquire(lambda: _ProcessFactory(self._make_factory))
        self._written = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "written")
        self._skipped = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "skipped")

    def process(self, element: tuple[int, Any]) -> Iterator[Any]:
        index, scene = element
        outcome, example = self._worker.prepare(index, scene)
        yield beam.pvalue.TaggedOutput(OUTCOMES, outcome)
        if example is None:
            self._skipped.inc()
        else:
            self._written.inc()
            yield index, example


class _CountOutcomes(beam.CombineFn):
    """SceneOutcomes -> the report's counts (`PrepStats.to_dict`), merged over workers in any order."""

    def create_accumulator(self) -> PrepStats:
        return PrepStats()

    def add_input(self, stats: PrepStats, outcome: SceneOutcome) -> PrepStats:
        stats.add(outcome)
        return stats

    def merge_accumulators(self, accumulators: Any) -> PrepStats:
        accumulators = iter(accumulators)
        return next(accumulators).merge(accumulators)

    def extract_output(self, stats: PrepStats) -> dict[str, Any]:
        return stats.to_dict()


def _write_stats(counts: dict[str, Any], path: str) -> None:
    if counts["written"] == 0:
        raise NoExamplesError(no_examples_message(counts))
    atomic_write.write_json(path, counts, sort_keys=True)


class _PrepareScenes(beam.PTransform):
    """PBegin -> PCollection of (scene index, example); writes the counts to `stats_file` on the side."""

    def __init__(self, scenes_file: pathlib.Path, stats_file: pathlib.Path, make_factory: Callable[[], Any]):
        super().__init__()
        self._scenes_file, self._stats_file = str(scenes_file), str(stats_file)
        self._make_factory = make_factory

    def expand(self, pbegin: Any) -> Any:
        prepared = (
            pbegin
            | "ReadScenes" >> beam.io.ReadFromText(self._scenes_file)
            | "ParseScenes" >> beam.Map(sources.scene_from_json)
            | "Distribute" >> beam.Reshuffle()
            | "Prepare" >> beam.ParDo(_PrepareSceneFn(self._make_factory)).with_outputs(OUTCOMES, main="examples")
        )
        _ = (
            prepared[OUTCOMES]
            | "CountOutcomes" >> beam.CombineGlobally(_CountOutcomes())
            | "WriteCounts" >> beam.Map(_write_stats, path=self._stats_file)
        )
        return prepared.examples


class BeamOptions:
    """Checked Beam pipeline options (TFDS-style 'runner=...,key=value,...'; the runner must be named)."""

    def __init__(self, text: str):
        self.given = parse_pipeline_options(text)
        flags = dict(self.given)
        self.runner_name = flags["runner"]
        self.local = self.runner_name == "DirectRunner"  # run on FnApiRunner, never Prism: see download_config
        if self.local:
            flags.setdefault("default_sdk_harness_log_level", "WARNING")
        self.options = PipelineOptions(flags=[f"--{key}={value}" for key, value in flags.items()])
        known = self.options.get_all_options()
        unknown = sorted(set(self.options.get_all_options(retain_unknown_options=True)) - set(known))
        if unknown:
            raise BeamOptionsError(f"--beam_pipeline_options: unknown Beam pipeline option(s) {', '.join(unknown)}")

    def download_config(self) -> tfds.download.DownloadConfig:
        runner = _fn_api_runner(self.options) if self.local else None
        return tfds.download.DownloadConfig(beam_runner=runner, beam_options=self.options)

    def describe(self) -> dict[str, Any]:
        """For the report: the runner and the options as given."""
        return {"runner": self.runner_name, "beam_pipeline_options": dict(self.given)}


class BeamGeneration:
    """How `dataset.build_dataset` generates on Beam (module docstring).

    Args:
      make_factory: picklable `() -> ExampleFactory`, called once per worker.
      options: the runner and its options.
    """

    def __init__(self, make_factory: Callable[[], Any], options: BeamOptions):
        self._make_factory = make_factory
        self.options = options

    def download_config(self) -> tfds.download.DownloadConfig:
        return self.options.download_config()

    def describe(self) -> dict[str, Any]:
        return self.options.describe()

    def transform(self, scenes: Sequence[Any], work_dir: pathlib.Path) -> beam.PTransform:
        """The TFDS split generator; writes the scene list into `work_dir` (the incomplete.* folder)."""
        text = "".join(sources.scene_to_json(index, scene) + "\n" for index, scene in enumerate(scenes))
        atomic_write.write_text(work_dir / SCENES_FILE, text)
        return _PrepareScenes(work_dir / SCENES_FILE, work_dir / STATS_FILE, self._make_factory)

    def collect_stats(self, work_dir: pathlib.Path) -> dict[str, Any]:
        """The counts the pipeline wrote; removes its working files from the dataset folder."""
        counts = json.loads((work_dir / STATS_FILE).read_text())
        for name in (SCENES_FILE, STATS_FILE):
            (work_dir / name).unlink()
        return counts
