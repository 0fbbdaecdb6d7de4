"""A run's config across launches, its metrics at checkpoints and the launch commands' errors.

Step counts and sizes are checked before the workdir exists; a resume may change only a documented set of
settings (the rest is refused, naming each key's old and new value) and every config a run used is kept
with the step it began at; each checkpointed step's TensorBoard scalars are on disk when the checkpoint is;
the launch commands name an unknown `--config.` key, and print a run's error last.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import struct
import subprocess
import sys

import pytest

from personacraft_jax.train import trainer as trainer_lib
from personacraft_jax.train.metrics_writer import MetricsWriter
from tests import train_fixtures as fx

SOURCE = [fx.example(i) for i in range(8)]
DATA_DIR = "in-memory-fixture"  # the data.data_dir of these runs (tests.launch_train_driver ignores it)
REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**train):
    cfg = fx.config()
    cfg.data.data_dir = DATA_DIR
    cfg.train.update(train)
    return cfg


def _trainer(workdir, cfg=None):
    return trainer_lib.Trainer(cfg or _config(), workdir, source=SOURCE, empty_prompt=fx.empty_prompt())


def _scalar_steps(logdir: pathlib.Path) -> list[int]:
    """The steps whose `train/loss` is in the event files under `logdir`, read from disk (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    steps = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            start, offset = offset + 12, offset + 12 + length + 4
            if offset > len(data):
                break
            event = event_pb2.Event.FromString(data[start : start + length])
            if any(value.tag == "train/loss" for value in event.summary.value):
                steps.append(event.step)
    return steps


@pytest.fixture(scope="module")
def run_at_step_3(tmp_path_factory):
    """A run of three steps (checkpoints at 2 and 3) with a real MetricsWriter; returns (workdir, the steps
    whose scalars were on disk when each checkpoint's save began, by checkpoint step)."""
    workdir = tmp_path_factory.mktemp("run")
    trainer = _trainer(workdir)
    writer = MetricsWriter(workdir / "tensorboard", log_every=1)
    on_disk = {}
    save = trainer.checkpointer.save

    def save_and_look(step, *args, **kwargs):
        on_disk[step] = _scalar_steps(workdir / "tensorboard")
        save(step, *args, **kwargs)

    trainer.checkpointer.save = save_and_look
    try:
        trainer.train(3, writer=writer)
    finally:
        writer.close()
        trainer.close()
    return workdir, on_disk


def _copy(run, tmp_path) -> pathlib.Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_checkpointed_steps_have_their_scalars_on_disk(run_at_step_3):
    _, on_disk = run_at_step_3
    assert on_disk == {2: [1, 2], 3: [1, 2, 3]}


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "num_steps", 0, r"train\.num_steps=0; expected an integer >= 1"),
        ("train", "num_steps", -5, r"train\.num_steps=-5; expected an integer >= 1"),
        ("train", "warmup_steps", -1, r"train\.warmup_steps=-1; expected an integer >= 0"),
        ("data", "batch_size", 0, r"data\.batch_size=0; expected an integer >= 1"),
        ("data", "worker_count", -1, r"data\.worker_count=-1; expected an integer >= 0"),
        ("data", "caption_dropout", 1.5, r"data\.caption_dropout=1\.5; expected a number in \[0, 1\]"),
    ],
)
def test_bad_counts_fail_before_the_workdir_is_made(tmp_path, section, key, value, message):
    cfg = _config()
    cfg[section][key] = value
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path / "run", cfg)
    assert not (tmp_path / "run").exists()


def test_a_fresh_run_starts_its_config_history(run_at_step_3):
    workdir, _ = run_at_step_3
    (entry,) = [json.loads(line) for line in (workdir / "config_history.jsonl").read_text().splitlines()]
    assert entry["step"] == 0 and entry["changes"] == {}
    assert entry["config"] == json.loads((workdir / "config.json").read_text())


def test_resume_refuses_changes_that_break_the_run(run_at_step_3, tmp_path):
    workdir = _copy(run_at_step_3[0], tmp_path)
    before = {name: (workdir / name).read_text() for name in ("config.json", "config_history.jsonl")}
    cfg = _config(schedule="cosine", b1=0.8)
    cfg.seed = 1
    cfg.data.batch_size = 16
    cfg.model.dtype = "bfloat16"
    with pytest.raises(ValueError) as error:
        _trainer(workdir, cfg)
    message = str(error.value)
    assert "resuming at step 3" in message
    for line in (
        "data.batch_size: 8 -> 16",
        "model.dtype: 'float32' -> 'bfloat16'",
        "seed: 0 -> 1",
        "train.b1: 0.9 -> 0.8",
        "train.schedule: 'constant' -> 'cosine'",
    ):
        assert f"\n  {line}" in message, (line, message)
    assert {name: (workdir / name).read_text() for name in before} == before


def test_resume_needs_num_steps_not_below_the_resumed_step(run_at_step_3, tmp_path):
    workdir = _copy(run_at_step_3[0], tmp_path)
    before = (workdir / "config.json").read_text()
    with pytest.raises(ValueError, match=r"train\.num_steps=2, but the run resumes at step 3"):
        _trainer(workdir, _config(num_steps=2))
    assert (workdir / "config.json").read_text() == before


def test_resume_logs_and_records_allowed_changes(run_at_step_3, tmp_path, caplog):
    workdir = _copy(run_at_step_3[0], tmp_path)
    older = json.loads((workdir / "config.json").read_text())
    del older["train"]["eps"]  # as if the run began before this code had train.eps ...
    older["train"]["retired"] = 1  # ... and had a key it no longer has
    (workdir / "config.json").write_text(json.dumps(older))
    cfg = _config(num_steps=300, learning_rate=5e-4)
    cfg.checkpoint.every_steps = 5
    cfg.log.every_steps = 3
    with caplog.at_level("WARNING"):
        trainer = _trainer(workdir, cfg)
    trainer.close()
    assert trainer.step == 3
    for line in (
        "train.learning_rate: 0.001 -> 0.0005",
        "train.num_steps: 200 -> 300",
        "log.every_steps: 10 -> 3",
        "train.eps: <missing> -> 1e-08",
        "train.retired: 1 -> <missing>",
    ):
        assert line in caplog.text
    stored = json.loads((workdir / "config.json").read_text())
    assert stored["train"]["learning_rate"] == 5e-4 and stored["checkpoint"]["every_steps"] == 5
    history = [json.loads(line) for line in (workdir / "config_history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == [0, 3]
    assert history[1]["config"] == stored
    assert history[1]["changes"]["train.learning_rate"] == [0.001, 0.0005]
    assert history[1]["changes"]["train.retired"] == [1, "<missing>"]
    assert history[0]["config"]["train"]["learning_rate"] == 0.001
    _trainer(workdir, cfg).close()  # the same config again: nothing new to record
    assert len((workdir / "config_history.jsonl").read_text().splitlines()) == 2


def test_restore_step_is_the_resumed_step(run_at_step_3, tmp_path):
    workdir = _copy(run_at_step_3[0], tmp_path)
    cfg = _config(num_steps=2)  # not below the step it resumes at
    cfg.checkpoint.restore_step = 2
    trainer = _trainer(workdir, cfg)
    trainer.close()
    assert trainer.step == 2
    last = json.loads((workdir / "config_history.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2
    assert last["changes"] == {"checkpoint.restore_step": [None, 2], "train.num_steps": [200, 2]}


def _launch(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env_args = [sys.executable, "-m", module, *args]
    return subprocess.run(env_args, capture_output=True, text=True, cwd=REPO, timeout=timeout)


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.train.foo=1", r"unknown config key train\.foo \(known keys in train: b1, b2, .*num_steps"),
        ("--config.trian.num_steps=1", r"unknown config key trian \(known keys: checkpoint, data, log, mesh"),
        ("--config.train.noise_schedule.beta=1", r"unknown config key train\.noise_schedule\.beta \(known keys in"),
    ],
)
def test_unknown_override_names_the_key(tmp_path, override, message):
    import re

    done = _launch("launch.train", "--config=configs/train_tiny.py", f"--workdir={tmp_path / 'run'}", override)
    assert done.returncode != 0
    assert re.search(message, done.stderr), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def _corrupt_arrays(workdir: pathlib.Path, step: int) -> None:
    """Truncates the array chunks of checkpoint `step` (its processes' OCDBT data files) and rewrites its
    checksum manifest, as if the step had been written so: it verifies, its metadata reads, its arrays do
    not (orbax fails mid-restore), and TensorStore's error holds a multi-line spec."""
    from personacraft_jax.train import checkpoint as checkpoint_lib

    step_dir = workdir / "checkpoints" / str(step)
    files = list((step_dir / "state").glob("ocdbt.process_*/d/*"))
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(5)
    checkpoint_lib.write_manifest(step_dir)


def test_launch_commands_print_a_checkpoint_error_last(run_at_step_3, tmp_path):
    workdir = _copy(run_at_step_3[0], tmp_path)
    _corrupt_arrays(workdir, 3)
    train = _launch(
        "tests.launch_train_driver",
        "--config=tests/train_fixtures.py",
        f"--workdir={workdir}",
        f"--config.data.data_dir={DATA_DIR}",
    )
    assert train.returncode == 1
    assert "CheckpointError" in _last_line(train.stderr) and "restoring step 3 failed" in _last_line(train.stderr)
    export = _launch("launch.export", f"--checkpoint={workdir}", f"--out={tmp_path / 'export'}")
    assert export.returncode == 1
    last = _last_line(export.stderr)
    assert "CheckpointError" in last and "restoring the parameters of step 3 failed" in last, last
    for done in (train, export):
        assert "Event loop is closed" not in done.stderr
