"""The map renderer as it was before the two-pass renderer (kept as the reference of test_render_reference).

pyrender, one pass per field: a segmentation pass for depth + instance, a pass with a normal-writing
segmentation shader, one pass per person alone for its amodal silhouette; numpy depth edges and vertex
normals as they were computed then. Only the maps that the fast path computes differently are here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

_NORMAL_VERT = """#version 330 core
layout(location = 0) in vec3 position;
layout(location = NORMAL_LOC) in vec3 normal;
layout(location = INST_M_LOC) in mat4 inst_m;
uniform mat4 P;
uniform mat4 V;
uniform mat4 M;
out vec3 cam_normal;
void main()
{
    mat4 model_view = V * M * inst_m;
    gl_Position = P * model_view * vec4(position, 1.0);
    cam_normal = mat3(transpose(inverse(model_view))) * normal;
}
"""
_NORMAL_FRAG = """#version 330 core
in vec3 cam_normal;
uniform vec3 color;
out vec4 frag_color;
void main()
{
    frag_color = vec4(normalize(cam_normal) * 0.5 + 0.5, 1.0);
    if (color.r < -1.0) { frag_color = vec4(color, 1.0); }  // keeps the uniform pyrender sets
}
"""


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces].astype(np.float64)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros((len(verts), 3))
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def depth_edges(instance: np.ndarray, depth: np.ndarray, threshold: float) -> np.ndarray:
    z = depth.astype(np.float32)
    edges = np.zeros(instance.shape, bool)
    for axis in (0, 1):
        a = np.take(instance, np.arange(instance.shape[axis] - 1), axis)
        b = np.take(instance, np.arange(1, instance.shape[axis]), axis)
        za = np.take(z, np.arange(z.shape[axis] - 1), axis)
        zb = np.take(z, np.arange(1, z.shape[axis]), axis)
        jump = (a > 0) & (b > 0) & (np.abs(za - zb) > threshold * np.minimum(za, zb))
        edge = (a != b) | jump
        if axis == 0:
            edges[:-1] |= edge
            edges[1:] |= edge
        else:
            edges[:, :-1] |= edge
            edges[:, 1:] |= edge
    return edges.astype(np.uint8)


class ReferenceRenderer:
    """``render(meshes, K)`` -> depth, normal, instance, amodal, occlusion, depth_edges (as SceneRenderer)."""

    def __init__(self, width: int, height: int, znear: float = 0.05, zfar: float = 100.0, threshold: float = 0.05):
        import pyrender
        from pyrender.shader_program import ShaderProgramCache

        self._pyrender = pyrender
        self.width, self.height, self.znear, self.zfar, self.threshold = width, height, znear, zfar, threshold
        self._renderer = pyrender.OffscreenRenderer(width, height)
        self._shader_dir = tempfile.TemporaryDirectory(prefix="reference_shaders_")
        Path(self._shader_dir.name, "segmentation.vert").write_text(_NORMAL_VERT)
        Path(self._shader_dir.name, "segmentation.frag").write_text(_NORMAL_FRAG)
        self._normal_cache = ShaderProgramCache(shader_dir=self._shader_dir.name)

    def __enter__(self) -> ReferenceRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self._renderer.delete()
        self._shader_dir.cleanup()

    def _scene(self, meshes, K):
        pyrender = self._pyrender
        K = np.asarray(K, np.float64)
        scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0), ambient_light=(0.3, 0.3, 0.3))
        nodes = []
        for verts, faces in meshes:
            verts = np.asarray(verts, np.float32)
            faces = np.asarray(faces, np.int64)
            keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
            faces = faces[keep]
            primitive = pyrender.Primitive(
                positions=verts,
                normals=vertex_normals(verts, faces),
                indices=faces.astype(np.uint32),
                mode=pyrender.constants.GLTF.TRIANGLES,
            )
            nodes.append(scene.add(pyrender.Mesh([primitive])))
        camera = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], znear=self.znear, zfar=self.zfar)
        scene.add(camera, pose=np.diag([1.0, -1.0, -1.0, 1.0]))
        return scene, nodes

    def _seg(self, scene, seg_node_map, normals: bool = False):
        flags = self._pyrender.RenderFlags.SEG
        if not normals:
            return self._renderer.render(scene, flags=flags, seg_node_map=seg_node_map)
        inner = self._renderer._renderer
        default_cache = inner._program_cache
        inner._program_cache = self._normal_cache
        try:
            return self._renderer.render(scene, flags=flags, seg_node_map=seg_node_map)
        finally:
            inner._program_cache = default_cache

    def render(self, meshes, K) -> dict[str, np.ndarray]:
        scene, nodes = self._scene(meshes, K)
        seg_map = {node: (i + 1, 0, 0) for i, node in enumerate(nodes)}
        color, depth = self._seg(scene, seg_map)
        instance = np.where(depth > 0, color[..., 0], 0).astype(np.uint8)
        normal_rgb, _ = self._seg(scene, seg_map, normals=True)
        normal = np.where((instance > 0)[..., None], normal_rgb, 0).astype(np.uint8)
        amodal = np.stack([self._seg(scene, {node: (1, 0, 0)})[1] > 0 for node in nodes]).astype(np.uint8)
        return {
            "depth": depth.astype(np.float16),
            "normal": normal,
            "instance": instance,
            "amodal": amodal,
            "occlusion": (amodal.sum(0) >= 2).astype(np.uint8),
            "depth_edges": depth_edges(instance, depth, self.threshold),
        }
