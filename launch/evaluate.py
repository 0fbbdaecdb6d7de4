"""Evaluate a `launch.sample` output folder: face identity and body shape preservation.

    python -m launch.evaluate --samples=DIR --face_model_root=ROOT [--fits=FITS_DIR] [--out=DIR/metrics.json]

Face identity (`personacraft_jax.eval.face_identity`): insightface detection + ArcFace cosine similarity with
each person's reference embedding, faces matched to people by their rendered face keypoints. Body shape
(`personacraft_jax.eval.body_shape`, only with `--fits`): SMPL-X fits of the generated images
(`FITS_DIR/image_seed<S>.npz|.json`, Multi-HMR format, e.g. from data_prep) against the requested betas.
What is read from the folder: `personacraft_jax.eval.sample_folder`. Writes `metrics.json` (NaN -> null) and
prints a summary.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags

from launch import entry
from personacraft_jax import atomic_write

_SAMPLES = flags.DEFINE_string("samples", None, "launch.sample output folder (settings.json, image_seed*.png).")
_FACE_ROOT = flags.DEFINE_string(
    "face_model_root", None, "insightface root (models/<name>/*.onnx); omit: no face metric."
)
_FACE_NAME = flags.DEFINE_string("face_model_name", "antelopev2", "insightface pack name.")
_DET_SIZE = flags.DEFINE_list("det_size", ["640", "640"], "Detector input size W,H.")
_DET_THRESH = flags.DEFINE_float("det_thresh", 0.5, "Detector score threshold.")
_MAX_FACE = flags.DEFINE_float("max_face_distance", 1.0, "Max mean keypoint distance / face size for a match.")
_FITS = flags.DEFINE_string("fits", None, "Folder of SMPL-X fits of the generated images (<image stem>.npz|.json).")
_BODY_MATCH = flags.DEFINE_enum("body_match", "position", ["position", "order"], "How fitted people are matched.")
_MAX_BODY = flags.DEFINE_float("max_body_distance", 0.15, "Max head distance (fraction of the image) for a match.")
_SMPLX_ROOT = flags.DEFINE_string("smplx_model_root", None, "SMPL-X root if face keypoints must be recomputed.")
_SCENE = flags.DEFINE_string("scene", None, "Scene file to re-read for reference faces (default: the recorded one).")
_OUT = flags.DEFINE_string("out", None, "metrics.json path (default: SAMPLES/metrics.json).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _SAMPLES.value is None:
        raise app.UsageError("--samples is required")
    if _FACE_ROOT.value is None and _FITS.value is None:
        raise app.UsageError("nothing to evaluate: give --face_model_root and/or --fits")
    from data_prep.faces import FaceDetector, FaceEmbedder, FaceModelError
    from data_prep.fits import FitError
    from personacraft_jax.eval import sample_folder

    try:
        folder = sample_folder.read_sample_folder(_SAMPLES.value)
        detector = embedder = None
        if _FACE_ROOT.value is not None:
            size = tuple(int(v) for v in _DET_SIZE.value)
            detector = FaceDetector(_FACE_ROOT.value, _FACE_NAME.value, det_size=size, det_thresh=_DET_THRESH.value)
            embedder = FaceEmbedder(_FACE_ROOT.value, _FACE_NAME.value)
        metrics = sample_folder.evaluate_folder(
            folder, detector, embedder, _FITS.value, max_face_distance=_MAX_FACE.value, body_match=_BODY_MATCH.value,
            max_body_distance=_MAX_BODY.value, smplx_model_root=_SMPLX_ROOT.value, scene_path=_SCENE.value,
        )  # fmt: skip
    except (sample_folder.SampleFolderError, FaceModelError, FitError) as e:
        sys.exit(f"evaluate: {e}")
    out = pathlib.Path(_OUT.value).expanduser() if _OUT.value else folder.root / "metrics.json"
    atomic_write.write_json(out, sample_folder.json_ready(metrics))
    for line in sample_folder.summary_lines(metrics):
        print(line)
    print(f"wrote {out}")


if __name__ == "__main__":
    entry.run(main)
