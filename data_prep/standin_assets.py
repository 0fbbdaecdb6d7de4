"""Where the generated stand-ins live: the SMPL-X-format body model and the antelopev2-like face models.

Each is written once into `cache_dir/<name>_<digest>/`, the digest being of its generator's source, so a
change to the generator writes a new folder (an old one is never reused for new code).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from types import ModuleType


def source_digest(generator: ModuleType) -> str:
    """The first 12 hex digits of sha256 of the generator module's source (its version)."""
    return hashlib.sha256(pathlib.Path(generator.__file__).read_bytes()).hexdigest()[:12]


def generated_dir(cache_dir: str | os.PathLike, name: str, generator: ModuleType) -> pathlib.Path:
    """`cache_dir/<name>_<source_digest(generator)>`, absolute."""
    return pathlib.Path(os.path.expanduser(os.fspath(cache_dir))).absolute() / f"{name}_{source_digest(generator)}"


def standin_smplx_root(cache_dir: str | os.PathLike) -> pathlib.Path:
    """The stand-in body model's root (`<root>/smplx/SMPLX_NEUTRAL.npz`), written if missing."""
    from data_prep import standin_smplx

    root = generated_dir(cache_dir, "standin_smplx", standin_smplx)
    if not (root / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
        standin_smplx.write_standin_smplx_model(root)
    return root


def standin_face_root(cache_dir: str | os.PathLike) -> pathlib.Path:
    """The stand-in insightface root (`<root>/models/antelopev2/*.onnx`), written if missing."""
    from data_prep import testing_face_models as faces

    root = generated_dir(cache_dir, "standin_insightface", faces)
    pack = root / "models" / faces.PACK_NAME
    if not all((pack / f).is_file() for f in (faces.RECOGNITION_FILE, faces.DETECTION_FILE)):
        faces.write_antelope_like_pack(root)
    return root
