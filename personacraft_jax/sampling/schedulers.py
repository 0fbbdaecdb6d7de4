"""Diffusion schedulers for one jit-compiled denoising loop: Euler discrete, DDIM, DPM-Solver++ (2M).

Design:
- `SchedulerConfig` holds the diffusers scheduler options (diffusers field names). `kind` picks the solver:
  "euler" (`EulerDiscreteScheduler`, SDXL's default), "ddim" (`DDIMScheduler`) or "dpmsolver++"
  (`DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`, i.e. DPM++ 2M for `solver_order=2`).
- `make_schedule(config, num_steps)` runs on the host (numpy) for a static number of steps and returns a
  `Schedule` pytree of small float32 arrays: the same timesteps and sigmas as diffusers' `set_timesteps(num_steps)`,
  plus per-step coefficients (kind-specific, in `Schedule.coeffs`).
- Pure-jnp functions with one API for all kinds, where the step index `i` may be traced (`lax.fori_loop` /
  `lax.scan`):  `init_noise_sigma`, `init_state`, `scale_model_input`, `step`. `SolverState` carries what the
  multistep solver needs (DPM: the previous x0 prediction; Euler/DDIM carry nothing).
- Training helpers: `add_noise` (DDPM forward process) and `get_velocity` (v-prediction target).

Numerics: the training schedule (betas, alphas_cumprod) follows diffusers' float32 recipe; steps compute in
float32 and return the sample's dtype. The DPM-Solver coefficients are precomputed on the host in float64
(from the float32 sigmas), which also handles the final sigma = 0 (lambda = +inf) without infs in the loop;
a zero-length DPM step (h = 0, e.g. Karras sigmas ending on a repeated sigma_min) is the identity, where
diffusers' Heun variant gives NaN.

Not supported (an error names the key): beta schedules other than linear / scaled_linear, trained_betas,
zero-terminal-SNR rescaling, thresholding, exponential / beta / lu-lambda / flow sigmas, Euler
`interpolation_type="log_linear"` and `s_churn`, SDE and non-++ DPM variants, `solver_order=3`,
prediction types other than epsilon / v_prediction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array

KINDS = ("euler", "ddim", "dpmsolver++")
_CLASS_TO_KIND = {
    "EulerDiscreteScheduler": "euler",
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpmsolver++",
}

# diffusers' __init__ defaults, used for keys missing from a scheduler_config.json (as `from_config` does).
_COMMON_DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "steps_offset": 0,
}
_KIND_DIFFUSERS_DEFAULTS: dict[str, dict[str, Any]] = {
    "euler": {
        "timestep_spacing": "linspace",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "final_sigmas_type": "zero",
    },
    "ddim": {"timestep_spacing": "leading", "clip_sample": True, "set_alpha_to_one": True, "clip_sample_range": 1.0},
    "dpmsolver++": {
        "timestep_spacing": "linspace",
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "use_karras_sigmas": False,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": -math.inf,
    },
}
# Keys whose only supported value is the no-op one.
_REQUIRED_VALUES: dict[str, Any] = {
    "trained_betas": None,
    "rescale_betas_zero_snr": False,
    "thresholding": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
    "variance_type": None,
    "timestep_type": "discrete",
    "sigma_min": None,
    "sigma_max": None,
}
# Keys without effect on the supported configurations.
_IGNORED_KEYS = frozenset(
    {
        "_class_name",
        "_diffusers_version",
        "_use_default_values",
        "skip_prk_steps",
        "sample_max_value",
        "dynamic_thresholding_ratio",
        "flow_shift",
        "time_shift_type",
    }
)

_CHOICES: dict[str, tuple[Any, ...]] = {
    "kind": KINDS,
    "beta_schedule": ("linear", "scaled_linear"),
    "prediction_type": ("epsilon", "v_prediction"),
    "timestep_spacing": ("leading", "trailing", "linspace"),
    "interpolation_type": ("linear",),
    "final_sigmas_type": ("zero", "sigma_min"),
    "algorithm_type": ("dpmsolver++",),
    "solver_order": (1, 2),
    "solver_type": ("midpoint", "heun"),
}


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Scheduler options with diffusers' names; the defaults are SDXL base 1.0's `scheduler_config.json`.

    Options that do not apply to `kind` are ignored (as diffusers ignores them). `eta` is DDIM's step argument
    (0 = deterministic DDIM; > 0 needs `noise` in `step`).
    """

    kind: str = "euler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 1
    # Euler and DPM-Solver
    use_karras_sigmas: bool = False
    final_sigmas_type: str = "zero"
    # Euler
    interpolation_type: str = "linear"
    # DDIM
    set_alpha_to_one: bool = False
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    eta: float = 0.0
    # DPM-Solver
    algorithm_type: str = "dpmsolver++"
    solver_order: int = 2
    solver_type: str = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    lambda_min_clipped: float = -math.inf

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"SchedulerConfig.{name}={value!r} is not supported; choose one of {choices}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"SchedulerConfig.num_train_timesteps={self.num_train_timesteps} must be >= 1")
        if self.eta < 0:
            raise ValueError(f"SchedulerConfig.eta={self.eta} must be >= 0")

    @classmethod
    def sdxl(cls, kind: str = "euler") -> SchedulerConfig:
        """SDXL base 1.0's scheduler config loaded as `kind` (what `<Kind>Scheduler.from_config` gives)."""
        return cls.from_diffusers(SDXL_SCHEDULER_CONFIG, kind=kind)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], kind: str | None = None) -> SchedulerConfig:
        """Reads a diffusers `scheduler_config.json` dict, strictly.

        `kind` defaults to the one of `_class_name`. Missing keys take the diffusers defaults of that scheduler
        class. Unknown keys and unsupported values raise `ValueError` naming the key.
        """
        if kind is None:
            class_name = config.get("_class_name")
            if class_name not in _CLASS_TO_KIND:
                raise ValueError(
                    f"_class_name={class_name!r} is not a supported scheduler ({sorted(_CLASS_TO_KIND)}); pass kind="
                )
            kind = _CLASS_TO_KIND[class_name]
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not supported; choose one of {KINDS}")
        fields = {f.name for f in dataclasses.fields(cls)} - {"kind", "eta"}
        values: dict[str, Any] = {**_COMMON_DIFFUSERS_DEFAULTS, **_KIND_DIFFUSERS_DEFAULTS[kind]}
        for key, value in config.items():
            if key in fields:
                values[key] = value
            elif key in _REQUIRED_VALUES:
                if value != _REQUIRED_VALUES[key]:
                    raise ValueError(
                        f"scheduler config {key}={value!r} is not supported (only {_REQUIRED_VALUES[key]!r})"
                    )
            elif key not in _IGNORED_KEYS:
                raise ValueError(f"unknown scheduler config key {key!r}")
        if values.get("lambda_min_clipped") is None:
            values["lambda_min_clipped"] = -math.inf
        try:
            return cls(kind=kind, **values)
        except ValueError as e:
            raise ValueError(f"scheduler config: {e}") from e


SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
"""SDXL base 1.0's `scheduler/scheduler_config.json`."""


@struct.dataclass
class Schedule:
    """A precomputed schedule of S = `num_steps` steps (a pytree; `kind` etc. are static).

    S is the length of the timesteps diffusers' `set_timesteps(n)` makes, which can be less than n: DPM-Solver
    with a `lambda_min_clipped` that clips and trailing spacing (e.g. 28 for 31). Loops must run S steps.

    timesteps: (S,) float32, the model's timestep input per step (diffusers' `scheduler.timesteps`).
    sigmas: (S+1,) float32, noise levels sqrt((1 - alpha_bar) / alpha_bar) per step plus the final one
      (Euler / DPM: diffusers' `scheduler.sigmas`; DDIM: derived from its alpha_bar's).
    init_noise_sigma: () float32, the std of the initial latent noise.
    alphas_cumprod: (T,) float32, the training schedule alpha_bar_t (for `add_noise` / `get_velocity`).
    coeffs: kind-specific (S,) float32 per-step coefficients.
    """

    timesteps: Array
    sigmas: Array
    init_noise_sigma: Array
    alphas_cumprod: Array
    coeffs: dict[str, Array]
    kind: str = struct.field(pytree_node=False)
    prediction_type: str = struct.field(pytree_node=False)
    clip_sample_range: float | None = struct.field(pytree_node=False, default=None)
    stochastic: bool = struct.field(pytree_node=False, default=False)

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[0]


class SolverState(NamedTuple):
    """Carried across steps. `prev_x0`: DPM-Solver's previous x0 prediction (float32, sample shape); None else."""

    prev_x0: Array | None


# ----------------------------------------------------------------------------------------------------------
# Host-side precomputation (numpy)
# ----------------------------------------------------------------------------------------------------------


def training_alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    """(T,) float32 alpha_bar_t = prod_{s<=t} (1 - beta_s), following diffusers' float32 recipe."""
    n = config.num_train_timesteps
    if config.beta_schedule == "linear":
        betas = np.linspace(config.beta_start, config.beta_end, n).astype(np.float32)
    else:  # scaled_linear
        betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, n).astype(np.float32) ** 2
    alphas = np.float32(1.0) - betas
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def _spaced_timesteps(config: SchedulerConfig, num_steps: int) -> np.ndarray:
    """Integer-valued timesteps (float64, descending) for `timestep_spacing` as Euler / DDIM space them."""
    n_train = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        return np.linspace(0, n_train - 1, num_steps)[::-1].copy()
    if config.timestep_spacing == "leading":
        ratio = n_train // num_steps
        return (np.arange(num_steps) * ratio).round()[::-1] + config.steps_offset
    ratio = n_train / num_steps  # trailing
    return np.arange(n_train, 0, -ratio).round() - 1


def _sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each sigma by piecewise-linear interpolation in log sigma."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = np.clip(np.cumsum(dists >= 0, axis=0).argmax(axis=0), None, log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def _karras(sigma_max: float, sigma_min: float, num_steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) sigmas, descending from sigma_max to sigma_min."""
    ramp = np.linspace(0, 1, num_steps)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _train_sigmas(acp: np.ndarray) -> np.ndarray:
    return np.sqrt((np.float32(1) - acp) / acp).astype(np.float32)


def _final_sigma(config: SchedulerConfig, acp: np.ndarray) -> float:
    return float(_train_sigmas(acp)[0]) if config.final_sigmas_type == "sigma_min" else 0.0


def _euler_schedule(config: SchedulerConfig, num_steps: int, acp: np.ndarray) -> dict[str, Any]:
    train_sigmas = _train_sigmas(acp)
    timesteps = _spaced_timesteps(config, num_steps).astype(np.float32)
    sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
    if config.use_karras_sigmas:
        sigmas = _karras(float(sigmas[0]), float(sigmas[-1]), num_steps)
        timesteps = _sigma_to_t(sigmas, np.log(train_sigmas)).astype(np.float32)
    sigmas = np.concatenate([sigmas, [_final_sigma(config, acp)]]).astype(np.float32)
    max_sigma = float(sigmas.max())
    init = max_sigma if config.timestep_spacing in ("linspace", "trailing") else (max_sigma**2 + 1) ** 0.5
    return {"timesteps": timesteps, "sigmas": sigmas, "init_noise_sigma": init, "coeffs": {}}


def _ddim_schedule(config: SchedulerConfig, num_steps: int, acp: np.ndarray) -> dict[str, Any]:
    n_train = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        timesteps = np.linspace(0, n_train - 1, num_steps).round()[::-1].astype(np.int64)
    else:
        timesteps = _spaced_timesteps(config, num_steps).astype(np.int64)
    prev = timesteps - n_train // num_steps  # diffusers' DDIM steps by a fixed stride whatever the spacing
    final = np.float32(1.0) if config.set_alpha_to_one else acp[0]
    a_t = acp[timesteps]
    a_prev = np.where(prev >= 0, acp[np.clip(prev, 0, None)], final).astype(np.float32)
    variance = (1 - a_prev.astype(np.float64)) / (1 - a_t) * (1 - a_t / a_prev.astype(np.float64))
    std = (config.eta * np.sqrt(variance)).astype(np.float32)
    sig = lambda a: np.sqrt((1 - a.astype(np.float64)) / a)
    sigmas = np.concatenate([sig(a_t), sig(a_prev[-1:])]).astype(np.float32)
    coeffs = {"alpha_prod_t": a_t, "alpha_prod_prev": a_prev, "std_dev": std}
    return {"timesteps": timesteps.astype(np.float32), "sigmas": sigmas, "init_noise_sigma": 1.0, "coeffs": coeffs}


def _dpm_timesteps_and_sigmas(config: SchedulerConfig, num_steps: int, acp: np.ndarray) -> tuple[np.ndarray, ...]:
    n_train = config.num_train_timesteps
    lambdas = (np.log(np.sqrt(acp)) - np.log(np.sqrt(np.float32(1) - acp))).astype(np.float32)
    clipped = int(np.searchsorted(lambdas[::-1], config.lambda_min_clipped, side="left"))
    last = n_train - clipped
    if config.timestep_spacing == "linspace":
        timesteps = np.linspace(0, last - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
    elif config.timestep_spacing == "leading":
        ratio = last // (num_steps + 1)
        timesteps = (np.arange(num_steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + config.steps_offset
    else:
        timesteps = np.arange(last, 0, -n_train / num_steps).round().astype(np.int64) - 1
    train_sigmas = _train_sigmas(acp)
    if config.use_karras_sigmas:
        sigmas = _karras(float(train_sigmas[-1]), float(train_sigmas[0]), num_steps)
        timesteps = _sigma_to_t(sigmas, np.log(train_sigmas)).round().astype(np.int64)
    else:
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
    sigmas = np.concatenate([sigmas, [_final_sigma(config, acp)]]).astype(np.float32)
    return timesteps, sigmas


def _dpm_schedule(config: SchedulerConfig, num_steps: int, acp: np.ndarray) -> dict[str, Any]:
    timesteps, sigmas = _dpm_timesteps_and_sigmas(config, num_steps, acp)
    s = len(timesteps)
    sig = sigmas.astype(np.float64)
    alpha = 1 / np.sqrt(sig**2 + 1)
    sigma = sig * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)  # +inf at sigma = 0
    c_sample, c_d0, c_d1 = np.zeros(s), np.zeros(s), np.zeros(s)
    for i in range(s):
        h = lam[i + 1] - lam[i]
        em1 = np.expm1(-h)  # exp(-h) - 1; -1 at h = inf
        c_sample[i] = sigma[i + 1] / sigma[i]
        c_d0[i] = -alpha[i + 1] * em1
        final_first_order = i == s - 1 and (
            config.euler_at_final or (config.lower_order_final and s < 15) or config.final_sigmas_type == "zero"
        )
        if config.solver_order == 2 and i >= 1 and not final_first_order and h != 0:
            # (h = 0, e.g. a repeated final sigma_min, makes the step the identity: c_d1 = 0.)
            r0 = (lam[i] - lam[i - 1]) / h
            if config.solver_type == "midpoint":
                c_d1[i] = -0.5 * alpha[i + 1] * em1 / r0
            else:  # heun
                c_d1[i] = alpha[i + 1] * (em1 / h + 1.0) / r0
    coeffs = {
        "alpha": alpha[:-1],
        "sigma": sigma[:-1],
        "c_sample": c_sample,
        "c_d0": c_d0,
        "c_d1": c_d1,
    }
    coeffs = {k: v.astype(np.float32) for k, v in coeffs.items()}
    return {"timesteps": timesteps.astype(np.float32), "sigmas": sigmas, "init_noise_sigma": 1.0, "coeffs": coeffs}


_BUILDERS = {"euler": _euler_schedule, "ddim": _ddim_schedule, "dpmsolver++": _dpm_schedule}


def make_schedule(config: SchedulerConfig, num_steps: int) -> Schedule:
    """Host-side precomputation for a static number of steps (diffusers' `set_timesteps(num_steps)`)."""
    if not 1 <= num_steps <= config.num_train_timesteps:
        raise ValueError(f"num_steps={num_steps} must be in [1, {config.num_train_timesteps}]")
    acp = training_alphas_cumprod(config)
    parts = _BUILDERS[config.kind](config, num_steps, acp)
    stochastic = config.kind == "ddim" and config.eta > 0
    clip = config.clip_sample_range if (config.kind == "ddim" and config.clip_sample) else None
    return Schedule(
        timesteps=jnp.asarray(parts["timesteps"], jnp.float32),
        sigmas=jnp.asarray(parts["sigmas"], jnp.float32),
        init_noise_sigma=jnp.asarray(parts["init_noise_sigma"], jnp.float32),
        alphas_cumprod=jnp.asarray(acp, jnp.float32),
        coeffs={k: jnp.asarray(v, jnp.float32) for k, v in parts["coeffs"].items()},
        kind=config.kind,
        prediction_type=config.prediction_type,
        clip_sample_range=clip,
        stochastic=stochastic,
    )


# ----------------------------------------------------------------------------------------------------------
# In-loop functions (pure jnp; `i` may be traced)
# ----------------------------------------------------------------------------------------------------------


def init_noise_sigma(schedule: Schedule) -> Array:
    """() float32: scale of the initial latent noise (latents = noise * init_noise_sigma)."""
    return schedule.init_noise_sigma


def init_state(schedule: Schedule, sample: Array) -> SolverState:
    """The solver state before step 0 (DPM-Solver: a zero previous x0, unused by its first-order first step)."""
    if schedule.kind == "dpmsolver++":
        return SolverState(prev_x0=jnp.zeros(sample.shape, jnp.float32))
    return SolverState(prev_x0=None)


def scale_model_input(schedule: Schedule, sample: Array, i: Array | int) -> Array:
    """The UNet input at step i: Euler divides by sqrt(sigma_i^2 + 1); DDIM / DPM return `sample` unchanged."""
    if schedule.kind != "euler":
        return sample
    sigma = schedule.sigmas[i]
    return (sample.astype(jnp.float32) / jnp.sqrt(sigma**2 + 1)).astype(sample.dtype)


def step(
    schedule: Schedule,
    state: SolverState,
    i: Array | int,
    model_output: Array,
    sample: Array,
    noise: Array | None = None,
) -> tuple[Array, SolverState]:
    """One denoising step i -> i+1: returns (prev_sample in `sample`'s dtype, new state).

    model_output: the (guided) UNet output for `scale_model_input(schedule, sample, i)` at
    `schedule.timesteps[i]`, interpreted per `prediction_type`. `noise` (sample shape) is needed only for
    DDIM with eta > 0.
    """
    x = sample.astype(jnp.float32)
    out = model_output.astype(jnp.float32)
    if schedule.kind == "euler":
        prev, state = _euler_step(schedule, state, i, out, x)
    elif schedule.kind == "ddim":
        prev, state = _ddim_step(schedule, state, i, out, x, noise)
    else:
        prev, state = _dpm_step(schedule, state, i, out, x)
    return prev.astype(sample.dtype), state


def _euler_step(
    schedule: Schedule, state: SolverState, i: Array | int, out: Array, x: Array
) -> tuple[Array, SolverState]:
    sigma, sigma_next = schedule.sigmas[i], schedule.sigmas[i + 1]
    if schedule.prediction_type == "epsilon":
        x0 = x - sigma * out
    else:  # v_prediction: x0 = c_skip * x + c_out * v
        x0 = out * (-sigma / jnp.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
    derivative = (x - x0) / sigma
    return x + derivative * (sigma_next - sigma), state


def _ddim_step(
    schedule: Schedule, state: SolverState, i: Array | int, out: Array, x: Array, noise: Array | None
) -> tuple[Array, SolverState]:
    c = schedule.coeffs
    a_t, a_prev, std = c["alpha_prod_t"][i], c["alpha_prod_prev"][i], c["std_dev"][i]
    b_t = 1 - a_t
    if schedule.prediction_type == "epsilon":
        x0 = (x - jnp.sqrt(b_t) * out) / jnp.sqrt(a_t)
        eps = out
    else:  # v_prediction
        x0 = jnp.sqrt(a_t) * x - jnp.sqrt(b_t) * out
        eps = jnp.sqrt(a_t) * out + jnp.sqrt(b_t) * x
    if schedule.clip_sample_range is not None:
        # As diffusers' default (use_clipped_model_output=False), eps stays the unclipped one.
        x0 = jnp.clip(x0, -schedule.clip_sample_range, schedule.clip_sample_range)
    prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev - std**2) * eps
    if schedule.stochastic:
        if noise is None:
            raise ValueError("DDIM with eta > 0 needs `noise`")
        prev = prev + std * noise.astype(jnp.float32)
    return prev, state


def _dpm_step(
    schedule: Schedule, state: SolverState, i: Array | int, out: Array, x: Array
) -> tuple[Array, SolverState]:
    c = schedule.coeffs
    alpha, sigma = c["alpha"][i], c["sigma"][i]
    if schedule.prediction_type == "epsilon":
        x0 = (x - sigma * out) / alpha
    else:  # v_prediction
        x0 = alpha * x - sigma * out
    # x_{i+1} = c_sample x + c_d0 D0 + c_d1 (D0 - D_prev); c_d1 = 0 on first-order steps.
    prev = c["c_sample"][i] * x + c["c_d0"][i] * x0 + c["c_d1"][i] * (x0 - state.prev_x0)
    return prev, SolverState(prev_x0=x0)


# ----------------------------------------------------------------------------------------------------------
# Training helpers (DDPM forward process)
# ----------------------------------------------------------------------------------------------------------


def _alpha_bar(source: Schedule | SchedulerConfig, t: Array, ndim: int) -> Array:
    acp = source.alphas_cumprod if isinstance(source, Schedule) else jnp.asarray(training_alphas_cumprod(source))
    a = acp[jnp.asarray(t, jnp.int32)]
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def add_noise(source: Schedule | SchedulerConfig, x0: Array, noise: Array, t: Array) -> Array:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (diffusers' DDPM/DDIM `add_noise`).

    t: integer training timesteps, () or (B,) broadcast over x0's trailing axes. Returns x0's dtype.
    """
    a = _alpha_bar(source, t, x0.ndim)
    xt = jnp.sqrt(a) * x0.astype(jnp.float32) + jnp.sqrt(1 - a) * noise.astype(jnp.float32)
    return xt.astype(x0.dtype)


def get_velocity(source: Schedule | SchedulerConfig, x0: Array, noise: Array, t: Array) -> Array:
    """v-prediction target v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0 (t as in `add_noise`)."""
    a = _alpha_bar(source, t, x0.ndim)
    v = jnp.sqrt(a) * noise.astype(jnp.float32) - jnp.sqrt(1 - a) * x0.astype(jnp.float32)
    return v.astype(x0.dtype)
