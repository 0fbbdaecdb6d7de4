"""Evaluation metrics: face identity (generated ONNX face models, synthetic "faces") and body shape."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep import faces, testing_face_models
from data_prep.fits import PersonFit, SceneFit, save_scene_fit
from personacraft_jax.body.shape_control import interpolate_betas
from personacraft_jax.eval import body_shape, face_identity, sample_folder
from personacraft_jax.eval.matching import assign
from tests.fixtures_faces import face_model_root  # noqa: F401  (pytest fixture)

SIZE = 128
CELL = 32  # the stand-in detector fires on bright, grid-aligned 32 x 32 squares


@pytest.fixture(scope="module")
def models(face_model_root):  # noqa: F811
    detector = faces.FaceDetector(face_model_root, det_size=(SIZE, SIZE))
    return detector, faces.FaceEmbedder(face_model_root)


def _texture(seed: int) -> np.ndarray:
    """A bright (mean > 192, so it fires), seed-specific 32 x 32 pattern: a distinct 'identity'."""
    return np.random.default_rng(seed).integers(200, 256, (CELL, CELL, 3)).astype(np.uint8)


def _image(placed: dict[tuple[int, int], int]) -> np.ndarray:
    """Dark image with texture `seed` at each cell origin (x, y)."""
    image = np.full((SIZE, SIZE, 3), 10, np.uint8)
    for (x, y), seed in placed.items():
        image[y : y + CELL, x : x + CELL] = _texture(seed)
    return image


def _kps(x: float, y: float) -> np.ndarray:
    """The stand-in detector's keypoints for a face in the cell at (x, y)."""
    return testing_face_models.ARCFACE_TEMPLATE_112 * CELL / 112 + np.array([x, y], np.float32)


def _np_cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a @ b / np.sqrt((a @ a) * (b @ b))


A, B, C = (0, 32), (64, 32), (64, 96)


def test_identical_reference_gives_one_and_matches_numpy(models):
    detector, embedder = models
    image = _image({A: 1, B: 2})
    refs = np.stack([embedder.embed_face(image, _kps(*A)), embedder.embed_face(image, _kps(*B))])
    expected = np.stack([_kps(*A), _kps(*B)]) + 2.0  # rendered keypoints are never exactly the detected ones
    res = face_identity.evaluate_face_identity(image, refs, expected, detector, embedder)
    assert res.found.tolist() == [True, True] and res.num_detections == 2
    np.testing.assert_allclose(res.similarity, [1.0, 1.0], atol=1e-6)
    # other references: the metric is the plain cosine of the embedder's output
    other = np.random.default_rng(0).normal(size=(2, 512)).astype(np.float32)
    res = face_identity.evaluate_face_identity(image, other, expected, detector, embedder)
    for i, origin in enumerate((A, B)):
        want = _np_cosine(other[i], embedder.embed_face(image, _kps(*origin)))
        np.testing.assert_allclose(res.similarity[i], want, atol=1e-6)
    summary = res.summary()
    np.testing.assert_allclose(summary["mean_similarity"], res.similarity.mean(), atol=1e-12)
    assert summary["found_fraction"] == 1.0 and summary["num_not_found"] == 0


def test_swapped_positions_swap_the_assignment(models):
    detector, embedder = models
    image = _image({A: 1, B: 2})
    refs = np.stack([embedder.embed_face(image, _kps(*A)), embedder.embed_face(image, _kps(*B))])
    boxes = detector.detect_faces(image).boxes
    straight = face_identity.evaluate_face_identity(image, refs, np.stack([_kps(*A), _kps(*B)]), detector, embedder)
    assert boxes[straight.detection[0], 0] == A[0] and boxes[straight.detection[1], 0] == B[0]
    swapped_image = _image({A: 2, B: 1})  # the two people exchanged places
    swapped = face_identity.evaluate_face_identity(
        swapped_image, refs, np.stack([_kps(*B), _kps(*A)]), detector, embedder
    )
    swapped_boxes = detector.detect_faces(swapped_image).boxes
    assert swapped_boxes[swapped.detection[0], 0] == B[0] and swapped_boxes[swapped.detection[1], 0] == A[0]
    np.testing.assert_allclose(swapped.similarity, [1.0, 1.0], atol=1e-6)
    # people staying where the scene put them while the image swapped them: found, but low similarity
    wrong = face_identity.evaluate_face_identity(
        swapped_image, refs, np.stack([_kps(*A), _kps(*B)]), detector, embedder
    )
    assert wrong.found.all() and np.all(wrong.similarity < 0.999)


def test_missing_face_is_counted_not_found(models):
    detector, embedder = models
    image = _image({A: 1})
    refs = np.stack([embedder.embed_face(image, _kps(*A)), np.ones(512, np.float32), np.ones(512, np.float32)])
    expected = np.stack([_kps(*A), _kps(*C), _kps(*B)])
    res = face_identity.evaluate_face_identity(
        image, refs, expected, detector, embedder, evaluate=np.array([True, True, False])
    )
    assert res.found.tolist() == [True, False, False] and res.evaluated.tolist() == [True, True, False]
    assert np.isnan(res.similarity[1:]).all() and res.detection[1] == -1
    s = res.summary()
    assert (s["num_evaluated"], s["num_found"], s["num_not_found"]) == (2, 1, 1)
    np.testing.assert_allclose(
        [s["mean_similarity"], s["found_fraction"], s["score_with_misses"]], [1, 0.5, 0.5], atol=1e-6
    )
    json.dumps(res.to_json(["a", "b", "c"]), allow_nan=False)


def test_keypoint_distance_threshold_is_relative_to_face_size():
    kps = _kps(*A)[None]
    size = face_identity.face_size(kps)[0]
    assert size == pytest.approx(np.linalg.norm((kps[0, 0] + kps[0, 1]) / 2 - (kps[0, 3] + kps[0, 4]) / 2))
    near, far = kps + np.array([0.5 * size, 0.0]), kps + np.array([1.5 * size, 0.0])
    match, dist = face_identity.match_faces(kps, np.concatenate([far, near]))
    assert match.tolist() == [1] and dist[0] == pytest.approx(0.5)
    assert face_identity.match_faces(kps, far)[0].tolist() == [-1]
    assert face_identity.match_faces(kps, far, max_relative_distance=2.0)[0].tolist() == [0]


def test_assignment_prefers_more_matches_then_lower_cost():
    # greedy would give row 0 column 0 (cost 0.1) and leave row 1 unmatched
    assert assign(np.array([[0.1, 0.5], [0.2, 9.0]]), 1.0).tolist() == [1, 0]
    assert assign(np.array([[0.1, 0.5], [0.2, 9.0]]), 1.0, allowed=np.array([True, False])).tolist() == [0, -1]
    assert assign(np.zeros((2, 0)), 1.0).tolist() == [-1, -1]


def test_face_input_errors(models):
    detector, embedder = models
    image, kps = _image({A: 1}), _kps(*A)[None]
    with pytest.raises(ValueError, match=r"references must be \(P, 512\)"):
        face_identity.evaluate_face_identity(image, np.ones((1, 511)), kps, detector, embedder)
    with pytest.raises(ValueError, match=r"references must be"):
        face_identity.evaluate_face_identity(image, np.ones(512), kps, detector, embedder)
    with pytest.raises(ValueError, match="2 reference embeddings but 1 people"):
        face_identity.evaluate_face_identity(image, np.ones((2, 512)), kps, detector, embedder)
    with pytest.raises(ValueError, match=r"\(N, 5, 2\)"):
        face_identity.evaluate_face_identity(image, np.ones((1, 512)), kps[:, :4], detector, embedder)
    with pytest.raises(ValueError, match="RGB uint8"):
        face_identity.evaluate_face_identity(image.astype(np.float32), np.ones((1, 512)), kps, detector, embedder)
    with pytest.raises(ValueError, match="all-zero reference"):
        face_identity.evaluate_face_identity(image, np.zeros((1, 512)), kps, detector, embedder, np.array([True]))


# --- body shape ---------------------------------------------------------------------------------------------

K = np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]])
TRANSL = np.array([[-0.8, -0.5, 3.0], [0.0, -0.4, 3.5], [0.9, -0.5, 3.0]])
BETAS = np.random.default_rng(1).normal(size=(3, 10))


def _fit(betas, transl, K_fit=K, size=SIZE) -> SceneFit:
    people = tuple(PersonFit(b, np.zeros(10), np.zeros((53, 3)), t) for b, t in zip(betas, transl))
    return SceneFit(people, K_fit, size, size)


def _evaluate(fit, betas=BETAS, **kw):
    return body_shape.evaluate_body_shape(betas, fit, requested_transl=TRANSL, K=K, width=SIZE, height=SIZE, **kw)


def test_exact_betas_score_perfectly():
    res = _evaluate(_fit(BETAS, TRANSL))
    np.testing.assert_allclose(res.cosine, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.l2, 0.0, atol=1e-6)
    s = res.summary()
    assert s["found_fraction"] == 1.0 and s["mean_cosine"] == pytest.approx(1.0, abs=1e-6)


def test_interpolated_betas_score_matches_numpy():
    requested = np.stack([interpolate_betas(BETAS[i], BETAS[(i + 1) % 3], 0.3) for i in range(3)])
    res = _evaluate(_fit(BETAS, TRANSL), betas=requested)
    fitted = BETAS.astype(np.float32).astype(np.float64)
    want_cos = [_np_cosine(requested[i], fitted[i]) for i in range(3)]
    want_l2 = np.linalg.norm(requested - fitted, axis=1)
    np.testing.assert_allclose(res.cosine, want_cos, atol=1e-6)
    np.testing.assert_allclose(res.l2, want_l2, atol=1e-5)
    np.testing.assert_allclose(res.mean_abs_error, np.abs(requested - fitted).mean(1), atol=1e-5)
    np.testing.assert_allclose(res.summary()["mean_cosine"], np.mean(want_cos), atol=1e-6)


def test_position_matching_survives_shuffled_order_and_other_resolution():
    order = [2, 0, 1]
    K2 = K.copy()
    K2[:2] *= 2  # Multi-HMR run at twice the resolution: same normalised positions
    fit = _fit(BETAS[order], TRANSL[order] + [0.02, 0.0, 0.0], K_fit=K2, size=2 * SIZE)
    res = _evaluate(fit)
    assert res.fitted.tolist() == [1, 2, 0]
    np.testing.assert_allclose(res.cosine, 1.0, atol=1e-6)
    by_order = _evaluate(fit, match="order")
    assert by_order.fitted.tolist() == [0, 1, 2] and np.all(by_order.cosine < 0.999)
    # a person missing from the fit is not found, the others still are
    partial = _evaluate(_fit(BETAS[[2, 0]], TRANSL[[2, 0]]))
    assert partial.fitted.tolist() == [1, -1, 0] and partial.summary()["found_fraction"] == pytest.approx(2 / 3)
    json.dumps(partial.to_json(), allow_nan=False)


def test_body_input_errors():
    fit = _fit(BETAS, TRANSL)
    with pytest.raises(ValueError, match=r"requested_betas must be \(P, 10\)"):
        _evaluate(fit, betas=BETAS[:, :9])
    with pytest.raises(ValueError, match=r"requested_transl must be \(2, 3\) for 2 requested people"):
        _evaluate(fit, betas=BETAS[:2])
    with pytest.raises(ValueError, match="match must be one of"):
        _evaluate(fit, match="nearest")
    with pytest.raises(ValueError, match="needs requested_transl"):
        body_shape.evaluate_body_shape(BETAS, fit)


# --- the sample folder and the command ------------------------------------------------------------------------


def _sample_folder(root, embedder):
    """A launch.sample-like folder: 2 people (ann at A, bob at C but his face missing), one image, one fit."""
    image = _image({A: 1})
    Image.fromarray(image).save(root / "image_seed0.png")
    (root / "conditioning").mkdir()
    np.save(root / "conditioning" / "face_kps.npy", np.stack([_kps(*A), _kps(*C)]))
    np.save(root / "face_embeddings.npy", np.stack([embedder.embed_face(image, _kps(*A)), np.ones(512)]))
    people = [
        {"name": n, "betas": BETAS[i].tolist(), "transl": TRANSL[i].tolist(), "expression": [0.0] * 10,
         "rotvec": np.zeros((53, 3)).tolist(), "face": {"embedding": "given"}, "shape": None}
        for i, n in enumerate(("ann", "bob"))
    ]  # fmt: skip
    scene = {"source": "scene.json", "K": K.tolist(), "width": SIZE, "height": SIZE, "people": people}
    settings = {"scene": scene, "images": ["image_seed0.png"], "face_valid": [1.0, 1.0], "config": {}}
    (root / "settings.json").write_text(json.dumps(settings))
    (root / "fits").mkdir()
    save_scene_fit(root / "fits" / "image_seed0.npz", _fit(BETAS[[1, 0]], TRANSL[[1, 0]]))
    return root


def test_evaluate_folder(tmp_path, models):
    detector, embedder = models
    folder = sample_folder.read_sample_folder(_sample_folder(tmp_path, embedder))
    metrics = sample_folder.evaluate_folder(folder, detector, embedder, tmp_path / "fits")
    f, b = metrics["face_identity"], metrics["body_shape"]
    assert (f["num_evaluated"], f["num_found"]) == (2, 1) and f["mean_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert b["num_found"] == 2 and b["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    people = metrics["images"]["image_seed0.png"]["body_shape"]["people"]
    assert [p["fitted_index"] for p in people] == [1, 0]
    with pytest.raises(sample_folder.SampleFolderError, match=r"settings\.json does not exist"):
        sample_folder.read_sample_folder(tmp_path / "fits")


def test_reference_fallback_reads_the_scene_file(tmp_path, models):
    detector, embedder = models
    root = _sample_folder(tmp_path, embedder)
    (root / "face_embeddings.npy").unlink()
    photo = _image({B: 3})
    Image.fromarray(photo).save(tmp_path / "bob.png")
    np.save(tmp_path / "ann.npy", np.arange(512, dtype=np.float32))
    people = [
        {"name": "ann", "betas": BETAS[0].tolist(), "transl": TRANSL[0].tolist(), "face": {"embedding": "ann.npy"}},
        {"name": "bob", "betas": BETAS[1].tolist(), "transl": TRANSL[1].tolist(), "face": {"image": "bob.png"}},
    ]
    (tmp_path / "scene.json").write_text(json.dumps({"prompt": "p", "width": SIZE, "height": SIZE, "people": people}))
    folder = sample_folder.read_sample_folder(root)
    refs = sample_folder.reference_embeddings(folder, detector, embedder, tmp_path / "scene.json")
    np.testing.assert_array_equal(refs[0], np.arange(512))
    np.testing.assert_allclose(refs[1], embedder.embed_face(photo, _kps(*B)), rtol=1e-6)
    with pytest.raises(sample_folder.SampleFolderError, match="cannot be read again"):
        sample_folder.reference_embeddings(folder, detector, embedder)  # the recorded source does not exist
    Image.fromarray(np.full_like(photo, 10)).save(tmp_path / "bob.png")  # no face any more
    with pytest.raises(
        sample_folder.SampleFolderError, match=r"no face found in the reference photo .*bob\.png \(bob\)"
    ):
        sample_folder.reference_embeddings(folder, detector, embedder, tmp_path / "scene.json")


def test_cli_help_and_run(tmp_path, face_model_root):  # noqa: F811
    help_run = subprocess.run([sys.executable, "-m", "launch.evaluate", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "--samples" in help_run.stdout
    root = _sample_folder(tmp_path, faces.FaceEmbedder(face_model_root))
    args = [
        f"--samples={root}",
        f"--face_model_root={face_model_root}",
        f"--fits={root / 'fits'}",
        "--det_size=128,128",
    ]
    run = subprocess.run([sys.executable, "-m", "launch.evaluate", *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "found 1/2" in run.stdout
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["face_identity"]["num_not_found"] == 1
    assert metrics["images"]["image_seed0.png"]["face_identity"]["people"][1]["similarity"] is None
    bad = subprocess.run(
        [sys.executable, "-m", "launch.evaluate", f"--samples={tmp_path / 'nope'}", f"--fits={root / 'fits'}"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "evaluate:" in bad.stderr and "settings.json does not exist" in bad.stderr
