"""Schedulers against diffusers: timesteps / sigmas, and whole trajectories on fixed random model outputs."""

import dataclasses
import math

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from personacraft_jax.sampling import schedulers as S

_CLASSES = {
    "euler": diffusers.EulerDiscreteScheduler,
    "ddim": diffusers.DDIMScheduler,
    "dpmsolver++": diffusers.DPMSolverMultistepScheduler,
}
_TOL = 1e-5


def _diffusers(kind: str, **overrides):
    cfg = {**S.SDXL_SCHEDULER_CONFIG, **overrides}
    return _CLASSES[kind].from_config(cfg), S.SchedulerConfig.from_diffusers(cfg, kind=kind)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ------------------------------------------------------------------ timesteps and sigmas


@pytest.mark.parametrize("kind", list(_CLASSES))
@pytest.mark.parametrize(
    "overrides",
    [{}, {"timestep_spacing": "trailing"}, {"timestep_spacing": "linspace", "steps_offset": 0}],
    ids=["sdxl", "trailing", "linspace"],
)
@pytest.mark.parametrize("n", [1, 7, 25, 30, 50])
def test_timesteps_and_sigmas_match(kind, overrides, n):
    ref, cfg = _diffusers(kind, **overrides)
    ref.set_timesteps(n)
    sched = S.make_schedule(cfg, n)
    np.testing.assert_array_equal(np.asarray(sched.timesteps), ref.timesteps.numpy().astype(np.float32))
    if kind != "ddim":
        assert _rel(sched.sigmas, ref.sigmas.numpy()) <= 1e-6
        assert sched.sigmas.shape == (len(ref.timesteps) + 1,)
    assert abs(float(S.init_noise_sigma(sched)) - float(ref.init_noise_sigma)) <= 1e-6 * float(ref.init_noise_sigma)


@pytest.mark.parametrize("kind", ["euler", "dpmsolver++"])
@pytest.mark.parametrize("n", [10, 30])
def test_karras_sigmas_match(kind, n):
    ref, cfg = _diffusers(kind, use_karras_sigmas=True, final_sigmas_type="sigma_min")
    ref.set_timesteps(n)
    sched = S.make_schedule(cfg, n)
    np.testing.assert_allclose(np.asarray(sched.timesteps), ref.timesteps.numpy().astype(np.float32), atol=1e-4)
    assert _rel(sched.sigmas, ref.sigmas.numpy()) <= 1e-6


def test_dpm_lambda_min_clipped_matches():
    ref, cfg = _diffusers("dpmsolver++", lambda_min_clipped=-5.1, timestep_spacing="linspace")
    ref.set_timesteps(20)
    np.testing.assert_array_equal(np.asarray(S.make_schedule(cfg, 20).timesteps), ref.timesteps.numpy())


# ------------------------------------------------------------------ trajectories


@jax.jit
def _run(schedule: S.Schedule, x_init, outputs, noises):
    """The loop a sampler runs: scale the input, step with the given model output; records every step."""
    x = x_init * S.init_noise_sigma(schedule)

    def body(carry, k):
        x, state = carry
        model_in = S.scale_model_input(schedule, x, k)
        x, state = S.step(schedule, state, k, outputs[k], x, noises[k] if schedule.stochastic else None)
        return (x, state), (model_in, x)

    steps = jnp.arange(schedule.num_steps)
    _, (inputs, samples) = jax.lax.scan(body, (x, S.init_state(schedule, x)), steps)
    return inputs, samples


_TRAJECTORIES = [
    ("euler", 30, {}, 0.0),
    ("euler", 10, {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 0.0),
    ("euler", 12, {"use_karras_sigmas": True, "timestep_spacing": "linspace"}, 0.0),
    ("ddim", 30, {}, 0.0),
    ("ddim", 10, {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 0.0),
    ("ddim", 8, {"clip_sample": True}, 0.7),
    ("dpmsolver++", 30, {}, 0.0),
    ("dpmsolver++", 10, {"prediction_type": "v_prediction"}, 0.0),
    ("dpmsolver++", 6, {"solver_order": 1, "timestep_spacing": "trailing"}, 0.0),
    ("dpmsolver++", 20, {"final_sigmas_type": "sigma_min", "solver_type": "heun"}, 0.0),  # 2nd order at the end
    ("dpmsolver++", 16, {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}, 0.0),  # final h = 0
    ("dpmsolver++", 31, {"timestep_spacing": "trailing", "lambda_min_clipped": -2.0}, 0.0),  # 28 steps for 31
]


@pytest.mark.parametrize("kind,n,overrides,eta", _TRAJECTORIES)
def test_trajectory_matches_diffusers(kind, n, overrides, eta):
    ref, cfg = _diffusers(kind, **overrides)
    cfg = dataclasses.replace(cfg, eta=eta)
    ref.set_timesteps(n)
    sched = S.make_schedule(cfg, n)
    rng = np.random.default_rng(n)
    shape = (2, 8, 8, 4)
    x_init = rng.standard_normal(shape).astype(np.float32)
    outputs = rng.standard_normal((n, *shape)).astype(np.float32)
    noises = rng.standard_normal((n, *shape)).astype(np.float32)

    inputs, samples = jax.device_get(_run(sched, x_init, outputs, noises))

    x = torch.from_numpy(x_init) * ref.init_noise_sigma
    worst = 0.0
    for k, t in enumerate(ref.timesteps):
        model_in = ref.scale_model_input(x, t)
        kwargs = {"eta": eta, "variance_noise": torch.from_numpy(noises[k])} if kind == "ddim" else {}
        x = ref.step(torch.from_numpy(outputs[k]), t, x, return_dict=False, **kwargs)[0]
        assert _rel(inputs[k], model_in.numpy()) <= _TOL, f"model input, step {k}"
        err = _rel(samples[k], x.numpy())
        assert err <= _TOL, f"step {k}: relative error {err:.2e}"
        worst = max(worst, err)
    print(f"{kind} n={n} {overrides} eta={eta}: max relative error {worst:.2e}")


@pytest.mark.parametrize("kind", list(_CLASSES))
def test_step_keeps_sample_dtype(kind):
    sched = S.make_schedule(S.SchedulerConfig.sdxl(kind), 4)
    x = jnp.ones((1, 2, 2, 4), jnp.bfloat16)
    state = S.init_state(sched, x)
    assert S.scale_model_input(sched, x, 0).dtype == jnp.bfloat16
    prev, state = S.step(sched, state, 0, jnp.zeros((1, 2, 2, 4), jnp.float32), x)
    assert prev.dtype == jnp.bfloat16 and prev.shape == x.shape
    assert (state.prev_x0 is None) == (kind != "dpmsolver++")


# ------------------------------------------------------------------ training helpers


def test_add_noise_and_velocity_match_ddpm():
    ref = diffusers.DDPMScheduler.from_config(S.SDXL_SCHEDULER_CONFIG)
    cfg = S.SchedulerConfig.sdxl()
    rng = np.random.default_rng(0)
    x0, noise = (rng.standard_normal((3, 4, 4, 2)).astype(np.float32) for _ in range(2))
    t = np.array([0, 517, 999])
    want_xt = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    want_v = ref.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    sched = S.make_schedule(cfg, 4)
    for source in (cfg, sched):
        assert _rel(S.add_noise(source, x0, noise, t), want_xt) <= 1e-6
        assert _rel(S.get_velocity(source, x0, noise, t), want_v) <= 1e-6
    np.testing.assert_allclose(S.training_alphas_cumprod(cfg), ref.alphas_cumprod.numpy(), rtol=1e-6)


# ------------------------------------------------------------------ config


def test_sdxl_config_defaults():
    cfg = S.SchedulerConfig.sdxl()
    assert cfg == S.SchedulerConfig()
    ddim = S.SchedulerConfig.sdxl("ddim")
    assert (ddim.kind, ddim.clip_sample, ddim.set_alpha_to_one, ddim.timestep_spacing) == (
        "ddim",
        False,
        False,
        "leading",
    )


def test_from_diffusers_class_defaults_and_round_trip():
    # Keys missing from the json take the diffusers class defaults (here Euler's linspace spacing).
    cfg = S.SchedulerConfig.from_diffusers({"_class_name": "EulerDiscreteScheduler"})
    assert (cfg.timestep_spacing, cfg.steps_offset, cfg.beta_schedule) == ("linspace", 0, "linear")
    # A full saved config (every __init__ argument) of each class loads.
    for kind, cls in _CLASSES.items():
        saved = dict(cls.from_config(S.SDXL_SCHEDULER_CONFIG).config)
        assert S.SchedulerConfig.from_diffusers(saved).kind == kind
    assert S.SchedulerConfig.from_diffusers({**saved, "lambda_min_clipped": None}).lambda_min_clipped == -math.inf


@pytest.mark.parametrize(
    "bad,key",
    [
        ({"beta_schedule": "squaredcos_cap_v2"}, "beta_schedule"),
        ({"prediction_type": "sample"}, "prediction_type"),
        ({"thresholding": True}, "thresholding"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
        ({"algorithm_type": "sde-dpmsolver++"}, "algorithm_type"),
        ({"interpolation_type": "log_linear"}, "interpolation_type"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"_class_name": "PNDMScheduler"}, "_class_name"),
    ],
)
def test_from_diffusers_is_strict(bad, key):
    with pytest.raises(ValueError, match=key):
        S.SchedulerConfig.from_diffusers(
            {**S.SDXL_SCHEDULER_CONFIG, "_class_name": "DPMSolverMultistepScheduler", **bad}
        )
