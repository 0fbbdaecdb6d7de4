"""A held-out scene through the user-facing commands' library functions: `launch.sample` (scene file -> pose ->
render -> jitted sampler -> images) and `launch.evaluate` (face identity with insightface models, body shape
from fits of the generated images).

What its figures are, in this world: the face models are the generated stand-ins (random ONNX networks
with antelopev2's signatures) and the world has no identity networks, so the face figure only shows that
the pipeline runs; no SMPL-X fitter exists here, so the "fits of the generated images" are the scene's own
fits, and the body figure checks the pipeline (it is 1.0 by construction), not the images.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections
import numpy as np

from personacraft_jax import atomic_write


def write_scene(example: dict[str, Any], cfg: ml_collections.ConfigDict, folder: pathlib.Path) -> pathlib.Path:
    """A scene file (+ fit file, + face embedding files) for a stored held-out example."""
    from data_prep.fits import PersonFit, SceneFit, save_scene_fit

    folder.mkdir(parents=True, exist_ok=True)
    people = tuple(
        PersonFit(b, e, r, t)
        for b, e, r, t in zip(example["betas"], example["expression"], example["pose"], example["transl"])
    )
    fit = SceneFit(people=people, K=np.asarray(example["K"]), width=cfg.resolution, height=cfg.resolution)
    save_scene_fit(folder / "scene_fit.npz", fit)
    entries = []
    for i in range(len(people)):
        face = None
        embedding = np.asarray(example["face_embedding"][i], np.float32)
        if np.any(embedding):
            np.save(folder / f"person{i}_face.npy", embedding, allow_pickle=False)
            face = {"embedding": f"person{i}_face.npy"}
        entries.append({"name": f"person{i}", "fit": {"file": "scene_fit.npz", "index": i}, "face": face})
    scene = {
        "prompt": example["caption"],
        "width": cfg.resolution,
        "height": cfg.resolution,
        "steps": cfg.sample.steps,
        "seeds": list(cfg.sample.seeds),
        "scales": {"guidance": cfg.sample.guidance, "scnet": 1.0, "oben": 1.0},
        "oa_cfg": {"mode": "control", "scale": cfg.sample.oa_scale, "fraction": cfg.sample.oa_fraction},
        "people": entries,
    }
    path = folder / "scene.json"
    atomic_write.write_json(path, scene)
    return path


def sample_and_evaluate(
    cfg: ml_collections.ConfigDict,
    example: dict[str, Any],
    models: dict[str, pathlib.Path],
    face_root: pathlib.Path,
    body_root: pathlib.Path,
    out: pathlib.Path,
) -> dict[str, Any]:
    """Writes the scene, samples it into `out/samples` as launch.sample does, evaluates it as launch.evaluate
    does; returns {'settings', 'metrics', 'summary'}."""
    from configs import sample_tiny
    from data_prep.faces import FaceDetector, FaceEmbedder
    from data_prep.testing_face_models import PACK_NAME
    from personacraft_jax.eval import sample_folder
    from personacraft_jax.sampling.sample_job import run_sample

    scene = write_scene(example, cfg, out / "scene")
    sample = sample_tiny.get_config()
    sample.model.sdxl_folder = str(models["sdxl"])
    sample.model.scnet_folder = str(models["scnet"])
    sample.model.oben_folder = str(models["oben"])
    sample.latent_factor = cfg.latent_factor
    sample.size_multiple = cfg.latent_factor * 4  # the demo UNet downsamples twice
    sample.smplx_model_root = str(body_root)
    sample.face_model_root = str(face_root)
    sample.face_model_name = PACK_NAME
    sample.cache_dir = cfg.cache_dir
    sample.progress = False
    samples = out / "samples"
    settings = run_sample(sample, scene, samples)

    fits = out / "fits"  # the scene's own fit standing in for a fitter's (module docstring)
    fits.mkdir(parents=True, exist_ok=True)
    for name in settings["images"]:
        (fits / f"{pathlib.Path(name).stem}.npz").write_bytes((out / "scene" / "scene_fit.npz").read_bytes())
    folder = sample_folder.read_sample_folder(samples)
    detector = FaceDetector(face_root, PACK_NAME, det_size=(cfg.resolution, cfg.resolution))
    embedder = FaceEmbedder(face_root, PACK_NAME)
    metrics = sample_folder.json_ready(sample_folder.evaluate_folder(folder, detector, embedder, fits))
    atomic_write.write_json(samples / "metrics.json", metrics)
    note = " ".join(__doc__.split("\n\n", 1)[1].split())
    return {"settings": settings, "metrics": metrics, "summary": sample_folder.summary_lines(metrics), "note": note}
