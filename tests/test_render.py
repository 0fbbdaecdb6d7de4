# ruff: noqa: F811  (the fixtures imported from tests.fixtures_body are used as arguments)
"""SceneRenderer against independent computations: ray casts, analytic sphere, separate renders, numpy
projections."""

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from data_prep.fits import PersonFit, multihmr_intrinsics
from data_prep.render import SceneRenderer, depth_edges, square_crop
from tests.fixtures_body import body_model, standin_model_root  # noqa: F401  (pytest fixtures)

SIZE = 128
K = multihmr_intrinsics(SIZE, SIZE)
FACING_CAMERA = (np.pi, 0.0, 0.0)
FACING_AWAY = (0.0, 0.0, np.pi)


@pytest.fixture(scope="module")
def renderer():
    with SceneRenderer(SIZE, SIZE) as r:
        yield r


def _posed(body, x, z, orient=FACING_CAMERA, arms_down=True):
    rotvec = np.zeros((53, 3))
    rotvec[0] = orient
    if arms_down:
        rotvec[16, 2], rotvec[17, 2] = -1.2, 1.2
    verts, joints = body.posed(PersonFit(np.zeros(10), np.zeros(10), rotvec, np.array([x, -0.5, z])))
    return (verts, body.faces), joints


@pytest.fixture(scope="module")
def two_people(body_model, renderer):
    near, near_joints = _posed(body_model, -0.12, 3.0)
    far, far_joints = _posed(body_model, 0.15, 3.6)
    meshes, joints = [near, far], [near_joints, far_joints]
    return meshes, joints, renderer.render(meshes, K, joints)


def _pixel_rays(rows, cols):
    pix = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], 1)
    return pix @ np.linalg.inv(K.astype(np.float64)).T  # z component 1: ray parameter = depth


def _ray_cast_depth(triangles, dirs):
    """Nearest hit (Moller-Trumbore, rays from the origin with direction z = 1) -> depth; 0 on a miss.

    (trimesh.ray needs the optional rtree package, which the pinned stack does not install.)"""
    v0, e1, e2 = triangles[:, 0], triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    depth = np.zeros(len(dirs))
    for ray, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = -v0
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        depth[ray] = t[hit].min() if hit.any() else 0.0
    return depth


def test_fields_dtypes_and_shapes(two_people):
    _, _, out = two_people
    expected = {
        "depth": (np.float16, (SIZE, SIZE)),
        "normal": (np.uint8, (SIZE, SIZE, 3)),
        "instance": (np.uint8, (SIZE, SIZE)),
        "amodal": (np.uint8, (2, SIZE, SIZE)),
        "occlusion": (np.uint8, (SIZE, SIZE)),
        "depth_edges": (np.uint8, (SIZE, SIZE)),
        "face_kps": (np.float32, (2, 5, 2)),
        "face_visible": (np.bool_, (2,)),
    }
    assert set(out) == set(expected)
    for key, (dtype, shape) in expected.items():
        assert out[key].dtype == dtype and out[key].shape == shape, key
    assert set(np.unique(out["instance"])) == {0, 1, 2}
    assert np.all((out["depth"] > 0) == (out["instance"] > 0))
    assert np.all(out["normal"][out["instance"] == 0] == 0)


def test_depth_matches_ray_cast(two_people):
    meshes, _, out = two_people
    inst = out["instance"]
    rng = np.random.default_rng(0)
    interior = ndimage.binary_erosion(inst > 0, iterations=2)
    far_bg = ~ndimage.binary_dilation(inst > 0, iterations=2)
    picks = []
    for mask, count in ((interior, 40), (far_bg, 10)):
        rows, cols = np.nonzero(mask)
        choice = rng.choice(len(rows), count, replace=False)
        picks.append((rows[choice], cols[choice]))
    rows, cols = np.concatenate([p[0] for p in picks]), np.concatenate([p[1] for p in picks])
    verts = np.concatenate([v for v, _ in meshes]).astype(np.float64)
    faces = np.concatenate([f + i * len(meshes[0][0]) for i, (_, f) in enumerate(meshes)])
    expected = _ray_cast_depth(verts[faces], _pixel_rays(rows, cols))
    got = out["depth"][rows, cols].astype(np.float64)
    assert np.all(expected[:40] > 0) and np.all(expected[40:] == 0)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-3)


def test_sphere_normals_match_analytic(renderer):
    centre, radius = np.array([0.1, -0.05, 2.0]), 0.5
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    out = renderer.render([(sphere.vertices + centre, sphere.faces)], K)
    mask = ndimage.binary_erosion(out["instance"] == 1, iterations=2)
    rows, cols = np.nonzero(mask)
    d = _pixel_rays(rows, cols)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = d @ centre
    t = b - np.sqrt(b**2 - (centre @ centre - radius**2))  # nearest ray-sphere intersection
    n_cv = (t[:, None] * d - centre) / radius
    n_gl = n_cv * np.array([1.0, -1.0, -1.0])  # OpenCV -> OpenGL camera axes
    got = out["normal"][rows, cols].astype(np.float64) / 255.0 * 2.0 - 1.0
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip(np.sum(got * n_gl, 1), -1, 1)))
    assert angle.mean() < 1.0 and angle.max() < 3.0, (angle.mean(), angle.max())
    centre_px = np.round(K @ centre / centre[2]).astype(int)[:2]  # facing the camera: (128, 128, 255)
    np.testing.assert_allclose(out["normal"][centre_px[1], centre_px[0]], [128, 128, 255], atol=8)
    assert out["face_kps"].shape == (1, 5, 2) and not out["face_visible"].any()


def test_amodal_occlusion_and_instance_order_match_separate_renders(two_people, renderer):
    meshes, _, out = two_people
    alone = [renderer.render([m], K)["depth"].astype(np.float32) for m in meshes]
    silhouettes = np.stack([d > 0 for d in alone])
    np.testing.assert_array_equal(out["amodal"], silhouettes.astype(np.uint8))
    overlap = silhouettes[0] & silhouettes[1]
    assert overlap.sum() > 20  # the scene really has an occlusion
    np.testing.assert_array_equal(out["occlusion"], overlap.astype(np.uint8))
    nearer = np.where(alone[0] <= alone[1], 1, 2)
    np.testing.assert_array_equal(out["instance"][overlap], nearer[overlap])
    assert np.all(out["instance"][overlap] == 1)  # person 0 stands 0.6 m in front
    masked = np.where(silhouettes, np.stack(alone), np.inf).min(0)
    np.testing.assert_allclose(out["depth"][overlap], masked[overlap], rtol=1e-3)


def test_face_keypoints_are_projected_joints(two_people):
    _, joints, out = two_people
    for person, person_joints in enumerate(joints):
        j = person_joints.astype(np.float64)
        points = np.stack([j[95:101].mean(0), j[101:107].mean(0), j[55], j[107], j[113]])
        u = K[0, 0] * points[:, 0] / points[:, 2] + K[0, 2]
        v = K[1, 1] * points[:, 1] / points[:, 2] + K[1, 2]
        np.testing.assert_allclose(out["face_kps"][person], np.stack([u, v], 1), atol=1e-3)
        kps = out["face_kps"][person]
        assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0]  # subject's right is image-left (frontal)
        assert kps[0, 1] < kps[2, 1] < kps[3, 1]  # eyes above nose above mouth
    assert out["face_visible"].all()


def test_face_visible_false_when_turned_away_or_hidden(body_model, renderer):
    front, front_joints = _posed(body_model, 0.0, 3.0)
    hidden, hidden_joints = _posed(body_model, 0.0, 4.0)  # directly behind: head covered
    away, away_joints = _posed(body_model, 0.7, 3.0, orient=FACING_AWAY)
    out = renderer.render([front, hidden, away], K, [front_joints, hidden_joints, away_joints])
    np.testing.assert_array_equal(out["face_visible"], [True, False, False])


def test_depth_edges_on_synthetic_maps():
    instance = np.ones((6, 8), np.uint8)
    depth = np.full((6, 8), 2.0, np.float32)
    depth[:, 4:] = 3.0  # a 50% jump between columns 3 and 4
    depth[:, :2] = 2.05  # a 2.5% step: below the threshold
    edges = depth_edges(instance, depth, threshold=0.05)
    expected = np.zeros((6, 8), np.uint8)
    expected[:, 3:5] = 1
    np.testing.assert_array_equal(edges, expected)
    instance[0, 0] = 0  # an id change marks both pixels
    edges = depth_edges(instance, depth, threshold=0.05)
    assert edges[0, 0] == edges[0, 1] == edges[1, 0] == 1 and edges[2, 0] == 0


def test_depth_edges_follow_instance_boundaries(two_people):
    _, _, out = two_people
    inst, edges = out["instance"], out["depth_edges"]
    change = inst[:, :-1] != inst[:, 1:]
    assert np.all(edges[:, :-1][change] == 1) and np.all(edges[:, 1:][change] == 1)
    assert np.all(edges[ndimage.binary_erosion(inst == 0, iterations=2)] == 0)


def test_square_crop_moves_projections_consistently():
    K0 = multihmr_intrinsics(640, 480)
    plan = square_crop(K0, 640, 480, 256)
    assert plan.original_size == (480, 640) and plan.resized_size == (256, 341)
    assert plan.crop_top_left == (0, 42)
    point = np.array([0.3, -0.2, 3.0])
    before = (K0 @ point)[:2] / point[2]
    after = (plan.K @ point)[:2] / point[2]
    expected = before * np.array([341 / 640, 256 / 480]) - np.array([42, 0])
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    image = np.zeros((480, 640, 3), np.uint8)
    assert plan.apply(image).shape == (256, 256, 3)
