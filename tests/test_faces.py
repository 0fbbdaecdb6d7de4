"""Face embedding / detection through insightface with generated ONNX models, against independent references."""

import cv2
import insightface.data
import numpy as np
import onnxruntime
import pytest
from insightface.utils import face_align

from data_prep import faces, testing_face_models
from tests.fixtures_faces import face_model_root  # noqa: F401  (pytest fixture)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity transform src -> dst (Umeyama, no reflection), computed by hand."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


@pytest.fixture(scope="module")
def photo():
    """insightface's bundled test photo, RGB, and hand-placed keypoints on its first face (roughly)."""
    rgb = np.ascontiguousarray(insightface.data.get_image("t1")[..., ::-1])
    kps = testing_face_models.ARCFACE_TEMPLATE_112 * 0.9 + np.array([200.0, 150.0], np.float32)
    return rgb, kps


def test_embed_face_matches_onnxruntime_on_aligned_crop(face_model_root, photo):  # noqa: F811
    rgb, kps = photo
    emb = faces.FaceEmbedder(face_model_root).embed_face(rgb, kps)
    assert emb.dtype == np.float32 and emb.shape == (512,)

    # Independent reference: our own similarity fit + cv2 warp, documented ArcFace preprocessing, raw ORT.
    matrix = _similarity(kps.astype(np.float64), testing_face_models.ARCFACE_TEMPLATE_112.astype(np.float64))
    aligned = cv2.warpAffine(rgb, matrix, (112, 112), borderValue=0.0)
    blob = ((aligned.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    pack = face_model_root / "models" / "antelopev2"
    session = onnxruntime.InferenceSession(str(pack / "glintr100.onnx"), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"input.1": blob})[0][0]
    np.testing.assert_allclose(emb, ref, rtol=1e-3, atol=1e-3)
    assert np.linalg.norm(emb) > 1.5  # raw, not L2-normalised


def test_embedding_depends_on_keypoints(face_model_root, photo):  # noqa: F811
    rgb, kps = photo
    embedder = faces.FaceEmbedder(face_model_root)
    a = embedder.embed_face(rgb, kps)
    b = embedder.embed_face(rgb, kps + 40.0)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(embedder.align(rgb, kps).shape, (112, 112, 3))


def test_detect_faces_finds_bright_square(face_model_root):  # noqa: F811
    image = np.zeros((128, 128, 3), np.uint8)
    image[64:96, 32:64] = 255  # one stride-32 cell: column 1, row 2
    det = faces.FaceDetector(face_model_root, det_size=(128, 128)).detect_faces(image)
    assert det.boxes.shape == (1, 4) and det.kps.shape == (1, 5, 2) and det.scores.shape == (1,)
    np.testing.assert_allclose(det.boxes[0], [32, 64, 64, 96], atol=1e-4)
    np.testing.assert_allclose(det.kps[0], testing_face_models.ARCFACE_TEMPLATE_112 * 32 / 112 + [32, 64], atol=1e-3)
    assert det.scores[0] > 0.99
    empty = faces.FaceDetector(face_model_root, det_size=(128, 128)).detect_faces(np.zeros_like(image))
    assert empty.boxes.shape == (0, 4) and empty.kps.shape == (0, 5, 2)


def test_missing_model_folder_names_the_path(tmp_path):
    with pytest.raises(faces.FaceModelError, match=r"models/antelopev2.*does not exist"):
        faces.FaceEmbedder(tmp_path)
    (tmp_path / "models" / "antelopev2").mkdir(parents=True)
    with pytest.raises(faces.FaceModelError, match=r"no \.onnx files"):
        faces.FaceEmbedder(tmp_path)


def test_pack_without_recognition_model_is_an_error(tmp_path):
    root = testing_face_models.write_antelope_like_pack(tmp_path)
    (root / "models" / "antelopev2" / "glintr100.onnx").unlink()
    with pytest.raises(faces.FaceModelError, match="no recognition model"):
        faces.FaceEmbedder(root)


def test_kps_in_frame():
    kps = testing_face_models.ARCFACE_TEMPLATE_112.copy()
    assert faces.kps_in_frame(kps, 112, 112)
    assert not faces.kps_in_frame(kps + np.array([60.0, 0.0]), 112, 112)
    assert not faces.kps_in_frame(np.full((5, 2), np.nan), 112, 112)


def test_largest_face_embedding_embeds_the_largest_detection(face_model_root):  # noqa: F811
    """Two detections of different sizes (a stand-in detector): the larger one's keypoints are embedded."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    small = testing_face_models.ARCFACE_TEMPLATE_112 * 0.3 + [5.0, 5.0]
    large = testing_face_models.ARCFACE_TEMPLATE_112 * 0.8 + [30.0, 20.0]

    class TwoFaces:
        def detect_faces(self, image):
            boxes = np.array([[5, 5, 40, 40], [30, 20, 120, 110]], np.float32)  # best score first: the small one
            return faces.Detections(boxes, np.stack([small, large]).astype(np.float32), np.array([0.9, 0.8]))

    embedder = faces.FaceEmbedder(face_model_root)
    got = faces.largest_face_embedding(image, TwoFaces(), embedder)
    np.testing.assert_array_equal(got, embedder.embed_face(image, large))
    assert not np.allclose(got, embedder.embed_face(image, small))


def test_embed_reference_photo_reads_the_file_and_names_it_when_faceless(face_model_root, tmp_path):  # noqa: F811
    from PIL import Image

    photo = np.zeros((128, 128, 3), np.uint8)
    photo[32:64, 64:96] = 230  # one stride-32 cell: column 2, row 1
    Image.fromarray(photo).save(tmp_path / "face.png")
    detector = faces.FaceDetector(face_model_root, det_size=(128, 128))
    embedder = faces.FaceEmbedder(face_model_root)
    got = faces.embed_reference_photo(tmp_path / "face.png", detector, embedder)
    kps = testing_face_models.ARCFACE_TEMPLATE_112 * 32 / 112 + [64, 32]  # where the stand-in puts them
    np.testing.assert_allclose(got, embedder.embed_face(photo, kps), rtol=1e-4, atol=1e-4)

    Image.fromarray(np.zeros_like(photo)).save(tmp_path / "dark.png")
    with pytest.raises(faces.NoFaceFoundError, match=r"dark\.png"):
        faces.embed_reference_photo(tmp_path / "dark.png", detector, embedder)


def test_embed_face_equals_aligning_the_bgr_photo(face_model_root, photo):  # noqa: F811
    """Aligning the RGB photo and flipping the 112 x 112 crop is exactly insightface's path on the BGR photo."""
    rgb, kps = photo
    embedder = faces.FaceEmbedder(face_model_root)
    for shift in (0.0, 17.5, -31.25):
        bgr_aligned = face_align.norm_crop(np.ascontiguousarray(rgb[..., ::-1]), kps + shift, image_size=112)
        expected = np.asarray(embedder.model.get_feat(bgr_aligned), np.float32).reshape(-1)
        np.testing.assert_array_equal(embedder.embed_face(rgb, kps + shift), expected)
