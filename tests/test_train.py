"""Training on 8 fake CPU devices: sharding equivalence, learning, exact resume, re-meshing, bad configs.

The tiny UNet preset is frozen and randomly initialised; SCNet starts as `from_unet`. Steps share two
compiles (8-device and 1-device meshes) through JAX's persistent cache.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from personacraft_jax.train import optimizer as optimizer_lib
from personacraft_jax.train import trainer as trainer_lib
from tests import train_fixtures as fx

SOURCE = [fx.example(i) for i in range(8)]


def _trainer(workdir, cfg=None, devices=None):
    cfg = cfg or fx.config()
    return trainer_lib.Trainer(cfg, workdir, source=SOURCE, empty_prompt=fx.empty_prompt(), devices=devices)


def _params(trainer) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(trainer.state.params)]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Six steps without interruption on the (data=2, fsdp=4) mesh."""
    trainer = _trainer(tmp_path_factory.mktemp("straight"))
    history = trainer.train(6)
    params = _params(trainer)
    trainer.close()
    return history, params


def test_sharded_step_equals_single_device_step(straight_run, tmp_path):
    history, _ = straight_run
    single = _trainer(tmp_path, fx.config(data=1, fsdp=1), devices=jax.devices()[:1])
    single_history = single.train(2)
    single.close()
    for sharded, one in zip(history[:2], single_history, strict=False):
        np.testing.assert_allclose(sharded["loss"], one["loss"], rtol=1e-5)
        np.testing.assert_allclose(sharded["grad_norm"], one["grad_norm"], rtol=1e-4)
    # Parameters after two steps, from a checkpoint of the straight run, vs the single-device run.
    straight = _trainer(tmp_path / "again")
    straight.train(2)
    straight.close()
    sharded_params, single_params = _params(straight), _params(single)
    # AdamW normalises each gradient element, so float reassociation in the sharded reductions moves the
    # update of a gradient element that is pure rounding noise (|g| << eps) by a fraction of the learning rate.
    # Bound the whole-vector relative error (the criterion), every element's difference (10% of one update)
    # and the share of elements off by more than 1% of one update (a wrong reduction moves most of them).
    a = np.concatenate([x.ravel() for x in sharded_params])
    b = np.concatenate([x.ravel() for x in single_params])
    lr = fx.config().train.learning_rate
    assert np.linalg.norm(a - b) / np.linalg.norm(b) <= 1e-5
    assert np.max(np.abs(a - b)) <= 0.1 * lr
    assert np.mean(np.abs(a - b) > 0.01 * lr) <= 1e-4, np.sum(np.abs(a - b) > 0.01 * lr)


def test_resume_is_exact(straight_run, tmp_path):
    history, params = straight_run
    first = _trainer(tmp_path)
    first_history = first.train(3)
    first.close()
    assert first.early_stop is None  # it finished
    resumed = _trainer(tmp_path)
    assert resumed.step == 3  # train() checkpoints when it ends
    resumed_history = resumed.train(3)
    resumed.close()
    np.testing.assert_array_equal([r["loss"] for r in first_history], [r["loss"] for r in history[:3]])
    np.testing.assert_array_equal([r["loss"] for r in resumed_history], [r["loss"] for r in history[3:6]])
    for a, b in zip(_params(resumed), params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_restore_on_a_smaller_mesh(straight_run, tmp_path):
    first = _trainer(tmp_path)
    first.train(2)
    saved = _params(first)
    first.close()
    smaller = _trainer(tmp_path, fx.config(data=1, fsdp=4), devices=jax.devices()[:4])
    assert smaller.step == 2
    assert smaller.mesh.devices.size == 4
    for a, b in zip(_params(smaller), saved, strict=True):
        np.testing.assert_array_equal(a, b)
    smaller.close()


def test_training_reduces_the_loss(tmp_path):
    cfg = fx.config()
    cfg.checkpoint.every_steps = 1000
    trainer = _trainer(tmp_path, cfg)
    history = trainer.train(60)
    trainer.close()
    losses = np.array([r["loss"] for r in history])
    assert np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.9 * losses[:10].mean(), losses


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.mesh.update(data=3, fsdp=1), "needs 3 devices"),
        (lambda c: setattr(c.data, "batch_size", 6), "batch_size=6 is not divisible"),
        (lambda c: setattr(c.train, "trainable", ("scnet", "vae")), "train.trainable"),
        (lambda c: setattr(c.model, "sdxl_folder", "/nonexistent/sdxl"), "model.sdxl_folder"),
        (lambda c: setattr(c.model, "scnet_folder", "/nonexistent/scnet"), "model.scnet_folder"),
        (lambda c: setattr(c.train, "nan_policy", "ignore"), "train.nan_policy"),
        (lambda c: setattr(c.train, "trainable", ("oben",)), "model.scnet_folder is required"),
        (lambda c: setattr(c.checkpoint, "keep", 0), r"checkpoint\.keep=0; expected an integer >= 1"),
        (lambda c: setattr(c.checkpoint, "every_steps", 0), r"checkpoint\.every_steps=0"),
        (lambda c: setattr(c.log, "every_steps", 0), r"log\.every_steps=0"),
        (lambda c: setattr(c.train, "learning_rate", 0.0), r"train\.learning_rate=0\.0; expected a number > 0"),
        (lambda c: setattr(c.train, "min_snr_gamma", 0.0), r"train\.min_snr_gamma=0\.0"),
        (
            lambda c: setattr(c.train, "max_consecutive_skipped_steps", 0),
            r"train\.max_consecutive_skipped_steps=0; expected an integer >= 1",
        ),
    ],
)
def test_bad_config_fails_at_start_naming_the_field(tmp_path, change, message):
    cfg = fx.config()
    change(cfg)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        _trainer(tmp_path, cfg)


def test_url_workdir_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--workdir=gs://bucket/run: URLs are not supported"):
        _trainer("gs://bucket/run")


def test_a_second_run_on_the_workdir_is_refused_naming_the_holder(tmp_path):
    import fcntl
    import os
    import socket
    import subprocess
    import sys

    from personacraft_jax.train import workdir_lock

    lock = tmp_path / ".lock"
    holder = {"host": "node-7", "pid": 4242, "started": "2026-01-02T03:04:05+00:00"}
    with open(lock, "w") as f:  # a live run holds the lock
        f.write(json.dumps(holder))
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        message = r"is in use by another run: host node-7, pid 4242, started 2026-01-02T03:04:05\+00:00"
        with pytest.raises(workdir_lock.WorkdirLockedError, match=message):
            _trainer(tmp_path)
    # A killed run leaves its holder record but no lock: the next run starts and records itself.
    code = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); f.write('{\"host\": \"dead\"}'); f.flush(); "
        "fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(600)"
    )
    dead = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert dead.stdout.readline().strip() == "1"
    dead.kill()
    dead.wait()
    trainer = _trainer(tmp_path)
    with open(lock) as f:
        record = json.load(f)
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid() and record["started"]
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    trainer.close()
    with open(lock) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # close() released it


def test_restore_error_is_not_a_fresh_start(tmp_path):
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)  # a step folder with nothing restorable in it
    stored = fx.config().to_json_best_effort(indent=4)  # the run that wrote step 4 (a resume checks against it)
    (tmp_path / "config.json").write_text(stored)
    for _ in range(2):  # the failed start released the workdir's lock: the second fails in the same way
        with pytest.raises(Exception, match="restor"):
            _trainer(tmp_path)
    # export rebuilds the networks from config.json: a launch that could not resume must not replace it
    assert (tmp_path / "config.json").read_text() == stored


def test_corrupt_latest_step_stops_the_resume_and_restore_step_chooses_a_good_one(tmp_path):
    from personacraft_jax.train import checkpoint as checkpoint_lib

    first = _trainer(tmp_path)
    first.train(4)  # checkpoints at steps 2 and 4
    at_four = _params(first)
    first.close()
    step_dir = tmp_path / "checkpoints" / "4"
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 64])
    largest.write_bytes(bytes(data))
    name = largest.relative_to(step_dir).as_posix()
    with pytest.raises(checkpoint_lib.CheckpointError, match=rf"step 4 .*{name}.*verified steps: \[2\]"):
        _trainer(tmp_path)
    cfg = fx.config()
    cfg.checkpoint.restore_step = 2
    resumed = _trainer(tmp_path, cfg)
    assert resumed.step == 2
    assert resumed.checkpointer.all_steps() == [2] and (tmp_path / "checkpoints" / "set_aside" / "4").is_dir()
    resumed.train(2)
    resumed.close()
    assert resumed.checkpointer.verified_steps() == [2, 4]
    for a, b in zip(_params(resumed), at_four, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "scheduler, message",
    [
        (
            {"prediction_type": "v_prediction"},
            r"train\.prediction_type='epsilon', but .* has prediction_type='v_prediction'",
        ),
        (
            {"beta_schedule": "linear"},
            r"train\.noise_schedule\.beta_schedule='scaled_linear', but .* has beta_schedule='linear'",
        ),
        ({"num_train_timesteps": 500}, r"train\.noise_schedule\.num_train_timesteps=1000"),
    ],
)
def test_noise_schedule_must_match_the_unets_scheduler(tmp_path, scheduler, message):
    from personacraft_jax.sampling import schedulers
    from personacraft_jax.train import run_checks

    (tmp_path / "scheduler").mkdir()
    path = tmp_path / "scheduler" / "scheduler_config.json"
    cfg = fx.config()
    cfg.model.sdxl_folder = str(tmp_path)
    path.write_text(json.dumps(schedulers.SDXL_SCHEDULER_CONFIG))
    run_checks.check_noise_schedule(cfg)  # SDXL base's own scheduler agrees with the training schedule
    path.write_text(json.dumps({**schedulers.SDXL_SCHEDULER_CONFIG, **scheduler}))
    with pytest.raises(ValueError, match=message):
        run_checks.check_noise_schedule(cfg)


def test_restore_params_reads_only_the_parameters(tmp_path):
    import jax.numpy as jnp
    import optax

    from personacraft_jax.train import checkpoint as checkpoint_lib
    from personacraft_jax.train.step import TrainState

    params = {"scnet": {"conv": {"kernel": jnp.arange(12.0).reshape(3, 4)}}}
    state = TrainState(jnp.array(7), params, optax.adamw(1e-3).init(params), jnp.zeros(2, jnp.uint32))
    checkpointer = checkpoint_lib.Checkpointer(tmp_path / "ckpt", async_save=False)
    checkpointer.save(7, state, {"epoch": 0})
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), params)
    restored = checkpointer.restore_params(None, target)  # a params-only target: a full restore would refuse it
    np.testing.assert_array_equal(restored["scnet"]["conv"]["kernel"], params["scnet"]["conv"]["kernel"])
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"no checkpoint at step 3; have \[7\]"):
        checkpointer.restore_params(3, target)
    wrong = {"scnet": {"conv": {"kernel": jax.ShapeDtypeStruct((4, 4), jnp.float32, sharding=sharding)}}}
    with pytest.raises(checkpoint_lib.CheckpointError, match="restoring the parameters of step 7 failed"):
        checkpointer.restore_params(7, wrong)
    checkpointer.close()


def test_export_loads_in_diffusers_with_the_same_outputs(straight_run, tmp_path):
    import diffusers
    import jax.numpy as jnp
    import torch

    from personacraft_jax.train import export

    workdir = tmp_path / "run"
    trainer = _trainer(workdir)
    trainer.train(2)
    trained = [np.asarray(x) for x in jax.tree.leaves(trainer.state.params["scnet"])]
    trainer.close()
    nets = export.restore_trained_nets(export.load_run_config(workdir), workdir)
    assert sorted(nets) == ["scnet"]
    for a, b in zip(jax.tree.leaves(nnx_params(nets["scnet"])), trained, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    (folder,) = export.export_diffusers(nets, tmp_path / "export")
    torch_net = diffusers.ControlNetModel.from_pretrained(folder).eval()

    rng = np.random.default_rng(0)
    sample = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
    text = rng.normal(size=(2, fx.TEXT_TOKENS, fx.TEXT_DIM)).astype(np.float32)
    pooled = rng.normal(size=(2, fx.POOLED_DIM)).astype(np.float32)
    time_ids = np.tile(np.array([32, 32, 0, 0, 32, 32], np.float32), (2, 1))
    cond = rng.uniform(size=(2, 32, 32, 4)).astype(np.float32)
    t = np.array([10, 700])
    down, mid = nets["scnet"](jnp.asarray(sample), jnp.asarray(t), text, jnp.asarray(cond), pooled, time_ids)
    with torch.no_grad():
        ref_down, ref_mid = torch_net(
            torch.from_numpy(sample.transpose(0, 3, 1, 2)),
            torch.from_numpy(t),
            torch.from_numpy(text),
            torch.from_numpy(cond.transpose(0, 3, 1, 2)),
            added_cond_kwargs={"text_embeds": torch.from_numpy(pooled), "time_ids": torch.from_numpy(time_ids)},
            return_dict=False,
        )
    for ours, ref in zip([*down, mid], [*ref_down, ref_mid], strict=True):
        ref = ref.numpy().transpose(0, 2, 3, 1)
        assert np.abs(np.asarray(ours) - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-12)
    assert max(np.abs(r.numpy()).max() for r in ref_down) > 0  # trained residuals are no longer zero

    (flax_file,) = export.export_flax(nets, tmp_path / "flax")
    reloaded = export.load_flax_params(nets["scnet"], flax_file)
    for a, b in zip(jax.tree.leaves(nnx_params(reloaded)), trained, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.fixture(scope="module")
def tiny_scnet():
    from personacraft_jax.train import networks

    return networks.build_networks(fx.config().model, ("scnet",), ("scnet",), 0)["scnet"]


def test_export_refuses_non_finite_weights_naming_the_parameter(tiny_scnet, tmp_path):
    from flax import nnx

    from personacraft_jax.train import export

    bad = nnx.clone(tiny_scnet)
    path, var = list(nnx.to_flat_state(nnx.state(bad, nnx.Param)))[3]
    value = var.get_value()
    nnx.update(bad, nnx.from_flat_state([(path, var.replace(value.at[(0,) * value.ndim].set(np.nan)))]))
    name = "scnet." + ".".join(map(str, path))
    with pytest.raises(ValueError, match=rf"{name}: 1 of {value.size} values are not finite"):
        export.export_flax({"scnet": bad}, tmp_path / "flax")
    with pytest.raises(ValueError, match=rf"{name}: 1 of {value.size} values are not finite"):
        export.export_diffusers({"scnet": bad}, tmp_path / "export")
    assert not (tmp_path / "flax" / "scnet.flax.safetensors").exists() and not (tmp_path / "export").exists()


def test_export_flax_replaces_a_file_only_with_overwrite(tiny_scnet, tmp_path):
    from personacraft_jax.train import export

    (path,) = export.export_flax({"scnet": tiny_scnet}, tmp_path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"scnet\.flax\.safetensors.* already there; pass overwrite=True"):
        export.export_flax({"scnet": tiny_scnet}, tmp_path)
    assert export.export_flax({"scnet": tiny_scnet}, tmp_path, overwrite=True) == [path]
    assert path.read_bytes() == before


def nnx_params(module):
    from flax import nnx

    return nnx.state(module, nnx.Param)


def test_sigterm_saves_and_stops(straight_run, tmp_path, caplog):
    cfg = fx.config()
    cfg.checkpoint.every_steps = 2  # the signal arrives on a checkpoint step: one save, not two
    trainer = _trainer(tmp_path, cfg)
    with caplog.at_level("WARNING"):
        history = trainer.train(5, writer=fx.SigtermAt(2))
    trainer.close()
    assert len(history) == 2 and trainer.step == 2
    assert trainer.checkpointer.all_steps() == [2]
    # Told apart from a finished run (launch.train exits with PREEMPTED_EXIT_STATUS on it).
    assert trainer.early_stop == trainer_lib.EarlyStop(step=2, num_steps=5, reason="preemption")
    assert "stopped early at step 2 of 5 (preemption), checkpoint saved" in caplog.text


def test_sigterm_between_checkpoints_stops_after_the_running_step(straight_run, tmp_path):
    """The signal arrives while step 2's metrics are written, when step 3 is already queued: the run stops
    after step 3, with a checkpoint of it and every step's metrics."""
    cfg = fx.config()
    cfg.checkpoint.every_steps = 100
    trainer = _trainer(tmp_path, cfg)
    history = trainer.train(5, writer=fx.SigtermAt(2))
    trainer.close()
    assert [r["step"] for r in history] == [1, 2, 3] and trainer.step == 3
    assert trainer.checkpointer.all_steps() == [3]
    assert trainer.early_stop == trainer_lib.EarlyStop(step=3, num_steps=5, reason="preemption")


def test_launch_train_exits_with_the_preemption_status(tmp_path):
    """SIGTERM after step 2 of a 30-step `launch.train` run: a checkpoint of step 2, the early stop logged and
    exit status 143 (`launch.train.PREEMPTED_EXIT_STATUS`), not 0 and "finished"."""
    import pathlib
    import subprocess
    import sys

    args = [
        "--config=tests/train_fixtures.py",
        f"--workdir={tmp_path}",
        "--config.data.data_dir=in-memory",
        "--config.train.num_steps=30",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "tests.launch_train_worker", "2", *args],
        cwd=pathlib.Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 143, log[-4000:]
    assert "stopped early at step 2 of 30 (preemption), checkpoint saved" in log, log[-4000:]
    assert "finished at step" not in log
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2]


def test_nan_policy_stop_raises_and_saves_nothing(tmp_path):
    bad = [dict(e) for e in SOURCE]
    for e in bad:
        e["latent_mean"] = np.full_like(e["latent_mean"], np.nan)
    cfg = _with(fx.config(), nan_policy="stop")
    cfg.checkpoint.every_steps = 100
    trainer = trainer_lib.Trainer(cfg, tmp_path, source=bad, empty_prompt=fx.empty_prompt())
    with pytest.raises(trainer_lib.NonFiniteError, match="step 1: non-finite loss"):
        trainer.train(4)
    trainer.close()
    assert trainer.checkpointer.all_steps() == []


def test_aot_compile_reports_memory_and_flops():
    from personacraft_jax.train import aot

    cfg = fx.config(data=2, fsdp=2, tensor=2)
    cfg.data.resolution, cfg.data.text_tokens = fx.PIXELS, fx.TEXT_TOKENS
    _, report = aot.compile_train_step(cfg, jax.devices(), chip="v5p")
    trainable_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(_abstract_scnet_params()))
    # Per chip: the fp32 SCNet + two AdamW moments, split at most fsdp x tensor = 4 ways, are arguments.
    assert report.argument_bytes >= 3 * trainable_bytes / 4
    assert report.temp_bytes > 0 and report.flops_per_chip > 0
    # 8 examples over data x fsdp = 4 example shards; the tensor axis splits the models, not the batch
    assert report.per_chip_batch == 2 and report.devices == 8
    assert report.as_dict()["total_bytes"] == report.total_bytes
    assert report.fits is True  # a tiny model is far below a v5p chip's 95 GiB
    squeezed = dataclasses.replace(report, chip_hbm_bytes=report.total_bytes - 1)
    assert squeezed.fits is False and dataclasses.replace(report, chip_hbm_bytes=None).fits is None


def test_aot_step_time_ignores_placeholder_estimates():
    from personacraft_jax.train import aot

    assert aot.xla_step_seconds({"optimal_seconds": 0.5}) == 0.5
    # libtpu's v6e target reports a negative placeholder: no estimate, hence no MFU.
    for cost in ({"optimal_seconds": -2174.5}, {"optimal_seconds": float("nan")}, {"flops": 1.0}):
        assert aot.xla_step_seconds(cost) is None
    report = aot.CompileReport(1, 1, 0, 0, 0, 0, 1e12, aot.xla_step_seconds({"optimal_seconds": -1.0}), 1, 1e12, 1)
    assert report.mfu is None


def _abstract_scnet_params():
    from flax import nnx

    from personacraft_jax.train import networks

    cfg = fx.config()
    nets = networks.build_networks(cfg.model, ("scnet",), ("scnet",), 0)
    return nnx.state(nets["scnet"], nnx.Param)


def test_launch_commands_have_help():
    import subprocess
    import sys

    for module in ("launch.train", "launch.aot_compile", "launch.export"):
        done = subprocess.run([sys.executable, "-m", module, "--helpfull"], capture_output=True, text=True)
        assert done.returncode == 0, (module, done.stderr[-2000:])
        assert "--config" in done.stdout or "--checkpoint" in done.stdout
        if module == "launch.train":  # the exit statuses a requeue wrapper tells apart
            assert "143  PREEMPTED_EXIT_STATUS" in done.stdout


def test_non_finite_update_is_skipped_and_named(straight_run, tmp_path, caplog):
    bad = [dict(e) for e in SOURCE]
    for e in bad:  # every batch is poisoned
        e["latent_mean"] = np.full_like(e["latent_mean"], np.nan)
    trainer = trainer_lib.Trainer(fx.config(), tmp_path, source=bad, empty_prompt=fx.empty_prompt())
    before = _params(trainer)
    with caplog.at_level("WARNING"):
        history = trainer.train(1)
    after = _params(trainer)
    trainer.close()
    assert history[0]["finite"] == 0.0 and trainer.step == 1
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)  # the update was skipped
    assert "non-finite loss" in caplog.text
    # Under nan_policy='stop' the same record stops the run, naming the quantity.
    trainer.step_cfg = trainer_lib.step_config(_with(fx.config(), nan_policy="stop").train, ("scnet",))
    with pytest.raises(trainer_lib.NonFiniteError, match="non-finite loss"):
        trainer._check_finite(history[0])


def _poisoned_source() -> list[dict]:
    bad = [dict(e) for e in SOURCE]
    for e in bad:  # every batch is poisoned
        e["latent_mean"] = np.full_like(e["latent_mean"], np.nan)
    return bad


def test_skip_counter_counts_runs_of_skipped_updates():
    counter = trainer_lib.SkipCounter(limit=2, total=5)  # 5 skipped before a resume
    for step, finite in enumerate([False, True, False], start=1):
        counter.update(finite)
        counter.raise_if_diverged(step)  # never two in a row
    assert counter.total == 7 and counter.in_a_row == 1
    counter.update(False)
    with pytest.raises(trainer_lib.DivergenceError, match=r"step 4: 2 consecutive updates skipped"):
        counter.raise_if_diverged(4)


def test_consecutive_skipped_steps_stop_the_run(tmp_path):
    """Under nan_policy='skip' a diverged run stops after `train.max_consecutive_skipped_steps` skipped updates
    in a row (counted from the launch), naming the step and the setting; `skipped_steps` counts them all, also
    those before a resume."""
    cfg = _with(fx.config(), max_consecutive_skipped_steps=3)
    cfg.checkpoint.every_steps = 100
    first = trainer_lib.Trainer(cfg, tmp_path, source=_poisoned_source(), empty_prompt=fx.empty_prompt())
    assert [r["skipped_steps"] for r in first.train(2)] == [1, 2]
    first.close()
    resumed = trainer_lib.Trainer(cfg, tmp_path, source=_poisoned_source(), empty_prompt=fx.empty_prompt())
    sink = _ScalarSink()
    message = r"step 5: 3 consecutive updates skipped .*non-finite loss.*train\.max_consecutive_skipped_steps=3"
    with pytest.raises(trainer_lib.DivergenceError, match=message):
        resumed.train(10, writer=sink)
    resumed.close()
    assert [(r["step"], r["skipped_steps"]) for r in sink.scalars] == [(3, 3), (4, 4), (5, 5)]
    assert resumed.checkpointer.all_steps() == [2]  # the stopping launch saved nothing


class _ScalarSink:
    def __init__(self):
        self.scalars = []

    def write_scalars(self, step, scalars):
        self.scalars.append(dict(scalars))

    def flush(self):
        pass


def test_metrics_are_read_one_step_behind(tmp_path, monkeypatch):
    """The host queues step n + 1 before it waits for step n's metrics (no per-step device sync), except at
    a checkpoint step (here only the last)."""
    cfg = fx.config()
    cfg.checkpoint.every_steps = 100
    trainer = _trainer(tmp_path, cfg)
    events = []
    compile_step = trainer._compile

    def compile_and_wrap(batch):
        compile_step(batch)
        jitted = trainer._jitted
        trainer._jitted = lambda *args: (events.append("dispatch"), jitted(*args))[1]

    device_get = jax.device_get

    def recording_get(tree):
        if isinstance(tree, dict) and "loss" in tree:
            events.append("read")
        return device_get(tree)

    monkeypatch.setattr(trainer, "_compile", compile_and_wrap)
    monkeypatch.setattr(jax, "device_get", recording_get)
    history = trainer.train(4)
    trainer.close()
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert events == ["dispatch", "dispatch", "read", "dispatch", "read", "dispatch", "read", "read"]


def test_logged_learning_rate_is_the_one_applied(tmp_path):
    """With warmup, a skipped (non-finite) update does not advance the optimizer's schedule; the logged
    learning rate follows the optimizer, not the step number."""
    cfg = _with(fx.config(), warmup_steps=4)
    schedule = optimizer_lib.learning_rate_schedule(cfg.train)
    bad = [dict(e) for e in SOURCE]
    for e in bad:
        e["latent_mean"] = np.full_like(e["latent_mean"], np.nan)
    logged = {}
    for name, source in (("clean", SOURCE), ("poisoned", bad)):
        trainer = trainer_lib.Trainer(cfg, tmp_path / name, source=source, empty_prompt=fx.empty_prompt())
        logged[name] = [r["learning_rate"] for r in trainer.train(3)]
        trainer.close()
    np.testing.assert_allclose(logged["clean"], [schedule(0), schedule(1), schedule(2)], rtol=1e-6)
    assert schedule(1) > 0.0
    np.testing.assert_array_equal(logged["poisoned"], [schedule(0)] * 3)


def _with(cfg, **train):
    cfg.train.update(train)
    return cfg


class _ImageSink:
    def __init__(self):
        self.images = {}

    def write_scalars(self, step, scalars):
        pass

    def flush(self):
        pass

    def write_images(self, step, images):
        self.images.update({(step, name): image for name, image in images.items()})


def test_validation_samples_use_the_current_scnet(straight_run, tmp_path):
    import json

    from data_prep.standin_sdxl import write_standin_sdxl

    scene = {
        "prompt": "two people", "width": 32, "height": 32, "steps": 2, "seeds": [0],
        "oa_cfg": {"mode": "none", "fraction": 0.0},
        "people": [{"name": "a", "betas": [0.0] * 10, "transl": [-0.2, -0.5, 3.0], "face": None},
                   {"name": "b", "betas": [0.0] * 10, "transl": [0.2, -0.5, 3.5], "face": None}],
    }  # fmt: skip
    (tmp_path / "scene.json").write_text(json.dumps(scene))
    cfg = fx.config()
    cfg.model.sdxl_folder = str(write_standin_sdxl(tmp_path / "sdxl"))
    cfg.log.sample_every_steps = 2
    cfg.log.sample_scene = str(tmp_path / "scene.json")
    cfg.log.sample.cache_dir = str(tmp_path / "cache")
    cfg.log.sample.size_multiple = 8
    trainer = _trainer(tmp_path / "run", cfg)
    at_start = trainer.write_validation_samples(0, None)  # SCNet = from_unet: zero residuals
    sink = _ImageSink()
    trainer.train(2, writer=sink)
    trainer.close()
    ((key, logged),) = sink.images.items()
    assert key == (2, "samples/seed0") and logged.shape == (32, 32, 3) and logged.dtype == np.uint8
    assert not np.array_equal(logged, at_start[0])  # the trained SCNet's residuals changed the sample


def test_validation_sampling_needs_the_sdxl_folder(tmp_path):
    cfg = fx.config()
    cfg.log.sample_every_steps = 10
    with pytest.raises(ValueError, match=r"log\.sample_every_steps needs model\.sdxl_folder"):
        _trainer(tmp_path, cfg)
