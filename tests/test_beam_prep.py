"""Beam generation: the same examples, byte for byte, and the same report as the in-process path.

Runs Beam's DirectRunner (FnApiRunner) with 2 worker processes on this machine. Workers import the
project (editable install) and, for the fault-injection makers, `tests.fixtures_prep` (repo root on
PYTHONPATH).
"""

import pathlib

import pytest
from array_record.python import array_record_module

from configs import prep_real, prep_synthetic
from data_prep import beam_prep, dataset, prep_job
from data_prep import fingerprint as fingerprint_lib
from tests.fixtures_prep import EXPECTED_SKIPS, CountBuilds, FailOn, write_real_inputs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TWO_WORKERS = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
# Report keys that describe the run, not the data.
RUN_KEYS = ("data_dir", "generation", "config")


@pytest.fixture(autouse=True)
def _workers_import_the_tests(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def _records(data_dir: pathlib.Path) -> list[bytes]:
    """Every stored record, raw, in split order."""
    records = []
    for shard in sorted(dataset.version_dir(data_dir).glob("*.array_record-*")):
        reader = array_record_module.ArrayRecordReader(str(shard))
        records.extend(reader.read_all())
        reader.close()
    return records


def _synthetic_config(tmp_path):
    cfg = prep_synthetic.get_config()
    cfg.num_examples, cfg.width, cfg.height, cfg.max_people = 6, 96, 96, 2
    cfg.standin_face_models, cfg.cache_dir = True, str(tmp_path / "cache")
    return cfg


def _real_config(tmp_path):
    cfg = prep_real.get_config()
    cfg.update(write_real_inputs(tmp_path / "inputs"))
    cfg.resolution = 64
    return cfg


@pytest.mark.parametrize("make_config", [_synthetic_config, _real_config], ids=["synthetic", "real"])
def test_two_beam_workers_write_the_in_process_examples_and_report(tmp_path, make_config):
    cfg = make_config(tmp_path)
    single = prep_job.run_prep(cfg, tmp_path / "single", progress=False)
    beam = prep_job.run_prep(cfg, tmp_path / "beam", progress=False, beam_pipeline_options=TWO_WORKERS)

    records = _records(tmp_path / "single")
    assert len(records) == single["written"] >= 3
    assert _records(tmp_path / "beam") == records  # byte for byte, in the same order
    assert {k: v for k, v in beam.items() if k not in RUN_KEYS} == {
        k: v for k, v in single.items() if k not in RUN_KEYS
    }
    assert single["generation"] == {"runner": "in_process"}
    assert beam["generation"] == {
        "runner": "DirectRunner",
        "beam_pipeline_options": beam_prep.parse_pipeline_options(TWO_WORKERS),
    }
    if cfg.source == "real":  # bad inputs inside the Beam run: skipped and counted as in process
        assert beam["skip_reasons"] == EXPECTED_SKIPS and beam["people_not_visible"] == 1
    else:
        assert beam["faces_embedded"] >= 1
    folder = dataset.version_dir(tmp_path / "beam")
    assert not (folder / beam_prep.SCENES_FILE).exists() and not (folder / beam_prep.STATS_FILE).exists()


def _beam_build(tmp_path, make_factory, cfg):
    scenes = prep_job.list_scenes(cfg)
    return dataset.build_dataset(
        tmp_path / "data",
        scenes,
        include_sdxl=False,
        fingerprint=fingerprint_lib.fingerprint(prep_job.content_config(cfg), scenes),
        beam=beam_prep.BeamGeneration(make_factory, beam_prep.BeamOptions(TWO_WORKERS)),
    )


def test_each_worker_builds_one_factory_for_its_lifetime(tmp_path):
    cfg = _synthetic_config(tmp_path)
    cfg.num_examples, cfg.width, cfg.height, cfg.standin_face_models = 8, 48, 48, False
    log = tmp_path / "builds.txt"
    report = _beam_build(tmp_path, CountBuilds(prep_job.factory_spec(cfg).build, str(log)), cfg)
    builds = log.read_text().split()
    assert report["written"] + report["skipped"] == 8
    assert 1 <= len(builds) <= 2 and len(set(builds)) == len(builds)  # at most one per worker process


def test_an_unexpected_error_in_a_worker_fails_the_job_naming_the_example(tmp_path):
    cfg = _synthetic_config(tmp_path)
    cfg.num_examples, cfg.width, cfg.height, cfg.standin_face_models = 4, 48, 48, False
    failing = prep_job.list_scenes(cfg)[2].image_id
    with pytest.raises(
        RuntimeError, match=rf"preparing example '{failing}' \(scene 2\) failed: RuntimeError: injected"
    ):
        _beam_build(tmp_path, FailOn(prep_job.factory_spec(cfg).build, failing), cfg)
    assert not dataset.is_complete(tmp_path / "data")
    assert not list((tmp_path / "data" / dataset.NAME).glob("*"))  # no shard, no half-written folder


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("direct_num_workers=2", "names no runner"),
        ("runner=DirectRunner,direct_num_workers", "expected key=value"),
        ("runner=DirectRunner,runner=DataflowRunner", "runner is given twice"),
        ("runner=DirectRunner,direct_num_workerz=2", "unknown Beam pipeline option.*direct_num_workerz"),
    ],
)
def test_pipeline_options_are_checked(text, match):
    with pytest.raises(beam_prep.BeamOptionsError, match=match):
        beam_prep.BeamOptions(text)


@pytest.mark.parametrize(
    "text",
    [
        "runner=DataflowRunner,project=my-project,region=us-central1,temp_location=gs://my-bucket/tmp,"
        "sdk_container_image=us-docker.pkg.dev/my-project/images/personacraft-prep:latest,"
        "number_of_worker_harness_threads=1",
        "runner=FlinkRunner,flink_master=flink-host:8081,environment_type=DOCKER,environment_config=my/image:latest",
        "runner=SparkRunner,spark_master_url=spark://spark-host:7077,environment_type=DOCKER,environment_config=x",
    ],
)
def test_the_readme_cluster_options_are_accepted(text):
    options = beam_prep.BeamOptions(text)
    assert not options.local and options.describe()["beam_pipeline_options"] == beam_prep.parse_pipeline_options(text)


def test_the_direct_runner_is_never_prism():
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    config = beam_prep.BeamOptions(TWO_WORKERS).download_config()
    assert isinstance(config.beam_runner, fn_runner.FnApiRunner)
    assert config.beam_options.get_all_options()["direct_num_workers"] == 2
