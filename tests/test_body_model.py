# ruff: noqa: F811  (the fixtures imported from tests.fixtures_body are used as arguments)
"""The stand-in SMPL-X file, BodyModel.posed (Multi-HMR placement), and the fit file format."""

import json

import numpy as np
import pytest
import smplx
import torch
from smplx.joint_names import JOINT_NAMES
from smplx.vertex_ids import vertex_ids

from data_prep.body_model import axis_angle_to_matrix, write_standin_smplx_model
from data_prep.fits import FitError, PersonFit, SceneFit, load_scene_fit, multihmr_intrinsics, save_scene_fit
from data_prep.scenes import posed_synthetic_scene
from data_prep.standin_smplx import SMPLX_PARENTS
from tests.fixtures_body import body_model, standin_model_root  # noqa: F401  (pytest fixtures)

CONTRACT = {
    "v_template": (10475, 3),
    "f": (20908, 3),
    "J_regressor": (55, 10475),
    "weights": (10475, 55),
    "kintree_table": (2, 55),
    "shapedirs": (10475, 3, 400),
    "posedirs": (10475, 3, 486),
    "hands_componentsl": (45, 45),
    "hands_componentsr": (45, 45),
    "hands_meanl": (45,),
    "hands_meanr": (45,),
    "lmk_faces_idx": (51,),
    "lmk_bary_coords": (51, 3),
    "dynamic_lmk_faces_idx": (79, 17),
    "dynamic_lmk_bary_coords": (79, 17, 3),
}


def _person(betas=None, rotvec=None, transl=(0.0, 0.0, 0.0)):
    return PersonFit(
        np.zeros(10) if betas is None else betas,
        np.zeros(10),
        np.zeros((53, 3)) if rotvec is None else rotvec,
        np.asarray(transl),
    )


@pytest.fixture(scope="module")
def model_arrays(standin_model_root):
    with np.load(standin_model_root / "smplx" / "SMPLX_NEUTRAL.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def test_contract_keys_and_shapes(model_arrays):
    assert set(model_arrays) == set(CONTRACT)
    for key, shape in CONTRACT.items():
        assert model_arrays[key].shape == shape, key
    np.testing.assert_array_equal(model_arrays["kintree_table"][0], SMPLX_PARENTS)
    np.testing.assert_allclose(model_arrays["J_regressor"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(model_arrays["weights"].sum(1), 1.0, atol=1e-5)
    faces = model_arrays["f"]
    assert faces.min() >= 0 and faces.max() < 10475
    np.testing.assert_allclose(model_arrays["lmk_bary_coords"].sum(1), 1.0, atol=1e-5)


def test_mesh_is_closed_apart_from_zero_area_padding(model_arrays):
    faces = model_arrays["f"]
    real = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])]
    edges = np.sort(np.concatenate([real[:, [0, 1]], real[:, [1, 2]], real[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)  # every edge shared by exactly two triangles
    assert len(np.unique(real)) == 10475  # every vertex is used


def test_deterministic_bytes(standin_model_root, tmp_path):
    again = write_standin_smplx_model(tmp_path)
    assert again.read_bytes() == (standin_model_root / "smplx" / "SMPLX_NEUTRAL.npz").read_bytes()


def test_smplx_package_loads_it_and_landmarks_sit_on_the_face(body_model):
    verts, joints = body_model.canonical(_person())
    assert verts.shape == (10475, 3) and joints.shape == (127, 3)
    name = {n: i for i, n in enumerate(JOINT_NAMES)}
    nose, reye, leye = joints[name["nose"]], joints[name["right_eye"]], joints[name["left_eye"]]
    np.testing.assert_allclose(nose, verts[vertex_ids["smplx"]["nose"]], atol=1e-6)
    top, bottom = verts[:, 1].max(), verts[:, 1].min()
    head_y = joints[name["head"]][1]
    # Canonical frame: y up, x = subject's left, z = facing direction.
    assert nose[2] > reye[2] - 0.05 and nose[2] > joints[name["head"]][2] + 0.08
    assert reye[0] < 0 < leye[0] and abs(reye[1] - leye[1]) < 1e-3 and reye[1] > nose[1] > head_y
    assert top - 0.25 < reye[1] < top
    assert joints[name["right_ear"]][0] < reye[0] and joints[name["left_ear"]][0] > leye[0]
    for tip in ("left_thumb", "left_index", "left_middle", "left_ring", "left_pinky"):
        assert joints[name[tip]][0] > joints[name["left_wrist"]][0] + 0.05
    for toe in ("left_big_toe", "right_big_toe"):
        assert joints[name[toe]][1] < bottom + 0.05 and joints[name[toe]][2] > 0.1
    rmouth, lmouth = joints[name["right_mouth_1"]], joints[name["left_mouth_1"]]
    assert rmouth[0] < 0 < lmouth[0] and head_y < rmouth[1] < nose[1] and rmouth[2] > 0.05
    right_ring = joints[name["right_eye1"] : name["right_eye6"] + 1].mean(0)
    assert np.linalg.norm(right_ring - reye) < 0.01


def test_beta0_height_monotonic_beta1_girth(body_model):
    heights, girths = [], []
    for value in (-2.0, -1.0, 0.0, 1.0, 2.0):
        v0, _ = body_model.canonical(_person(betas=np.eye(10)[0] * value))
        heights.append(np.ptp(v0[:, 1]))
        v1, _ = body_model.canonical(_person(betas=np.eye(10)[1] * value))
        waist = v1[np.abs(v1[:, 1] - 0.05) < 0.02]  # a horizontal slice through the belly
        girths.append(np.ptp(waist[:, 0]) + np.ptp(waist[:, 2]))
    assert np.all(np.diff(heights) > 0.02)
    assert np.all(np.diff(girths) > 0.01)


def test_posed_places_head_at_transl_and_rotates_rigidly(body_model):
    rng = np.random.default_rng(0)
    rotvec = rng.normal(0, 0.2, (53, 3))
    rotvec[0] = [2.5, 0.4, -0.3]
    person = _person(betas=rng.normal(0, 1, 10), rotvec=rotvec, transl=(0.3, -0.2, 4.0))
    verts, joints = body_model.posed(person)
    np.testing.assert_allclose(joints[15], person.transl, atol=1e-5)
    # Independent: smplx's own forward with identity orientation, then R (x - head) + transl.
    model = body_model._model
    with torch.no_grad():
        out = model(
            betas=torch.tensor(person.betas)[None],
            expression=torch.zeros(1, 10),
            body_pose=torch.tensor(person.rotvec[1:22]).reshape(1, -1),
            left_hand_pose=torch.tensor(person.rotvec[22:37]).reshape(1, -1),
            right_hand_pose=torch.tensor(person.rotvec[37:52]).reshape(1, -1),
            jaw_pose=torch.tensor(person.rotvec[52])[None],
        )
    canon = out.vertices[0].double().numpy()
    canon_joints = out.joints[0].double().numpy()
    rotation = torch.tensor(axis_angle_to_matrix(rotvec[0]))
    r_independent = smplx.lbs.batch_rodrigues(torch.tensor(rotvec[0:1])).double()[0]
    np.testing.assert_allclose(rotation.numpy(), r_independent.numpy(), atol=1e-6)
    expected = (canon - canon_joints[15]) @ r_independent.numpy().T + person.transl
    np.testing.assert_allclose(verts, expected, atol=1e-4)
    # The pelvis keeps its offset from the head, rotated: rotation about the pelvis, then head -> transl.
    np.testing.assert_allclose(
        joints[0] - joints[15], r_independent.numpy() @ (canon_joints[0] - canon_joints[15]), atol=1e-5
    )


def test_posed_synthetic_scene_gives_exactly_the_posed_bodies(body_model):
    """Each person is posed once (placement and final mesh share the forward), bit-identical to posing the
    final fit's people again."""
    for seed in range(3):
        fit, _, posed = posed_synthetic_scene(np.random.default_rng(seed), body_model, 256, 192, 2, 4)
        assert len(posed) == fit.num_people
        for person, (verts, joints) in zip(fit.people, posed):
            expected_verts, expected_joints = body_model.posed(person)
            assert verts.dtype == joints.dtype == np.float32
            np.testing.assert_array_equal(verts, expected_verts)
            np.testing.assert_array_equal(joints, expected_joints)


def test_fit_roundtrip_npz_json(tmp_path):
    rng = np.random.default_rng(1)
    people = tuple(
        PersonFit(rng.normal(size=10), rng.normal(size=10), rng.normal(size=(53, 3)), rng.normal(size=3))
        for _ in range(2)
    )
    fit = SceneFit(people, multihmr_intrinsics(640, 480), 640, 480)
    np.testing.assert_allclose(fit.K[0, 0], 640 / (2 * np.tan(np.radians(30))), rtol=1e-6)
    assert tuple(fit.K[:2, 2]) == (320.0, 240.0)
    loaded = load_scene_fit(save_scene_fit(tmp_path / "a.npz", fit))
    as_json = tmp_path / "a.json"
    with np.load(tmp_path / "a.npz") as data:
        as_json.write_text(json.dumps({k: data[k].tolist() for k in data.files}))
    for other in (loaded, load_scene_fit(as_json)):
        assert (other.width, other.height) == (640, 480) and other.num_people == 2
        for a, b in zip(fit.people, other.people):
            np.testing.assert_allclose(a.rotvec, b.rotvec)
            np.testing.assert_allclose(a.transl, b.transl)


def _write(path, **overrides):
    arrays = {
        "K": multihmr_intrinsics(64, 64),
        "image_size": np.array([64, 64]),
        "betas": np.zeros((2, 10)),
        "expression": np.zeros((2, 10)),
        "rotvec": np.zeros((2, 53, 3)),
        "transl": np.ones((2, 3)),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"betas": None}, "missing key 'betas'"),
        ({"betas": np.zeros((2, 11))}, "person 0 field 'betas' has shape (11,), expected (10,)"),
        ({"transl": np.array([[0, 0, 1.0], [np.nan, 0, 1]])}, "person 1 field 'transl' contains NaN"),
        ({"rotvec": np.full((2, 53, 3), np.inf)}, "person 0 field 'rotvec' contains NaN or inf"),
        (
            {
                k: np.zeros((0, *s))
                for k, s in [("betas", (10,)), ("expression", (10,)), ("rotvec", (53, 3)), ("transl", (3,))]
            },
            "zero people",
        ),
        ({"K": np.eye(2)}, "field 'K' has shape (2, 2)"),
    ],
)
def test_bad_fit_files_raise_fiterror_naming_file_and_field(tmp_path, overrides, message):
    path = _write(tmp_path / "0001.npz", **overrides)
    with pytest.raises(FitError) as info:
        load_scene_fit(path)
    assert str(path) in str(info.value) and message in str(info.value)
