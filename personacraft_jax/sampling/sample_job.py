"""Running a sampling job from a sample config and a scene file (the work behind `launch.sample`).

`run_sample(cfg, scene_path, out)`: read and validate the scene (`scene_file` documents the format), load the
models and check the scene's size against them and the host's memory (`scene_inputs.check_scene_size`), pose the
people (SMPL-X; the stand-in model when `smplx_model_root` is None), render the conditioning maps with
data_prep's renderer, embed the reference faces, tokenize, compile and run the sampler, then write to `out`:
- `image_seed<S>.png`, one per seed;
- `conditioning/`: depth, normal, instance, occlusion, depth_edges, OA-CFG mask (latent grid), and per person
  the keypoint image and the region mask; `face_kps.npy` (P, 5, 2), the expected face keypoints in pixels;
- `face_embeddings.npy` (P, 512): the reference embeddings used (zeros for people without a face), when
  identity is on;
- `settings.json`: the resolved scene (with the scene file's absolute path), the config, the device and
  the timings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from personacraft_jax import atomic_write


def _log(message: str) -> None:
    print(f"[sample] {message}", flush=True)


def _expand(path: str | None) -> pathlib.Path | None:
    return None if not path else pathlib.Path(os.path.expanduser(path))


def _body_model(cfg: ml_collections.ConfigDict) -> Any:
    from data_prep.body_model import BodyModel, write_standin_smplx_model

    root = _expand(cfg.smplx_model_root)
    if root is None:
        root = _expand(cfg.cache_dir) / "standin_smplx"
        if not (root / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
            write_standin_smplx_model(root)
    elif not (root / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
        raise FileNotFoundError(f"config smplx_model_root={str(root)!r}: expected smplx/SMPLX_NEUTRAL.npz in it")
    return BodyModel(root)


def _tokenizer(cfg: ml_collections.ConfigDict) -> Any:
    from personacraft_jax.sampling.tokenizers import PromptTokenizer, write_tiny_tokenizer

    if cfg.model.sdxl_folder:
        return PromptTokenizer.from_sdxl_folder(_expand(cfg.model.sdxl_folder))
    folder = _expand(cfg.cache_dir) / "tiny_tokenizer"
    if not (folder / "vocab.json").is_file():
        write_tiny_tokenizer(folder)
    return PromptTokenizer.from_folders(folder, folder)


def face_embeddings(scene: Any, cfg: ml_collections.ConfigDict, dim: int) -> np.ndarray | None:
    """(P, dim) raw ArcFace embeddings (zeros for people without a face input); None if nobody has one."""
    if all(p.face is None for p in scene.people):
        return None
    from data_prep import faces

    out = np.zeros((len(scene.people), dim), np.float32)
    detector = embedder = None
    for i, person in enumerate(scene.people):
        if person.face is None:
            continue
        if person.face.embedding is not None:
            out[i] = person.face.embedding
            continue
        if cfg.face_model_root is None:
            raise ValueError(f"people[{i}].face.image needs config face_model_root (insightface models)")
        if detector is None:
            detector = faces.FaceDetector(_expand(cfg.face_model_root), cfg.face_model_name)
            embedder = faces.FaceEmbedder(_expand(cfg.face_model_root), cfg.face_model_name)
        try:
            out[i] = faces.embed_reference_photo(person.face.image, detector, embedder)
        except (faces.NoFaceFoundError, faces.UnreadablePhotoError) as e:
            raise ValueError(f"people[{i}].face.image: {e}") from None
    return out


def _png(path: pathlib.Path, array: np.ndarray) -> None:
    from PIL import Image

    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)


def write_conditioning(folder: pathlib.Path, scene: Any, cond: Any) -> list[str]:
    """The conditioning maps as PNGs (file names returned)."""
    folder.mkdir(parents=True, exist_ok=True)
    maps = cond.maps
    images = {
        "depth.png": cond.scnet[..., 0],
        "normal.png": maps["normal"],
        "instance.png": (maps["instance"].astype(np.float32) / max(1, len(scene.people))),
        "occlusion.png": maps["occlusion"].astype(np.float32),
        "depth_edges.png": maps["depth_edges"].astype(np.float32),
        "oa_mask_latent.png": cond.occlusion_mask,
    }
    for i, person in enumerate(scene.people):
        images[f"face_kps_{person.name}.png"] = cond.face_images[i]
        images[f"region_{person.name}_latent.png"] = cond.person_masks[i]
    for name, array in images.items():
        _png(folder / name, array)
    return sorted(images)


def host_memory_bytes() -> int:
    """The host's physical memory (the bound `scene_inputs.check_scene_size` applies)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _mesh_for(batch: int) -> Any:
    import jax

    from personacraft_jax.parallel.mesh import make_mesh

    n = math.gcd(batch, jax.device_count())
    return make_mesh({"data": n}, jax.devices()[:n])


@dataclasses.dataclass
class PreparedJob:
    """A scene ready to sample: its conditioning, the sampler (models loaded) and the inputs."""

    scene: Any
    cond: Any
    sampler: Any
    inputs: Any
    embeddings: np.ndarray | None


def prepare_job(
    cfg: ml_collections.ConfigDict,
    scene_path: str | os.PathLike,
    on_step: Callable[[int], None] | None = None,
    **given: Any,
) -> PreparedJob:
    """Reads the scene, loads the models (`given` ones are used as they are, see `models.load_models`), checks
    the scene's size, renders its conditioning and builds the sampler inputs. `on_step`: see `sampler.Sampler`."""
    from data_prep.render import SceneRenderer
    from personacraft_jax.sampling import schedulers as S
    from personacraft_jax.sampling.models import load_models
    from personacraft_jax.sampling.sampler import Sampler, SamplerSettings
    from personacraft_jax.sampling.scene_file import SceneFileError, load_scene_file
    from personacraft_jax.sampling.scene_inputs import build_inputs, check_scene_size, render_conditioning

    scene = load_scene_file(scene_path)
    _log(f"scene {scene.source}: {len(scene.people)} people, {scene.width}x{scene.height}, {scene.steps} steps, "
         f"seeds {list(scene.seeds)}")  # fmt: skip
    models = load_models(cfg.model, **given)
    try:
        check_scene_size(scene, models.size_multiple, host_memory_bytes())
    except SceneFileError as e:
        raise SceneFileError(f"{scene.source}: {e}") from None
    with SceneRenderer(
        scene.width, scene.height, platform=cfg.render_platform, min_eye_distance_px=cfg.min_eye_distance_px
    ) as renderer:
        cond = render_conditioning(
            scene, _body_model(cfg), renderer, edge_radius=cfg.edge_radius, occlusion_radius=cfg.occlusion_radius,
            region_radius=cfg.region_radius, latent_factor=models.latent_factor,
        )  # fmt: skip
    _log(f"rendered the conditioning; faces visible: {cond.face_visible.tolist()}")
    tokenizer = _tokenizer(cfg)
    identity = models.identitynet is not None and models.resampler is not None
    embeddings = face_embeddings(scene, cfg, models.resampler.config.embedding_dim) if identity else None
    if not identity and any(p.face is not None for p in scene.people):
        _log("the config has no identity networks: face inputs are ignored")
    ids = tokenizer.tokenize([scene.prompt])
    negative = tokenizer.tokenize([scene.negative_prompt]) if scene.negative_prompt is not None else None
    inputs = build_inputs(
        scene, cond, ids, negative, embeddings, latent_factor=models.latent_factor,
        use_scnet=models.scnet is not None, use_oben=models.oben is not None,
    )  # fmt: skip
    settings = SamplerSettings(
        num_steps=scene.steps, scheduler=S.SchedulerConfig.sdxl(cfg.scheduler), oa_mode=scene.oa_cfg["mode"],
        oa_fraction=scene.oa_cfg["fraction"],
    )  # fmt: skip
    sampler = Sampler(models, settings, mesh=_mesh_for(len(scene.seeds)), on_step=on_step)
    if sampler.num_steps != scene.steps:
        _log(f"the scheduler's schedule has {sampler.num_steps} steps for the {scene.steps} asked (as in diffusers)")
    _log(f"loaded the models; identity {'on' if embeddings is not None else 'off'}")
    return PreparedJob(scene, cond, sampler, inputs, embeddings)


class StepProgress:
    """A tqdm bar over the denoising steps, set by the compiled loop's per-step host callback (step index i
    done -> i + 1 of the total)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, step: int) -> None:
        if self.bar is not None and step + 1 > self.bar.n:
            self.bar.update(step + 1 - self.bar.n)

    def start(self, total: int) -> None:
        from personacraft_jax.progress import progress_bar

        self.bar = progress_bar(total, "[sample] denoising", unit="step")

    def close(self) -> None:
        import jax

        jax.effects_barrier()  # callbacks are delivered asynchronously on some backends
        if self.bar is not None:
            self.bar.close()
        self.bar = None


def run_sample(cfg: ml_collections.ConfigDict, scene_path: str | os.PathLike, out: str | os.PathLike) -> dict:
    """The whole command; returns the settings dict it writes to `out/settings.json`."""
    import jax

    out = pathlib.Path(out).expanduser()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    progress = StepProgress()
    job = prepare_job(cfg, scene_path, on_step=progress if cfg.progress else None)
    scene, cond, sampler, inputs, embeddings = job.scene, job.cond, job.sampler, job.inputs, job.embeddings
    out.mkdir(parents=True, exist_ok=True)
    written = write_conditioning(out / "conditioning", scene, cond)
    np.save(out / "conditioning" / "face_kps.npy", np.asarray(cond.maps["face_kps"], np.float32))
    timings["prepare_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    compiled = sampler.compile(inputs)
    timings["compile_s"] = time.perf_counter() - t0
    _log(f"compiled the sampler ({timings['compile_s']:.1f} s); sampling {len(scene.seeds)} image(s)")
    t0 = time.perf_counter()
    if cfg.progress:
        progress.start(sampler.num_steps)
    try:
        _, images = compiled(sampler.params, sampler.schedule, sampler.place(inputs))
        images = np.asarray(jax.block_until_ready(images))
    finally:
        progress.close()
    timings["sample_s"] = time.perf_counter() - t0
    _log(f"sampled ({timings['sample_s']:.2f} s)")

    if embeddings is not None:
        np.save(out / "face_embeddings.npy", np.asarray(embeddings, np.float32))
    files = []
    for seed, image in zip(scene.seeds, images):
        files.append(f"image_seed{seed}.png")
        _png(out / files[-1], image)
    result = {
        "scene": {**scene.resolved(), "source": str(pathlib.Path(scene.source).resolve())},
        "config": cfg.to_dict(),
        "identity": embeddings is not None,
        "face_valid": inputs.face_valid[0].tolist() if inputs.face_valid is not None else None,
        "device": str(jax.devices()[0].device_kind),
        "mesh_devices": sampler.mesh.size if sampler.mesh is not None else 1,
        "timings": timings,
        "images": files,
        "conditioning": [f"conditioning/{n}" for n in written],
    }
    atomic_write.write_json(out / "settings.json", result, default=str)
    _log(f"wrote {len(files)} image(s), {len(written)} conditioning maps and settings.json to {out}")
    return result


class ValidationSampler:
    """Samples a fixed validation scene with the *current* trained ControlNets, for TensorBoard during training.

    Built once (render, tokenize, load the frozen networks, compile); each call swaps in the trainer's SCNet /
    OBEN parameters (cast to the sampler's dtypes and placed as its parameters are) and returns the images, (B, H, W, 3) uint8.
    """

    def __init__(self, cfg: ml_collections.ConfigDict, scene_path: str | os.PathLike, **networks: Any):
        self.job = prepare_job(cfg, scene_path, **networks)
        sampler = self.job.sampler
        self._compiled = sampler.compile(self.job.inputs)
        self._inputs = sampler.place(self.job.inputs)

    def __call__(self, trained: dict[str, Any]) -> np.ndarray:
        import jax

        sampler = self.job.sampler
        params = dict(sampler.params)
        for name, state in trained.items():
            if name not in params:
                raise ValueError(f"the validation sampler has no {name!r} network (config model.{name}_folder)")
            params[name] = jax.tree.map(
                lambda new, old: jax.device_put(new.astype(old.dtype), old.sharding), state, params[name]
            )
        _, images = self._compiled(params, sampler.schedule, self._inputs)
        return (np.asarray(jax.device_get(images)) * 255.0 + 0.5).astype(np.uint8)
