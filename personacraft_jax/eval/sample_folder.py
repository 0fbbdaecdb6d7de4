"""Reading a `launch.sample` output folder for evaluation, and evaluating it.

Folder contract (what `launch.sample` writes; items marked *optional* have fallbacks):
- `settings.json`: `scene` = `SceneSpec.resolved()` (`people[i]` with `name`, `betas` after shape control,
  `transl`, `expression`, `rotvec`, `face`; `K`, `width`, `height`, `source` = the scene file), `images`
  (file names `image_seed<S>.png`), `face_valid` (P,) (1 = identity applied: a face input and a visible face;
  *optional*, else: a reference embedding and expected keypoints inside the image), `config`.
- reference embeddings (P, 512), zeros for people without a face input: `face_embeddings.npy` or
  `settings["face_embeddings"]` (*optional*; fallback: the scene file at `scene.source` is read again, and its
  `face.embedding` files loaded or its `face.image` photos embedded (largest face, as `launch.sample` does)).
- expected face keypoints (P, 5, 2) in the generated image: `conditioning/face_kps.npy` or
  `settings["face_kps"]` (*optional*; fallback: the resolved people are posed with the SMPL-X body model and
  their face keypoints projected with K, as `data_prep.render` does, without the occlusion test).
- fits of the generated images (for the body metric): `<fits>/<image stem>.npz|.json` (`data_prep.fits` format).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from personacraft_jax.eval import body_shape, face_identity


class SampleFolderError(ValueError):
    """A sample folder lacking something the evaluation needs; the message says what."""


@dataclasses.dataclass(frozen=True)
class SampleFolder:
    """What evaluation reads from a sample folder: names (P), betas (P, 10), transl (P, 3), K (3, 3), width,
    height, images (file names), face_valid (P,) bool or None, settings (the parsed settings.json)."""

    root: pathlib.Path
    names: tuple[str, ...]
    betas: np.ndarray
    transl: np.ndarray
    K: np.ndarray
    width: int
    height: int
    images: tuple[str, ...]
    face_valid: np.ndarray | None
    settings: dict[str, Any]


def read_sample_folder(root: str | os.PathLike) -> SampleFolder:
    """Parse `root/settings.json` (see the module docstring)."""
    root = pathlib.Path(root).expanduser()
    path = root / "settings.json"
    if not path.is_file():
        raise SampleFolderError(f"{path} does not exist (expected a launch.sample output folder)")
    try:
        settings = json.loads(path.read_text())
        scene = settings["scene"]
        people = scene["people"]
        names = tuple(str(p["name"]) for p in people)
        betas = np.asarray([p["betas"] for p in people], np.float64)
        transl = np.asarray([p["transl"] for p in people], np.float64)
        K = np.asarray(scene["K"], np.float64)
        width, height = int(scene["width"]), int(scene["height"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SampleFolderError(f"{path}: not a launch.sample settings file ({type(e).__name__}: {e})") from None
    images = settings.get("images") or sorted(p.name for p in root.glob("image_seed*.png"))
    if not images:
        raise SampleFolderError(f"{root}: no images (settings 'images' empty and no image_seed*.png)")
    valid = settings.get("face_valid")
    valid = None if valid is None else np.asarray(valid, np.float64).reshape(-1) > 0.5
    if valid is not None and len(valid) != len(names):
        raise SampleFolderError(f"{path}: face_valid has {len(valid)} entries for {len(names)} people")
    return SampleFolder(root, names, betas, transl, K, width, height, tuple(images), valid, settings)


def _optional_array(folder: SampleFolder, file: str, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    path = folder.root / file
    if path.is_file():
        value, source = np.load(path, allow_pickle=False), str(path)
    elif folder.settings.get(key) is not None:
        value, source = folder.settings[key], f"settings.json '{key}'"
    else:
        return None
    array = np.asarray(value, np.float64)
    if array.shape != shape:
        raise SampleFolderError(f"{source} has shape {array.shape}, expected {shape}")
    return array


def reference_embeddings(
    folder: SampleFolder, detector: Any, embedder: Any, scene_path: str | os.PathLike | None = None
) -> np.ndarray:
    """(P, 512) reference embeddings, zeros for people without a face input (module docstring); `scene_path`
    overrides the recorded `scene.source` for the fallback (a relative source is relative to the sampling run's
    working directory)."""
    num = len(folder.names)
    stored = _optional_array(folder, "face_embeddings.npy", "face_embeddings", (num, face_identity.EMBEDDING_DIM))
    if stored is not None:
        return stored
    from data_prep.faces import NoFaceFoundError, UnreadablePhotoError, embed_reference_photo
    from personacraft_jax.sampling.scene_file import SceneFileError, load_scene_file

    source = scene_path or folder.settings["scene"].get("source")
    try:
        scene = load_scene_file(source)  # its size was checked against the models when it was sampled
    except (SceneFileError, TypeError) as e:
        raise SampleFolderError(
            f"no face_embeddings.npy in {folder.root} and the scene file {source!r} cannot be read again ({e})"
        ) from None
    if tuple(p.name for p in scene.people) != folder.names:
        raise SampleFolderError(f"the scene file {source} no longer lists the sampled people {list(folder.names)}")
    out = np.zeros((num, face_identity.EMBEDDING_DIM))
    for i, person in enumerate(scene.people):
        if person.face is None:
            continue
        if person.face.embedding is not None:
            out[i] = person.face.embedding
        else:
            try:
                out[i] = embed_reference_photo(person.face.image, detector, embedder)
            except (NoFaceFoundError, UnreadablePhotoError) as e:
                raise SampleFolderError(f"{e} ({folder.names[i]})") from None
    return out


def _posed_face_kps(folder: SampleFolder, smplx_model_root: str | os.PathLike | None) -> np.ndarray:
    from data_prep.body_model import BodyModel, write_standin_smplx_model
    from data_prep.fits import PersonFit
    from data_prep.render import face_keypoints_3d, project

    config = folder.settings.get("config") or {}
    root = smplx_model_root or config.get("smplx_model_root")
    if root is None:  # launch.sample's default: the generated stand-in in its cache
        root = pathlib.Path(os.path.expanduser(config.get("cache_dir", "~/.cache/personacraft_jax/sample")))
        root = root / "standin_smplx"
        if not (root / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
            write_standin_smplx_model(root)
    body = BodyModel(os.path.expanduser(str(root)))
    kps = []
    for p in folder.settings["scene"]["people"]:
        fit = PersonFit(betas=p["betas"], expression=p["expression"], rotvec=p["rotvec"], transl=p["transl"])
        points = face_keypoints_3d(body.posed(fit)[1])
        kps.append(project(points, folder.K) if np.all(points[:, 2] > 0) else np.full((5, 2), np.nan))
    return np.asarray(kps, np.float64)


def expected_face_kps(folder: SampleFolder, smplx_model_root: str | os.PathLike | None = None) -> np.ndarray:
    """(P, 5, 2) expected face keypoints in the generated image (module docstring); NaN rows: behind the camera."""
    num = len(folder.names)
    stored = _optional_array(folder, "conditioning/face_kps.npy", "face_kps", (num, 5, 2))
    return stored if stored is not None else _posed_face_kps(folder, smplx_model_root)


def face_evaluation_mask(folder: SampleFolder, references: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """(P,) which people count: `face_valid` if recorded, else a reference and keypoints inside the image."""
    if folder.face_valid is not None:
        return folder.face_valid & np.isfinite(kps).all(axis=(1, 2))
    inside = np.all((kps[..., 0] >= 0) & (kps[..., 0] < folder.width), axis=1)
    inside &= np.all((kps[..., 1] >= 0) & (kps[..., 1] < folder.height), axis=1)
    return (np.linalg.norm(references, axis=1) > 0) & inside


def load_image(path: pathlib.Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise SampleFolderError(f"image {path} does not exist")
    return np.asarray(Image.open(path).convert("RGB"))


def find_fit(fits_dir: pathlib.Path, image_name: str) -> pathlib.Path | None:
    """`fits_dir/<image stem>.npz` or `.json`, or None."""
    stem = pathlib.Path(image_name).stem
    for suffix in (".npz", ".json"):
        if (fits_dir / f"{stem}{suffix}").is_file():
            return fits_dir / f"{stem}{suffix}"
    return None


def evaluate_folder(
    folder: SampleFolder,
    detector: Any | None,
    embedder: Any | None,
    fits_dir: str | os.PathLike | None = None,
    *,
    max_face_distance: float = face_identity.DEFAULT_MAX_RELATIVE_DISTANCE,
    body_match: str = "position",
    max_body_distance: float = body_shape.DEFAULT_MAX_DISTANCE,
    smplx_model_root: str | os.PathLike | None = None,
    scene_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Face metric (when `detector`/`embedder` are given) and body metric (when `fits_dir` is) for every image;
    returns the JSON-ready metrics dict (per image, per person, and summaries over the folder)."""
    from data_prep.fits import load_scene_fit

    metrics: dict[str, Any] = {"samples": str(folder.root), "people": list(folder.names), "images": {}}
    face_results, body_results, missing_fits = [], [], []
    if detector is not None and embedder is not None:
        refs = reference_embeddings(folder, detector, embedder, scene_path)
        kps = expected_face_kps(folder, smplx_model_root)
        mask = face_evaluation_mask(folder, refs, kps)
        metrics["face_settings"] = {"max_relative_distance": max_face_distance, "evaluated": mask.tolist()}
    fits = pathlib.Path(fits_dir).expanduser() if fits_dir else None
    if fits is not None and not fits.is_dir():
        raise SampleFolderError(f"fits folder {fits} does not exist")
    for name in folder.images:
        entry: dict[str, Any] = {}
        if detector is not None and embedder is not None:
            image = load_image(folder.root / name)
            result = face_identity.evaluate_face_identity(
                image, refs, kps, detector, embedder, mask, max_relative_distance=max_face_distance
            )
            face_results.append(result)
            entry["face_identity"] = result.to_json(folder.names)
        if fits is not None:
            path = find_fit(fits, name)
            if path is None:
                missing_fits.append(name)
            else:
                result = body_shape.evaluate_body_shape(
                    folder.betas, load_scene_fit(path), requested_transl=folder.transl, K=folder.K,
                    width=folder.width, height=folder.height, match=body_match, max_distance=max_body_distance,
                )  # fmt: skip
                body_results.append(result)
                entry["body_shape"] = {"fit": str(path), **result.to_json(folder.names)}
        metrics["images"][name] = entry
    if face_results:
        metrics["face_identity"] = face_identity.summarize(face_results)
    if fits is not None:
        metrics["body_shape"] = {
            **body_shape.summarize(body_results),
            "match": body_match,
            "max_distance": max_body_distance,
            "images_without_fit": missing_fits,
        }
    return metrics


def json_ready(value: Any) -> Any:
    """NaN / inf floats -> None, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4f}"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """Human-readable summary of a metrics dict."""
    lines = [f"{metrics['samples']}: {len(metrics['images'])} image(s), people {metrics['people']}"]
    if "face_identity" in metrics:
        f = metrics["face_identity"]
        lines.append(
            f"face identity: mean cosine {_fmt(f['mean_similarity'])} over {f['num_found']} found face(s); "
            f"found {f['num_found']}/{f['num_evaluated']} (fraction {_fmt(f['found_fraction'])}); "
            f"score counting misses as 0: {_fmt(f['score_with_misses'])}"
        )
    if "body_shape" in metrics:
        b = metrics["body_shape"]
        lines.append(
            f"body shape: mean betas cosine {_fmt(b['mean_cosine'])}, mean L2 {_fmt(b['mean_l2'])}, "
            f"mean |error| {_fmt(b['mean_abs_error'])}; matched {b['num_found']}/{b['num_requested']} "
            f"({b['match']}); images without a fit: {len(b['images_without_fit'])}"
        )
    return lines
