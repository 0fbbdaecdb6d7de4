"""Face alignment, ArcFace embeddings and SCRFD detection through insightface, strictly offline.

Models come from a user-provided folder in insightface's pack layout, `root/models/<name>/*.onnx`
(for InstantID: `name="antelopev2"`, holding `glintr100.onnx` and `scrfd_10g_bnkps.onnx`). Each ONNX file
is loaded by path with `insightface.model_zoo.get_model(path)`, which routes it by its signature; we never
call `FaceAnalysis` with a pack name, because a missing pack makes insightface try to download it.

Conventions: images are RGB uint8 (H, W, 3) (converted to insightface's BGR internally); keypoints are
float (5, 2) pixel (x, y) in insightface's order (subject's right eye, left eye, nose, right and left mouth
corner). Embeddings are the raw (not normalised) float32 (512,) ArcFace output, as InstantID uses them.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
from insightface.model_zoo import model_zoo
from insightface.utils import face_align

ALIGNED_SIZE = 112


class FaceModelError(FileNotFoundError):
    """The face model folder or one of its models is missing or unusable."""


class NoFaceFoundError(ValueError):
    """The detector found no face in a reference photo."""


class UnreadablePhotoError(ValueError):
    """A reference photo file that PIL cannot open or decode (not an image, truncated, unreadable)."""


@dataclasses.dataclass(frozen=True)
class Detections:
    """SCRFD output: `boxes` (F, 4) x1, y1, x2, y2; `kps` (F, 5, 2); `scores` (F,); best first."""

    boxes: np.ndarray
    kps: np.ndarray
    scores: np.ndarray


def pack_dir(root: str | pathlib.Path, name: str = "antelopev2") -> pathlib.Path:
    """The folder `root/models/name/`, checked to exist and hold ONNX files."""
    folder = pathlib.Path(root).expanduser() / "models" / name
    if not folder.is_dir():
        raise FaceModelError(
            f"face model folder {folder} does not exist; expected insightface's layout "
            f"<root>/models/{name}/*.onnx (e.g. antelopev2: glintr100.onnx, scrfd_10g_bnkps.onnx). "
            "Models are never downloaded: put them there yourself."
        )
    if not any(folder.glob("*.onnx")):
        raise FaceModelError(f"face model folder {folder} holds no .onnx files")
    return folder


def _load_task_model(folder: pathlib.Path, task: str, providers: list[str]):
    """The first ONNX model in `folder` (sorted by name) that insightface routes to `task`."""
    for path in sorted(folder.glob("*.onnx")):
        # A path ending in .onnx is loaded directly (no download logic is reached for an existing file).
        model = model_zoo.get_model(str(path), providers=providers)
        if model is not None and model.taskname == task:
            return model
    raise FaceModelError(f"no {task} model among {sorted(p.name for p in folder.glob('*.onnx'))} in {folder}")


def _checked_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image


def _to_bgr(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(_checked_rgb(image)[..., ::-1])


def _check_kps(kps5: np.ndarray) -> np.ndarray:
    kps = np.asarray(kps5, dtype=np.float32)
    if kps.shape != (5, 2) or not np.all(np.isfinite(kps)):
        raise ValueError(f"expected finite face keypoints (5, 2), got {kps.shape}")
    return kps


class FaceEmbedder:
    """ArcFace embeddings of faces given by 5 keypoints (recognition model of the pack)."""

    def __init__(self, root: str | pathlib.Path, name: str = "antelopev2", providers: list[str] | None = None):
        self.folder = pack_dir(root, name)
        self.model = _load_task_model(self.folder, "recognition", providers or ["CPUExecutionProvider"])

    def align(self, image: np.ndarray, kps5: np.ndarray) -> np.ndarray:
        """RGB uint8 (112, 112, 3) crop, similarity-aligned to the ArcFace template by `norm_crop`."""
        return face_align.norm_crop(np.asarray(image), _check_kps(kps5), image_size=ALIGNED_SIZE)

    def embed_face(self, image: np.ndarray, kps5: np.ndarray) -> np.ndarray:
        """Raw float32 (512,) embedding of the face at `kps5` in the RGB image.

        The RGB image is aligned and the 112 x 112 crop turned to BGR (the warp treats channels alike, so
        this equals aligning the BGR image)."""
        aligned_bgr = np.ascontiguousarray(self.align(_checked_rgb(image), kps5)[..., ::-1])
        return np.asarray(self.model.get_feat(aligned_bgr), dtype=np.float32).reshape(-1)


class FaceDetector:
    """SCRFD face detection (detection model of the pack), for evaluation."""

    def __init__(
        self,
        root: str | pathlib.Path,
        name: str = "antelopev2",
        det_size: tuple[int, int] = (640, 640),
        det_thresh: float = 0.5,
        providers: list[str] | None = None,
    ):
        self.folder = pack_dir(root, name)
        self.model = _load_task_model(self.folder, "detection", providers or ["CPUExecutionProvider"])
        self.model.prepare(-1, input_size=tuple(det_size), det_thresh=det_thresh)

    def detect_faces(self, image: np.ndarray, max_num: int = 0) -> Detections:
        """Faces in the RGB image, best score first (at most `max_num` if > 0)."""
        dets, kps = self.model.detect(_to_bgr(image), max_num=max_num)
        if kps is None:
            raise FaceModelError(f"the detector in {self.folder} predicts no keypoints (need an SCRFD *kps model)")
        return Detections(
            boxes=np.asarray(dets[:, :4], np.float32),
            kps=np.asarray(kps, np.float32).reshape(-1, 5, 2),
            scores=np.asarray(dets[:, 4], np.float32),
        )


def largest_face_embedding(image: np.ndarray, detector: FaceDetector, embedder: FaceEmbedder) -> np.ndarray:
    """The raw (512,) float32 embedding of the largest detected face in an RGB image (InstantID's choice of
    reference face); NoFaceFoundError if there is none."""
    found = detector.detect_faces(image)
    if not len(found.scores):
        raise NoFaceFoundError("no face found in the image")
    areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
    return np.asarray(embedder.embed_face(image, found.kps[int(np.argmax(areas))]), np.float32).reshape(-1)


def embed_reference_photo(path: str | pathlib.Path, detector: FaceDetector, embedder: FaceEmbedder) -> np.ndarray:
    """`largest_face_embedding` of the photo at `path` (any format PIL reads, EXIF orientation applied); errors
    (`UnreadablePhotoError`, `NoFaceFoundError`) name the file."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as photo:
            image = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"))  # as the photo is shown
    except OSError as e:  # PIL.UnidentifiedImageError (not an image), truncated data, unreadable file
        raise UnreadablePhotoError(f"cannot read the reference photo {path} ({type(e).__name__}: {e})") from None
    try:
        return largest_face_embedding(image, detector, embedder)
    except NoFaceFoundError:
        raise NoFaceFoundError(f"no face found in the reference photo {path}") from None


def kps_in_frame(kps5: np.ndarray, width: int, height: int, margin: float = 0.0) -> bool:
    """Whether all 5 keypoints lie inside the image (pixel centres convention, [0, W) x [0, H))."""
    kps = np.asarray(kps5, dtype=np.float64)
    if kps.shape != (5, 2) or not np.all(np.isfinite(kps)):
        return False
    x, y = kps[:, 0], kps[:, 1]
    return bool(np.all((x >= margin) & (x < width - margin) & (y >= margin) & (y < height - margin)))
