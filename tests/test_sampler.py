# ruff: noqa: F811  (the fixture imported from tests.fixtures_body is used as an argument)
"""The jit-compiled sampler: whole-loop parity with diffusers' SDXL multi-ControlNet pipeline (OA-CFG and
identity off), OA-CFG wiring on one step, and the identity branch's region masking."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from personacraft_jax.convert.pretrained import load_pretrained
from personacraft_jax.models.clip import CLIPTextModel, CLIPTextModelWithProjection
from personacraft_jax.models.controlnet import ControlNetModel
from personacraft_jax.models.unet import UNet2DConditionModel
from personacraft_jax.models.vae import AutoencoderKL
from personacraft_jax.parallel.mesh import make_mesh
from personacraft_jax.sampling import guidance as G
from personacraft_jax.sampling import schedulers as S
from personacraft_jax.sampling.sampler import Sampler, SamplerInputs, SamplerModels, SamplerSettings, Scales
from personacraft_jax.sampling.schedulers import SDXL_SCHEDULER_CONFIG, SchedulerConfig
from personacraft_jax.sampling.tokenizers import PromptTokenizer
from tests.fixtures_body import standin_model_root  # noqa: F401 (fixture)
from tests.fixtures_faces import face_model_root  # noqa: F401 (fixture)
from tests.sampler_fixtures import write_tiny_pipeline
from tests.tiny_diffusers import nchw, nhwc, rel_err

SIZE, LATENT, STEPS = 64, 8, 3
PROMPT, NEGATIVE = "the people", "blurry"
GUIDANCE, SCNET_SCALE, OBEN_SCALE = 5.0, 0.7, 0.5
TOL = 1e-3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(torch modules, our SamplerModels, tokenizer, conditioning arrays) on the same random weights."""
    root = tmp_path_factory.mktemp("tiny_pipeline")
    ref = write_tiny_pipeline(root)
    ours = SamplerModels(
        text_encoder=load_pretrained(CLIPTextModel, root / "text_encoder"),
        text_encoder_2=load_pretrained(CLIPTextModelWithProjection, root / "text_encoder_2"),
        unet=load_pretrained(UNet2DConditionModel, root / "unet"),
        vae=load_pretrained(AutoencoderKL, root / "vae"),
        scnet=load_pretrained(ControlNetModel, root / "scnet"),
        oben=load_pretrained(ControlNetModel, root / "oben"),
    )
    rng = np.random.default_rng(0)
    cond = dict(
        noise=rng.standard_normal((1, LATENT, LATENT, 4)).astype(np.float32),
        scnet=rng.uniform(size=(1, SIZE, SIZE, 4)).astype(np.float32),
        oben=(rng.uniform(size=(1, SIZE, SIZE, 2)) > 0.8).astype(np.float32),
    )
    return ref, ours, PromptTokenizer.from_sdxl_folder(root), cond


def _inputs(tok: PromptTokenizer, cond: dict, negative: str | None, mask=None) -> SamplerInputs:
    ids1, ids2 = tok.tokenize([PROMPT])
    neg = tok.tokenize([negative]) if negative is not None else (None, None)
    return SamplerInputs(
        noise=cond["noise"],
        prompt_ids=ids1,
        prompt_ids_2=ids2,
        negative_ids=neg[0],
        negative_ids_2=neg[1],
        time_ids=np.array([[SIZE, SIZE, 0, 0, SIZE, SIZE]], np.float32),
        scales=Scales.create(guidance=GUIDANCE, occlusion=2.0, scnet=SCNET_SCALE, oben=OBEN_SCALE),
        scnet_cond=cond["scnet"],
        oben_cond=cond["oben"],
        occlusion_mask=mask,
    )


# (diffusers scheduler class, scheduler config, steps asked). DPM-Solver++ with trailing spacing and a clipping
# lambda_min_clipped gives a schedule of 6 steps for 7 asked (diffusers too): the loop must run those 6.
_PIPELINE_SCHEDULERS = {
    "euler": (diffusers.EulerDiscreteScheduler, SDXL_SCHEDULER_CONFIG, STEPS),
    "dpm_trailing_clipped": (
        diffusers.DPMSolverMultistepScheduler,
        {**SDXL_SCHEDULER_CONFIG, "_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "trailing",
         "lambda_min_clipped": -1.8},
        7,
    ),
}  # fmt: skip


def _diffusers_latents(ref: dict, cond: dict, scheduler: str = "euler") -> np.ndarray:
    scheduler_class, scheduler_config, steps = _PIPELINE_SCHEDULERS[scheduler]
    pipe = diffusers.StableDiffusionXLControlNetPipeline(
        vae=ref["vae"],
        text_encoder=ref["text_encoder"],
        text_encoder_2=ref["text_encoder_2"],
        tokenizer=ref["tokenizer"],
        tokenizer_2=ref["tokenizer_2"],
        unet=ref["unet"],
        controlnet=[ref["scnet"], ref["oben"]],
        scheduler=scheduler_class.from_config(scheduler_config),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            image=[nchw(cond["scnet"]), nchw(cond["oben"])],
            height=SIZE,
            width=SIZE,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            controlnet_conditioning_scale=[SCNET_SCALE, OBEN_SCALE],
            latents=nchw(cond["noise"]),
            output_type="latent",
        ).images
    return nhwc(out)


@pytest.mark.parametrize("scheduler", sorted(_PIPELINE_SCHEDULERS))
def test_whole_loop_matches_diffusers_controlnet_pipeline(tiny, scheduler):
    ref, ours, tok, cond = tiny
    scheduler_class, scheduler_config, steps = _PIPELINE_SCHEDULERS[scheduler]
    config = SchedulerConfig.from_diffusers(scheduler_config)
    settings = SamplerSettings(num_steps=steps, scheduler=config, oa_mode="none")
    seen = []
    sampler = Sampler(ours, settings, mesh=make_mesh({"data": 1}, jax.devices()[:1]), on_step=seen.append)
    latents, images = sampler(_inputs(tok, cond, NEGATIVE))
    jax.effects_barrier()
    expected = _diffusers_latents(ref, cond, scheduler)
    err = rel_err(latents, expected)
    print(f"sampler ({scheduler}, {sampler.schedule.num_steps} of {steps} steps) vs diffusers: rel err {err:.2e}")
    assert err <= TOL
    reference = scheduler_class.from_config(scheduler_config)
    reference.set_timesteps(steps)
    assert sampler.num_steps == len(reference.timesteps) < steps + (scheduler == "euler")
    assert seen == list(range(sampler.num_steps))  # the progress callback: once per step run
    vae = ref["vae"]
    with torch.no_grad():
        decoded = vae.decode(nchw(expected) / vae.config.scaling_factor).sample
    expected_images = nhwc((decoded / 2 + 0.5).clamp(0, 1))
    img_err = rel_err(images, expected_images)
    print(f"sampler vs diffusers: images rel err {img_err:.2e}")
    assert images.shape == (1, SIZE, SIZE, 3) and img_err <= TOL


def test_short_schedule_sets_the_loop_and_the_oa_cfg_steps(monkeypatch):
    """A schedule shorter than asked (DPM-Solver++, trailing, clipping lambda_min_clipped: 28 of 31): `generate`
    runs its 28 steps with OA-CFG on the first ceil(0.5 * 28) = 14, against diffusers' scheduler stepping the
    same stand-in guided model (eps linear in the sample, one coefficient pair per CFG branch)."""
    from personacraft_jax.sampling import sampler as sampler_lib

    config = {**SDXL_SCHEDULER_CONFIG, "timestep_spacing": "trailing", "lambda_min_clipped": -2.0}
    asked, fraction, w, w_occ = 31, 0.5, 3.0, 2.0
    slope, offset = np.array([0.05, 0.1, 0.08]), np.array([0.3, -0.2, 0.6])  # uncond, cond, cond without control

    def branch_eps(sample, t, k):
        return slope[k] * sample + offset[k] * np.cos(t / 300.0)

    def model_output(m, prep, scales, sample, t):
        k = jnp.repeat(jnp.arange(3), sample.shape[0] // 3)[:, None, None, None]
        return jnp.asarray(slope, jnp.float32)[k] * sample + jnp.asarray(offset, jnp.float32)[k] * jnp.cos(t / 300.0)

    class Decoder:
        latents_from_model = staticmethod(lambda z: z)
        decode = staticmethod(lambda z: z[..., :3])

    monkeypatch.setattr(sampler_lib, "prepare", lambda m, x, mode: None)
    monkeypatch.setattr(sampler_lib, "model_output", model_output)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)
    mask = (rng.uniform(size=(1, 4, 4, 1)) > 0.5).astype(np.float32)
    ids = np.zeros((1, 77), np.int32)
    x = SamplerInputs(noise=noise, prompt_ids=ids, prompt_ids_2=ids, time_ids=np.zeros((1, 6), np.float32),
                      scales=Scales.create(guidance=w, occlusion=w_occ), occlusion_mask=mask)  # fmt: skip
    settings = SamplerSettings(num_steps=asked, scheduler=SchedulerConfig.from_diffusers(config, kind="dpmsolver++"),
                               oa_mode="control", oa_fraction=fraction)  # fmt: skip
    schedule = S.make_schedule(settings.scheduler, asked)
    seen = []
    latents, _ = sampler_lib.generate({"vae": Decoder()}, settings, schedule, x, on_step=seen.append)
    jax.effects_barrier()

    reference = diffusers.DPMSolverMultistepScheduler.from_config(config)
    reference.set_timesteps(asked)
    assert len(reference.timesteps) == schedule.num_steps < asked
    expected = torch.from_numpy(noise.astype(np.float64)) * reference.init_noise_sigma
    active_steps = math.ceil(fraction * len(reference.timesteps))
    for i, t in enumerate(reference.timesteps):
        sample, tf = expected.numpy(), float(t)
        eps_u, eps_c, eps_n = (branch_eps(sample, tf, k) for k in range(3))
        eps = eps_u + w * (eps_c - eps_u) + (i < active_steps) * w_occ * mask * (eps_c - eps_n)
        expected = reference.step(torch.from_numpy(eps), t, expected, return_dict=False)[0]
    err = rel_err(latents, expected.numpy())
    print(f"{schedule.num_steps} of {asked} steps, OA-CFG on {active_steps}: rel err {err:.2e}")
    assert err <= 1e-5
    assert seen == list(range(schedule.num_steps))


@pytest.mark.parametrize("preset", ["tiny", "sdxl"])
def test_size_multiple_is_derived_from_the_models(preset):
    """VAE factor x 2 ** (UNet downsamplers), against diffusers' own counts (vae_scale_factor, num_upsamplers)."""
    import types

    from personacraft_jax.models import unet as unet_lib
    from personacraft_jax.models import vae as vae_lib
    from personacraft_jax.models.unet import UNetConfig
    from personacraft_jax.models.vae import AutoencoderKLConfig

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**unet_lib.preset(preset))
        vae = diffusers.AutoencoderKL(**vae_lib.preset(preset))
    ours = SamplerModels(
        text_encoder=None, text_encoder_2=None,
        unet=types.SimpleNamespace(config=UNetConfig.from_diffusers(dict(unet.config))),
        vae=types.SimpleNamespace(config=AutoencoderKLConfig.from_dict(dict(vae.config))),
    )  # fmt: skip
    vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)  # as diffusers' SDXL pipelines compute it
    assert ours.latent_factor == vae_scale_factor
    assert ours.size_multiple == vae_scale_factor * 2**unet.num_upsamplers


def test_scene_sizes_are_refused_before_rendering(tmp_path, standin_model_root, monkeypatch):
    """Sizes the models cannot take, or whose conditioning cannot fit in memory, fail up front with the field."""
    from configs import sample_tiny
    from data_prep import render
    from personacraft_jax.sampling.sample_job import prepare_job
    from personacraft_jax.sampling.scene_file import SceneFileError

    person = {"name": "a", "betas": [0.0] * 10, "transl": [0.0, -0.5, 3.0], "face": None}
    cfg = sample_tiny.get_config()
    cfg.cache_dir, cfg.smplx_model_root = str(tmp_path / "cache"), str(standin_model_root)
    cases = {
        (100_000, 100_000): r"width, height: 100000 x 100000 is too large: .* GiB, more than the host's",
        (72, 64): r"width: 72 is not a multiple of 16 \(the models' size multiple",  # 8 x the tiny UNet's one
    }
    monkeypatch.setattr(render.SceneRenderer, "__init__", lambda *a, **k: pytest.fail("rendering started"))
    for (width, height), message in cases.items():
        path = tmp_path / f"scene_{width}.json"
        path.write_text(json.dumps({"prompt": "p", "width": width, "height": height, "people": [person]}))
        with pytest.raises(SceneFileError, match=message):
            prepare_job(cfg, path)


def test_oa_cfg_step_zero_mask_is_cfg_and_mask_acts_only_inside(tiny):
    """One step, mode "control": zero mask == standard CFG bit for bit; a mask changes only the pixels inside it."""
    _, ours, tok, cond = tiny
    settings = SamplerSettings(num_steps=STEPS, scheduler=SchedulerConfig.sdxl("euler"), oa_mode="control")
    sampler = Sampler(ours, settings)
    zero = np.zeros((1, LATENT, LATENT, 1), np.float32)
    mask = zero.copy()
    mask[:, 2:5, 3:7] = 1.0
    mask[:, 6, 0] = 0.5
    latents0, step_zero, raw = sampler.first_step(_inputs(tok, cond, None, zero))
    _, step_mask, raw_mask = sampler.first_step(_inputs(tok, cond, None, mask))
    off = _inputs(tok, cond, None, mask)
    _, step_off, _ = sampler.first_step(off.replace(scales=off.scales.replace(occlusion=jnp.float32(0.0))))
    assert raw.shape == (3, LATENT, LATENT, 4) and jnp.array_equal(raw, raw_mask)
    # Same executable: OA-CFG off (zero mask, or w_occ = 0) selects the standard-CFG value bit for bit.
    assert jnp.array_equal(step_zero, step_off)

    @jax.jit
    def cfg_step(raw, latents):
        eps_u, eps_c, _ = G.split_branches(raw, "control")
        state = S.init_state(sampler.schedule, latents)
        return S.step(sampler.schedule, state, 0, G.cfg(eps_u, eps_c, GUIDANCE), latents)[0]

    # ... and that value is eps_u + w (eps_c - eps_u) (a separate program: XLA may contract FMAs differently).
    err = rel_err(step_zero, cfg_step(raw, latents0))
    print(f"zero-mask step vs separately compiled CFG step: rel err {err:.1e}")
    assert err <= 1e-6
    inside = np.broadcast_to(mask > 0, step_mask.shape)
    assert np.array_equal(np.asarray(step_mask)[~inside], np.asarray(step_zero)[~inside])
    assert np.all(np.asarray(step_mask)[inside] != np.asarray(step_zero)[inside])


def test_launch_sample_help():
    result = subprocess.run(
        [sys.executable, "-m", "launch.sample", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--scene" in result.stdout and "--out" in result.stdout


def test_launch_sample_tiny_end_to_end(tmp_path, standin_model_root, face_model_root, capfd, monkeypatch):
    """1 scene, 2 people (a: face embedding file, b: face photo), 2 steps, 64x64, 2 seeds (batch sharded over 2
    of the 8 test devices), random tiny networks: every output is written, with per-step progress."""
    from configs import sample_tiny
    from data_prep import faces, testing_face_models
    from personacraft_jax.sampling import sample_job
    from personacraft_jax.sampling.sample_job import run_sample

    steps_seen = []
    on_step = sample_job.StepProgress.__call__
    monkeypatch.setattr(sample_job.StepProgress, "__call__", lambda self, i: (steps_seen.append(i), on_step(self, i)))

    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", (20 * rng.standard_normal(512)).astype(np.float32))
    photo = np.zeros((640, 640, 3), np.uint8)  # the stand-in detector's face: a bright 32 px cell (x 160, y 320)
    photo[320:352, 160:192] = 230
    Image.fromarray(photo).save(tmp_path / "b.png")
    scene = {
        "prompt": "two people", "width": 64, "height": 64, "steps": 2, "seeds": [7, 8],
        "oa_cfg": {"mode": "control", "fraction": 0.5},
        "people": [
            {"name": "a", "betas": [0.0] * 10, "transl": [-0.3, -0.55, 3.0], "face": {"embedding": "a.npy"}},
            {"name": "b", "betas": [1.0] + [0.0] * 9, "transl": [0.25, -0.5, 3.6], "face": {"image": "b.png"},
             "shape": {"reference": "a", "gamma": 0.5}},
        ],
    }  # fmt: skip
    (tmp_path / "scene.json").write_text(json.dumps(scene))
    cfg = sample_tiny.get_config()
    cfg.cache_dir = str(tmp_path / "cache")
    cfg.smplx_model_root = str(standin_model_root)
    cfg.face_model_root = str(face_model_root)
    result = run_sample(cfg, tmp_path / "scene.json", tmp_path / "out")
    assert steps_seen == [0, 1]  # once per step of the compiled loop, in order
    err = capfd.readouterr().err
    assert "[sample] denoising: 100%" in err and "2/2" in err, err[-2000:]
    out = tmp_path / "out"
    assert result["images"] == ["image_seed7.png", "image_seed8.png"]  # batch 2: sharded over 2 devices
    for name in result["conditioning"]:
        assert (out / name).is_file(), name
    assert {"conditioning/face_kps_a.png", "conditioning/region_b_latent.png"} <= set(result["conditioning"])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["identity"] and settings["face_valid"] == [1.0, 1.0] and settings["mesh_devices"] == 2
    assert settings["scene"]["people"][1]["betas"][0] == pytest.approx(0.5)
    images = [np.asarray(Image.open(out / name)) for name in result["images"]]
    assert images[0].shape == (64, 64, 3) and images[0].std() > 0
    assert not np.array_equal(images[0], images[1])  # one noise per seed
    # What launch.evaluate reads: the references used and the expected keypoints, the scene's absolute path.
    used = np.load(out / "face_embeddings.npy")
    np.testing.assert_array_equal(used[0], np.load(tmp_path / "a.npy"))
    kps = testing_face_models.ARCFACE_TEMPLATE_112 * 32 / 112 + [160, 320]  # where the stand-in detector puts them
    np.testing.assert_allclose(used[1], faces.FaceEmbedder(face_model_root).embed_face(photo, kps), atol=1e-4)
    assert np.load(out / "conditioning" / "face_kps.npy").shape == (2, 5, 2)
    assert settings["scene"]["source"] == str((tmp_path / "scene.json").resolve())


def test_identity_residuals_and_ip_weights_are_masked_per_person():
    """`model_output`'s identity combination with stand-in networks (no compile): IdentityNet's residuals of
    person p are weighted by p's region block-averaged to each residual's grid and summed; the UNet's IP
    weights are ip_scale * region (valid people only, via `prepare`'s regions)."""
    from personacraft_jax.sampling.sampler import _Prepared, model_output

    nb, people, tokens, dim, h = 2, 2, 3, 4, 8
    rng = np.random.default_rng(0)
    ip_tokens = jnp.asarray(rng.standard_normal((nb, people, tokens, dim)), jnp.float32)
    regions = jnp.asarray(rng.uniform(size=(nb, h, h, people)), jnp.float32)

    def identitynet(sample, t, context, images, text_embeds, time_ids, scale):
        value = context[:, 0, 0][:, None, None, None] * scale  # a per-(branch, person) constant
        down = tuple(jnp.broadcast_to(value, (nb * people, r, r, 1)) for r in (8, 8, 4, 2))
        return down, jnp.broadcast_to(value, (nb * people, 2, 2, 1))

    def unet(*args, down_block_additional_residuals, mid_block_additional_residual, ip_tokens, ip_scale):
        return down_block_additional_residuals, mid_block_additional_residual, ip_tokens, ip_scale

    prep = _Prepared(
        context=jnp.zeros((nb, 5, dim)), text_embeds=jnp.zeros((nb, 6)), time_ids=jnp.zeros((nb, 6)),
        control_flags=jnp.ones(nb), scnet_cond=None, oben_cond=None, ip_tokens=ip_tokens, regions=regions,
        id_context=ip_tokens.reshape(nb * people, tokens, dim), id_images=jnp.zeros((nb * people, 64, 64, 3)),
    )  # fmt: skip
    scales = Scales.create(identity=0.8, ip=0.6)
    down, mid, got_tokens, ip_scale = model_output(
        {"identitynet": identitynet, "unet": unet}, prep, scales, jnp.zeros((nb, h, h, 4)), jnp.float32(10.0)
    )
    values = np.asarray(ip_tokens[:, :, 0, 0]) * 0.8  # (nb, P)
    for r, res in zip((8, 8, 4, 2, 2), (*down, mid)):
        pooled = np.asarray(regions).reshape(nb, r, h // r, r, h // r, people).mean(axis=(2, 4))
        np.testing.assert_allclose(res[..., 0], np.einsum("bhwp,bp->bhw", pooled, values), rtol=1e-5, atol=1e-6)
    assert got_tokens is ip_tokens
    np.testing.assert_allclose(ip_scale, 0.6 * np.asarray(regions), rtol=1e-6)


def test_sdxl_sampler_benchmark_runs_with_the_tiny_preset():
    """The GPU benchmark script's code path (inputs, compile, timing, report) on the tiny networks."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sampler_sdxl", "--preset=tiny", "--size=64", "--steps=2",
         "--repeats=1"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["preset"] == "tiny" and report["steps"] == 2 and report["people"] == 2
    assert report["seconds_per_image"] > 0 and report["compile_s"] > 0 and report["mfu"] is None
