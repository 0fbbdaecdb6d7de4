"""The training loop: mesh, networks, sharded state, data, the jitted step, checkpoints and metrics.

One `Trainer` = one run in `workdir` (`config.json`, `checkpoints/`, `tensorboard/`, `.lock`: a second run
on the same workdir is refused while the first one lives, see `workdir_lock`). If `workdir` has a checkpoint
the run resumes from the latest one, or from `checkpoint.restore_step` (parameters, optimizer, step, RNG,
data-iterator position) into this run's mesh; a checkpoint that cannot be restored or fails its checksum
verification is an error, never a fresh start. A non-finite train state is never saved (CheckpointError).
SIGTERM (preemption) saves a checkpoint at the next step boundary and returns (with several processes: at
one step all of them agree on), with `Trainer.early_stop` set, which `launch.train` turns into its exit
status `PREEMPTED_EXIT_STATUS`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from personacraft_jax.data import loader as loader_lib
from personacraft_jax.parallel import mesh as mesh_lib
from personacraft_jax.parallel import sharding as sharding_lib
from personacraft_jax.sampling import schedulers
from personacraft_jax.train import checkpoint as checkpoint_lib
from personacraft_jax.train import networks as networks_lib
from personacraft_jax.train import optimizer as optimizer_lib
from personacraft_jax.train import run_checks, workdir_lock
from personacraft_jax.train import run_config as run_config_lib
from personacraft_jax.train import state as state_lib
from personacraft_jax.train import step as step_lib
from personacraft_jax.train.metrics_writer import MetricsWriter


class NonFiniteError(FloatingPointError):
    """Raised under `train.nan_policy='stop'` when a step's loss or gradients are not finite."""


class DivergenceError(NonFiniteError):
    """Raised under `train.nan_policy='skip'` after `train.max_consecutive_skipped_steps` skipped updates in a row."""


@dataclasses.dataclass
class SkipCounter:
    """Updates skipped under `nan_policy='skip'`: `total` (from the restored state on) and `in_a_row` (in this
    launch); `raise_if_diverged` stops the run when `in_a_row` reaches `limit`."""

    limit: int
    total: int = 0
    in_a_row: int = 0
    last_reason: str = ""

    def update(self, finite: bool, reason: str = "") -> None:
        """Counts one step: `finite` False = its update was skipped, for `reason`."""
        if finite:
            self.in_a_row = 0
            return
        self.total += 1
        self.in_a_row += 1
        self.last_reason = reason

    def raise_if_diverged(self, step: int) -> None:
        if self.in_a_row >= self.limit:
            raise DivergenceError(
                f"step {step}: {self.in_a_row} consecutive updates skipped (last: {self.last_reason or 'non-finite'}); "
                f"stopping at config train.max_consecutive_skipped_steps={self.limit}: the run has diverged "
                "(lower train.learning_rate, or resume from a checkpoint before the divergence)"
            )


def vae_scaling_factor(config: Any) -> float:
    """The latent scaling factor: the SDXL folder's `vae/config.json` when there is one, else
    `train.scaling_factor` (SDXL's 0.13025 by default)."""
    if config.model.sdxl_folder:
        vae_config = os.path.join(os.path.expanduser(config.model.sdxl_folder), "vae", "config.json")
        if os.path.isfile(vae_config):
            with open(vae_config) as f:
                return float(json.load(f)["scaling_factor"])
    return float(config.train.scaling_factor)


def step_config(cfg: Any, control_nets: tuple[str, ...], scaling_factor: float | None = None) -> step_lib.StepConfig:
    """StepConfig from the `train` section (validates trainable names and policies); `control_nets`: the
    ControlNets whose residuals the UNet gets (`control_nets(config)`)."""
    scales = {"scnet": float(cfg.scnet_scale), "oben": float(cfg.oben_scale)}
    return step_lib.StepConfig(
        trainable=tuple(cfg.trainable),
        lambda_occ=float(cfg.lambda_occ),
        min_snr_gamma=cfg.min_snr_gamma,
        prediction_type=cfg.prediction_type,
        nan_policy=cfg.nan_policy,
        scaling_factor=float(cfg.scaling_factor if scaling_factor is None else scaling_factor),
        conditioning_scales=tuple((name, scales[name]) for name in control_nets),
    )


def control_nets(config: Any) -> tuple[str, ...]:
    """The ControlNets a run uses (trained or frozen), in `step.CONTROL_NETS` order: SCNet unless
    `model.use_scnet` is False and it is not trained; OBEN when `model.use_oben` or trained."""
    trainable = tuple(config.train.trainable)
    used = {
        "scnet": bool(config.model.get("use_scnet", True)) or "scnet" in trainable,
        "oben": bool(config.model.use_oben) or "oben" in trainable,
    }
    return tuple(name for name in step_lib.CONTROL_NETS if used[name])


@dataclasses.dataclass
class StepSetup:
    """One configured train step, before placement and compilation (shared by Trainer and AOT compiles).

    `trainable` / `frozen`: parameters (concrete or abstract) of the trained and the frozen networks;
    `abstract_state`: the TrainState's shapes; `step_fn(state, frozen, batch) -> (state, metrics)` unjitted.
    """

    nets: dict[str, Any]
    trainable: dict[str, Any]
    frozen: dict[str, Any]
    optimizer: Any
    abstract_state: Any
    state_shardings: Any
    frozen_shardings: Any
    step_fn: Callable

    def jit(self, batch_shardings: Mapping[str, Any]) -> Any:
        return jit_train_step(self.step_fn, self.state_shardings, self.frozen_shardings, batch_shardings)


def jit_train_step(step_fn: Callable, state_shardings: Any, frozen_shardings: Any, batch_shardings: Any) -> Any:
    """`step_fn` under `jax.jit` with explicit in/out shardings and the train state donated."""
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, frozen_shardings, dict(batch_shardings)),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )


def setup_step(
    config: Any,
    modules: dict[str, Any],
    step_cfg: step_lib.StepConfig,
    mesh: jax.sharding.Mesh,
    rules: Mapping[str, Any],
    empty_prompt: Mapping[str, Any] | None,
) -> StepSetup:
    """Splits the networks, makes the optimizer and the state / parameter shardings, and the step function.

    `empty_prompt`: the "" prompt's `prompt_embeds` (77, D) / `pooled_prompt_embeds` (D',) for caption dropout;
    None when the step never drops captions (a placeholder is used)."""
    if empty_prompt is None:
        empty_prompt = {"prompt_embeds": np.zeros((1, 1)), "pooled_prompt_embeds": np.zeros((1,))}
    nets, params = step_lib.split_networks(modules)
    trainable = {name: params.pop(name) for name in step_cfg.trainable}
    optimizer = optimizer_lib.make_optimizer(config.train)
    abstract = jax.eval_shape(lambda p: state_lib.init_train_state(p, optimizer, 0), trainable)
    step_fn = step_lib.make_train_step(
        nets,
        step_cfg,
        optimizer,
        schedulers.SchedulerConfig(**dict(config.train.noise_schedule)),
        {k: jnp.asarray(v, jnp.float32) for k, v in empty_prompt.items()},
        optimizer_lib.learning_rate_schedule(config.train),
    )
    return StepSetup(
        nets=nets,
        trainable=trainable,
        frozen=params,
        optimizer=optimizer,
        abstract_state=abstract,
        state_shardings=state_lib.train_state_shardings(abstract, optimizer, mesh, rules),
        frozen_shardings=state_lib.params_shardings(params, mesh, rules),
        step_fn=step_fn,
    )


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """A `train()` that ended at `step`, before its last step `num_steps`, with a checkpoint of `step`."""

    step: int
    num_steps: int
    reason: str  # "preemption": a SIGTERM (or, multi-process, JAX's preemption notice)

    def __str__(self) -> str:
        return f"stopped early at step {self.step} of {self.num_steps} ({self.reason}), checkpoint saved"


@dataclasses.dataclass
class _Stop:
    requested: bool = False

    def __call__(self, signum, frame) -> None:
        logging.warning("received signal %d: saving a checkpoint at the next step boundary", signum)
        self.requested = True


class Trainer:
    """Builds everything a run needs from the config; `train()` runs the loop."""

    def __init__(
        self,
        config: Any,
        workdir: str | os.PathLike,
        *,
        source: Any,
        empty_prompt: Mapping[str, np.ndarray] | None,
        devices: list[jax.Device] | None = None,
    ):
        run_checks.check_workdir(workdir)
        run_checks.check_positive_settings(config)
        run_checks.check_noise_schedule(config)
        launch = run_config_lib.check_launch(workdir, config)  # a resume's config against the run's
        if jax.process_count() > 1 and not jax.config.jax_enable_preemption_service:
            raise ValueError(
                "multi-process training stops on SIGTERM through JAX's preemption service; it is disabled "
                "(jax_enable_preemption_service=False)"
            )
        self.config = config
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        # One run per workdir; process 0 stands for the run (the other processes share its workdir).
        self._lock = workdir_lock.WorkdirLock(self.workdir) if jax.process_index() == 0 else None
        try:
            self._build(launch, source, empty_prompt, devices)
        except BaseException:
            self._release_lock()
            raise

    def _build(
        self,
        launch: run_config_lib.Launch,
        source: Any,
        empty_prompt: Mapping[str, np.ndarray] | None,
        devices: list[jax.Device] | None,
    ) -> None:
        """Everything after the workdir lock: mesh, networks, state (fresh or restored), loader."""
        config = self.config
        self.mesh = mesh_lib.make_mesh(dict(config.mesh), devices, dict(config.get("mesh_dcn") or {}))
        self.rules = dict(config.get("sharding_rules") or sharding_lib.DEFAULT_RULES)
        global_batch = int(config.data.batch_size)
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if global_batch % shards:
            raise ValueError(f"config data.batch_size={global_batch} is not divisible by data x fsdp = {shards}")
        self.control_nets = control_nets(config)
        self.step_cfg = step_config(config.train, self.control_nets, vae_scaling_factor(config))
        if config.data.caption_dropout > 0 and empty_prompt is None:
            raise ValueError(
                "config data.caption_dropout > 0 needs the empty prompt's embeddings (the data set's "
                "empty_prompt.npz, written by launch.prep with SDXL encodings)"
            )

        modules = networks_lib.build_networks(
            config.model, self.step_cfg.trainable, self.control_nets, int(config.seed)
        )
        self.validation = _validation_sampler(config, modules)
        setup = setup_step(config, modules, self.step_cfg, self.mesh, self.rules, empty_prompt)
        del modules
        self.nets, self.optimizer, self._step_fn = setup.nets, setup.optimizer, setup.step_fn
        self.state_shardings, self.frozen_shardings = setup.state_shardings, setup.frozen_shardings
        self.frozen = jax.device_put(setup.frozen, self.frozen_shardings)
        abstract, trainable = setup.abstract_state, setup.trainable
        del setup

        self.checkpointer = checkpoint_lib.Checkpointer(
            os.path.join(self.workdir, "checkpoints"),
            keep=int(config.checkpoint.keep),
            async_save=bool(config.checkpoint.async_save),
        )
        self.loader = loader_lib.make_loader(
            source,
            global_batch_size=global_batch,
            seed=int(config.seed),
            options=loader_lib.InputOptions(
                caption_dropout=float(config.data.caption_dropout),
                edge_radius=int(config.data.edge_radius),
                occlusion_radius=int(config.data.occlusion_radius),
                latent_factor=int(config.data.latent_factor),
                control_nets=self.control_nets,
            ),
            worker_count=int(config.data.worker_count),
        )
        self.iterator = iter(self.loader)
        self._last_saved_step: int | None = None  # the step of the last checkpoint written or restored
        restore_step = config.checkpoint.get("restore_step")
        if restore_step is not None or self.checkpointer.latest_step() is not None:
            self._resume(restore_step, abstract)
        else:
            init = jax.jit(
                lambda p: state_lib.init_train_state(p, self.optimizer, int(config.seed)),
                out_shardings=self.state_shardings,
            )
            self.state = init(trainable)
        del trainable
        # config.json (what launch.export rebuilds the networks from) and the config history; written only
        # now, so a launch whose config cannot restore the run's checkpoints leaves them as they were.
        launch.record()
        skipped_before = int(self.state.step) - int(state_lib.applied_updates(self.state.opt_state))
        self.skips = SkipCounter(int(config.train.max_consecutive_skipped_steps), total=skipped_before)
        self._jitted = None  # compiled on the first batch, when the batch shapes are known
        self.early_stop: EarlyStop | None = None  # set by train() when it stops before its last step
        self.flops_per_step: float | None = None

    # ------------------------------------------------------------------------------------------------
    def _resume(self, restore_step: int | None, abstract: Any) -> None:
        """Restores the verified checkpoint `restore_step` (None = the latest) with the data-iterator position;
        an explicit `restore_step` sets the newer checkpoints aside (checkpoints/set_aside/<step>)."""
        target = checkpoint_lib.abstract_with_shardings(abstract, self.state_shardings)
        self.state, data_state = self.checkpointer.restore(restore_step, target)
        own = f"process_{jax.process_index()}"
        if own not in data_state or len(data_state) != jax.process_count():
            raise checkpoint_lib.CheckpointError(
                f"{self.checkpointer.directory}: the checkpoint holds data-iterator states of {sorted(data_state)}; "
                f"this run has {jax.process_count()} processes (resume with the same number of processes)"
            )
        self.iterator.set_state(data_state[own].encode())
        self._last_saved_step = int(self.state.step)
        if restore_step is not None:
            newer = self.checkpointer.set_aside_steps_after(restore_step)
            if newer:
                logging.warning(
                    "config checkpoint.restore_step=%d: moved the newer steps %s to %s/%s",
                    restore_step,
                    newer,
                    self.checkpointer.directory,
                    checkpoint_lib.SET_ASIDE_NAME,
                )
        logging.info("resumed from %s at step %d", self.checkpointer.directory, int(self.state.step))

    def _compile(self, batch: Mapping[str, jax.Array]) -> None:
        batch_shardings = {k: v.sharding for k, v in batch.items()}
        jitted = jit_train_step(self._step_fn, self.state_shardings, self.frozen_shardings, batch_shardings)
        start = time.perf_counter()
        self._jitted = jitted.lower(self.state, self.frozen, batch).compile()
        logging.info("compiled the train step in %.1f s", time.perf_counter() - start)
        cost = self._jitted.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        self.flops_per_step = float(cost.get("flops", 0.0)) if cost else None

    def next_batch(self) -> dict[str, jax.Array]:
        return loader_lib.global_batch(next(self.iterator), self.mesh, self.rules)

    def save(self) -> None:
        """Checkpoints the current step (once: a second request for the same step is a no-op)."""
        step = int(self.state.step)
        if step != self._last_saved_step:
            states = _gather_strings(self.iterator.get_state().decode())
            self.checkpointer.save(step, self.state, {f"process_{i}": s for i, s in enumerate(states)})
            self._last_saved_step = step

    @property
    def step(self) -> int:
        return int(self.state.step)

    def train(self, num_steps: int | None = None, *, writer: MetricsWriter | None = None) -> list[dict[str, float]]:
        """Runs until `train.num_steps` (or `num_steps` more steps); returns the per-step metrics. A run that
        stopped before its last step (SIGTERM) sets `self.early_stop`; a finished one leaves it None.

        The host never waits for the step it just dispatched: step n's metrics are read after step n + 1 is
        queued, so loading the next batch and logging overlap the device's work. Consequences: `step_time` is
        the time between consecutive steps' completions; under `nan_policy='stop'` the error names step n while
        step n + 1 has already run (nothing is saved after a non-finite step); under `nan_policy='skip'` the
        same holds for the DivergenceError after `train.max_consecutive_skipped_steps` skipped updates in a row
        (the metric `skipped_steps` counts all skipped updates). Checkpoint, validation and stop steps wait for
        their own metrics first. A SIGTERM is acted on at the next step; in multi-process runs
        it goes to JAX's preemption service (`jax.distributed`), which tells every process, and all of them
        stop and save at the same step (`multihost_utils.reached_preemption_sync_point`), also when the
        notice came before the first step.
        """
        cfg = self.config
        step = self.step  # one read of the device counter; the host counts from here
        end = int(cfg.train.num_steps) if num_steps is None else step + num_steps
        stop = _Stop()
        # Multi-process: JAX's preemption service has its own SIGTERM handler; a Python one would replace it.
        own_handler = jax.process_count() == 1 and _is_main_thread()
        previous = signal.signal(signal.SIGTERM, stop) if own_handler else None
        history: list[dict[str, float]] = []
        self.early_stop = None
        pending: tuple[int, Any] | None = None  # (step, its metrics on device), not read yet
        last_done = time.perf_counter()

        def finish_pending() -> None:
            nonlocal pending, last_done
            if pending is not None:
                item, pending = pending, None
                last_done = self._finish_step(*item, last_done, history, writer)

        try:
            while step < end:
                batch = self.next_batch()
                if self._jitted is None:
                    self._compile(batch)
                    last_done = time.perf_counter()
                self.state, metrics = self._jitted(self.state, self.frozen, batch)
                step += 1
                finish_pending()  # step - 1, while `step` runs
                pending = (step, metrics)
                due_save = step % int(cfg.checkpoint.every_steps) == 0 or step == end
                due_sample = self.validation is not None and step % int(cfg.log.sample_every_steps) == 0
                if due_save or due_sample:  # act on a step whose metrics were checked
                    finish_pending()
                stopping = _stop_requested(stop)
                if stopping:
                    finish_pending()
                if due_sample:
                    self.write_validation_samples(step, writer)
                if due_save or stopping:
                    if writer is not None:  # every checkpointed step's metrics are on disk before its checkpoint
                        writer.flush()
                    self.save()
                if due_sample or due_save or stopping:
                    last_done = time.perf_counter()  # the next step's time excludes sampling and saving
                if stopping:
                    if step < end:  # a notice at the last step does not make a finished run unfinished
                        self.early_stop = EarlyStop(step=step, num_steps=end, reason="preemption")
                    break
            # The last step is always a save step, so no metrics are pending here.
        except BaseException:
            if pending is not None:  # record the step that ran before the error, without hiding the error
                failed_step = pending[0]
                try:
                    finish_pending()
                except Exception:
                    logging.exception("step %d's metrics could not be recorded after the error below", failed_step)
            raise
        finally:
            self.checkpointer.wait()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if self.early_stop is not None:
            logging.warning("%s", self.early_stop)  # after wait(): the checkpoint is complete
        return history

    def _finish_step(
        self, step: int, metrics: Any, last_done: float, history: list, writer: MetricsWriter | None
    ) -> float:
        """Reads step `step`'s metrics (waiting for it), checks them, records and writes them; returns when
        the step was seen done."""
        record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        done = time.perf_counter()
        elapsed = max(done - last_done, 1e-9)
        record.update(step=step, step_time=elapsed)
        record["examples_per_second"] = self.config.data.batch_size / elapsed
        if self.flops_per_step:
            # cost_analysis of an SPMD program counts one device's share.
            record["tflops_per_device"] = self.flops_per_step / elapsed / 1e12
        history.append(record)
        self._check_finite(record)
        if writer is not None:
            writer.write_scalars(step, record)
        self.skips.raise_if_diverged(step)
        return done

    def write_validation_samples(self, step: int, writer: MetricsWriter | None) -> np.ndarray:
        """Samples the validation scene with the current trained nets; logs the images; returns them."""
        start = time.perf_counter()
        images = self.validation({name: self.state.params[name] for name in self.step_cfg.trainable})
        logging.info("validation samples at step %d (%.1f s)", step, time.perf_counter() - start)
        if writer is not None:
            seeds = self.validation.job.scene.seeds
            writer.write_images(step, {f"samples/seed{seed}": image for seed, image in zip(seeds, images)})
        return images

    def _check_finite(self, record: dict[str, float]) -> None:
        """Raises NonFiniteError under `nan_policy='stop'`, else counts a skipped update; sets
        `record['skipped_steps']` (all updates skipped so far, also before a resume)."""
        reason = ""
        if not record["finite"]:
            bad = [
                k for k in ("loss", *(k for k in record if k.startswith("grad_norm/"))) if not np.isfinite(record[k])
            ]
            reason = f"non-finite {', '.join(bad) or 'values'}"
            if self.step_cfg.nan_policy == "stop":
                raise NonFiniteError(f"step {int(record['step'])}: {reason}")
            logging.warning("step %d: %s; the update was skipped", int(record["step"]), reason)
        self.skips.update(bool(record["finite"]), reason)
        record["skipped_steps"] = float(self.skips.total)

    def close(self) -> None:
        """Waits for pending checkpoint saves, then releases the workdir lock."""
        try:
            self.checkpointer.close()
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()


def _validation_sampler(config: Any, modules: Mapping[str, Any]) -> Any:
    """The `log.sample_every_steps` sampler (None when off); checks its config fields at start-up."""
    if not config.log.get("sample_every_steps"):
        return None
    if not config.model.sdxl_folder:
        raise ValueError("config log.sample_every_steps needs model.sdxl_folder (VAE, text encoders, tokenizers)")
    if jax.process_count() > 1:  # it holds a replicated copy of the frozen networks on process-local devices
        raise ValueError("config log.sample_every_steps is single-process only; sample from exported checkpoints")
    if not config.log.sample_scene or not os.path.isfile(os.path.expanduser(config.log.sample_scene)):
        raise ValueError(f"config log.sample_scene={config.log.sample_scene!r}: a scene file is required")
    from personacraft_jax.sampling.sample_job import ValidationSampler

    sample_cfg = ml_collections.ConfigDict(config.log.sample.to_dict())
    sample_cfg.model.sdxl_folder = config.model.sdxl_folder
    sample_cfg.model.variant = config.model.get("variant")
    given = {name: module for name, module in modules.items() if name in ("unet", "scnet", "oben")}
    return ValidationSampler(sample_cfg, os.path.expanduser(config.log.sample_scene), **given)


def _gather_strings(local: str) -> list[str]:
    """Every process's `local` string, in process order (orbax writes JSON items from the primary only)."""
    if jax.process_count() == 1:
        return [local]
    from jax.experimental import multihost_utils

    data = np.frombuffer(local.encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [bytes(row[:n]).decode() for row, n in zip(gathered, lengths, strict=True)]


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# JAX's preemption sync manager is per process and compares the ids it is given against the largest id any
# process had passed when the notice came (0 before the first call). Feeding it the train step would never
# match after a resume from step S when the notice came before the first call (the sync id is then 1), so
# it gets its own count of calls: per process, like the manager, and equal on all processes.
_SYNC_POINT_CALLS = itertools.count(1)


def _stop_requested(stop: _Stop) -> bool:
    """Whether to save and stop after the step just dispatched: this process's SIGTERM flag, or, with several
    processes, the preemption sync point that all of them reach at the same step (ask at every step)."""
    if jax.process_count() == 1:
        return stop.requested
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point(next(_SYNC_POINT_CALLS))
