# ruff: noqa: F811  (the fixtures imported from tests.fixtures_body are used as arguments)
"""The two-pass SceneRenderer gives exactly the maps of the pyrender renderer it replaced
(tests/reference_render.py): several multi-person scenes, a non-square image, 9 people (a second silhouette
channel) and 40 meshes (two silhouette passes); vertex normals and depth edges against the old numpy code."""

import numpy as np
import pytest
import trimesh

from data_prep import render
from data_prep.fits import PersonFit, multihmr_intrinsics
from data_prep.scenes import posed_synthetic_scene
from tests import reference_render
from tests.fixtures_body import body_model, standin_model_root  # noqa: F401  (pytest fixtures)

WIDTH, HEIGHT = 192, 160
MAPS = ("depth", "normal", "instance", "amodal", "occlusion", "depth_edges")


def _crowd(body, num: int) -> list:
    """`num` people in two rows, overlapping."""
    meshes = []
    for i in range(num):
        rotvec = np.zeros((53, 3))
        rotvec[0] = (np.pi, 0.0, 0.0)
        rotvec[16, 2], rotvec[17, 2] = -1.0 + 0.1 * i, 1.0
        transl = np.array([-1.2 + 0.3 * i, -0.4 + 0.05 * (i % 3), 3.5 + 0.4 * (i % 2)])
        verts, _ = body.posed(PersonFit(np.zeros(10), np.zeros(10), rotvec, transl))
        meshes.append((verts, body.faces))
    return meshes


def _spheres(num: int) -> list:
    rng = np.random.default_rng(3)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.25)
    centres = np.stack([rng.uniform(-1, 1, num), rng.uniform(-0.8, 0.8, num), rng.uniform(3, 5, num)], 1)
    return [(sphere.vertices + centre, sphere.faces) for centre in centres]


@pytest.fixture(scope="module")
def scenes(body_model):
    """(meshes, joints or None, K) per scene."""
    K = multihmr_intrinsics(WIDTH, HEIGHT)
    out = []
    for seed in range(4):
        fit, _, posed = posed_synthetic_scene(np.random.default_rng(seed), body_model, WIDTH, HEIGHT, 2, 4)
        out.append(([(verts, body_model.faces) for verts, _ in posed], [joints for _, joints in posed], fit.K))
    out.append((_crowd(body_model, 9), None, K))
    out.append((_spheres(40), None, K))
    return out


@pytest.fixture(scope="module")
def both(scenes):
    """(reference maps, new maps) per scene; one GL context at a time.

    The reference's face fields: the (unchanged) keypoint code applied to the reference's instance map."""
    with reference_render.ReferenceRenderer(WIDTH, HEIGHT) as reference:
        expected = [reference.render(meshes, K) for meshes, _, K in scenes]
    with render.SceneRenderer(WIDTH, HEIGHT) as renderer:
        got = [renderer.render(meshes, K, joints) for meshes, joints, K in scenes]
        for maps, (meshes, joints, K) in zip(expected, scenes):
            maps.update(renderer.face_keypoints(K, maps["instance"], joints, len(meshes)))
    return expected, got


def test_every_map_is_identical_to_the_pyrender_renderer(scenes, both):
    for index, (expected, got) in enumerate(zip(*both)):
        for name in MAPS:
            assert got[name].dtype == expected[name].dtype, (index, name)
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"scene {index}: {name}")
    occluded = [int(e["occlusion"].sum()) for e in both[0]]
    assert sum(o > 0 for o in occluded) >= 4, occluded  # the comparison covers real overlaps
    assert both[0][4]["amodal"].shape[0] == 9 and both[0][5]["amodal"].shape[0] == 40


def test_face_fields_are_identical_too(scenes, both):
    for expected, got in zip(*both):
        np.testing.assert_array_equal(got["face_kps"], expected["face_kps"])
        np.testing.assert_array_equal(got["face_visible"], expected["face_visible"])
    visible = [bool(got["face_visible"].any()) for got, (_, joints, _) in zip(both[1], scenes) if joints is not None]
    assert any(visible)


def test_vertex_normals_equal_the_add_at_version(body_model):
    rng = np.random.default_rng(0)
    for _ in range(3):
        person = PersonFit(rng.normal(size=10), rng.normal(size=10), rng.normal(0, 0.3, (53, 3)), [0, 0, 3.0])
        verts, _ = body_model.posed(person)
        faces = body_model.faces[(np.diff(np.sort(body_model.faces, 1), axis=1) > 0).all(1)]
        np.testing.assert_array_equal(
            render.vertex_normals(verts, faces), reference_render.vertex_normals(verts, faces)
        )


@pytest.mark.parametrize("seed", range(4))
def test_depth_edges_equal_the_full_image_version(seed):
    rng = np.random.default_rng(seed)
    instance = np.zeros((40, 56), np.uint8)
    if seed:  # seed 0: no foreground at all
        top, left = rng.integers(0, 20), rng.integers(0, 30)
        instance[top : top + 19, left : left + 25] = rng.integers(0, 4, (19, 25))
        instance[0, rng.integers(56)] = 1  # foreground on the border
    depth = np.where(instance > 0, rng.uniform(2.0, 2.3, instance.shape), 0).astype(np.float32)
    np.testing.assert_array_equal(
        render.depth_edges(instance, depth, 0.05), reference_render.depth_edges(instance, depth, 0.05)
    )
