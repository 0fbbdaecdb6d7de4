"""One-z-buffer rendering of all people of a scene into the conditioning maps of DESIGN section 4.

Camera: OpenCV intrinsics K (x right, y down, z forward); the pyrender camera pose is the OpenCV->OpenGL
flip diag(1, -1, -1), as in Multi-HMR's renderer. Pixel convention (pyrender's): pixel (row i, col j)
covers [j, j+1) x [i, i+1) in the continuous coordinates of K, so its centre is (j + 0.5, i + 0.5); the
maps are sampled at pixel centres. ``face_kps`` use the same continuous coordinates (u = fx x / z + cx).

How each field is made (all exact at pixel centres, no anti-aliasing; `data_prep.map_passes` draws them):
- ``depth``, ``normal``, ``instance``: one surface pass with all people in one z-buffer. Depth is metric z
  (pyrender's linearisation of the 24-bit window depth, 0 = background); the normal is the interpolated,
  re-normalised vertex normal in OpenGL camera axes (x right, y up, z toward the viewer) as
  (n + 1) / 2 -> uint8 (vertex normals: area-weighted face normals), background 0; instance = i + 1.
- ``amodal``: person i's silhouette as if rendered alone: one silhouette pass that ORs each person's bit
  into the pixels their (front-facing) triangles cover, depth writes off.
- ``occlusion``: 1 where >= 2 amodal silhouettes overlap.
- ``depth_edges``: for each horizontal and vertical pixel pair, an edge if the instance ids differ
  (background included) or, both foreground, |z1 - z2| > threshold * min(z1, z2); both pixels of an
  edge pair are marked (2 px wide).
- ``face_kps`` (N, 5, 2): projections of right eye = mean of landmarks 95..100 (JOINT_NAMES
  right_eye1..6), left eye = mean of 101..106, nose = joint 55, right mouth corner = 107
  (right_mouth_1), left mouth corner = 113 (left_mouth_1); subject's sides, insightface order.
- ``face_visible`` (N,): all 5 points in front of the camera and inside the image; eye distance
  >= ``min_eye_distance_px``; the face turned to the camera (angle between the head's forward direction,
  ear midpoint (58, 59) -> nose (55), and the direction nose -> camera below ``max_face_angle_deg``);
  and not occluded: ``instance`` at the pixels of at least ``min_visible_keypoints`` points is this person.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

RIGHT_EYE_LANDMARKS = tuple(range(95, 101))
LEFT_EYE_LANDMARKS = tuple(range(101, 107))
NOSE_JOINT = 55
RIGHT_MOUTH_JOINT = 107
LEFT_MOUTH_JOINT = 113
EAR_JOINTS = (58, 59)
NUM_JOINTS_OUT = 127
CAMERA_POSE = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> OpenGL camera axes


@dataclass(frozen=True)
class SquareCrop:
    """Resize (short side -> size) then centre-crop to size x size, as SDXL's add_time_ids record it.

    original_size (H, W) of the source image; crop_top_left (top, left) in the resized image;
    resized_size (h, w); K the intrinsics of the cropped size x size image (render directly with it).
    """

    size: int
    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_top_left: tuple[int, int]
    K: np.ndarray

    @property
    def is_identity(self) -> bool:
        """Whether the source already is size x size (nothing to resize or crop)."""
        return self.original_size == self.resized_size == (self.size, self.size)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize (area filter) and crop an H x W (x C) image to size x size (x C)."""
        import cv2

        if image.shape[:2] != self.original_size:
            raise ValueError(f"image has size {image.shape[:2]}, crop was planned for {self.original_size}")
        h, w = self.resized_size
        resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        top, left = self.crop_top_left
        return np.ascontiguousarray(resized[top : top + self.size, left : left + self.size])


def square_crop(K: np.ndarray, width: int, height: int, size: int) -> SquareCrop:
    """Plan the resize + centre crop of a W x H image with intrinsics K to a size x size square."""
    scale = size / min(width, height)
    w, h = max(size, round(width * scale)), max(size, round(height * scale))
    top, left = (h - size) // 2, (w - size) // 2
    K = np.asarray(K, np.float64)
    K_new = np.diag([w / width, h / height, 1.0]) @ K
    K_new[0, 2] -= left
    K_new[1, 2] -= top
    return SquareCrop(size, (height, width), (h, w), (top, left), K_new.astype(np.float32))


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals (zero-area faces contribute nothing).

    Sums in float64, corner 0 of every face in face order, then corner 1, then corner 2."""
    corner = np.asarray(verts, np.float64)[faces.T]  # (3, F, 3)
    face_n = np.cross(corner[1] - corner[0], corner[2] - corner[0])
    vertex_ids, weights = faces.T.reshape(-1), np.tile(face_n, (3, 1))
    normals = np.stack([np.bincount(vertex_ids, weights[:, k], minlength=len(verts)) for k in range(3)], axis=1)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def face_keypoints_3d(joints: np.ndarray) -> np.ndarray:
    """(127, 3) SMPL-X output joints -> (5, 3): right eye, left eye, nose, right / left mouth corner."""
    return np.stack(
        [
            joints[list(RIGHT_EYE_LANDMARKS)].mean(0),
            joints[list(LEFT_EYE_LANDMARKS)].mean(0),
            joints[NOSE_JOINT],
            joints[RIGHT_MOUTH_JOINT],
            joints[LEFT_MOUTH_JOINT],
        ]
    )


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame points -> (..., 2) continuous pixel coordinates u = fx x / z + cx."""
    points = np.asarray(points, np.float64)
    uvw = points @ np.asarray(K, np.float64).T
    return uvw[..., :2] / uvw[..., 2:3]


def linear_depth(window_depth: np.ndarray, znear: float, zfar: float) -> np.ndarray:
    """Window depth float32 in [0, 1] (1 = nothing drawn) -> float32 metric z, 0 = background (pyrender's
    formula, in float32)."""
    ndc = 2.0 * np.asarray(window_depth, np.float32) - 1.0
    z = (2.0 * znear * zfar) / (zfar + znear - ndc * (zfar - znear))
    return np.where(window_depth == 1.0, np.float32(0.0), z)


def foreground_box(instance: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of ``instance > 0`` grown by one pixel (inside the image); None if there is none."""
    rows, cols = np.flatnonzero(instance.any(1)), np.flatnonzero(instance.any(0))
    if not len(rows):
        return None
    return np.s_[max(rows[0] - 1, 0) : rows[-1] + 2, max(cols[0] - 1, 0) : cols[-1] + 2]


def depth_edges(instance: np.ndarray, depth: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 H x W occlusion-boundary map (see module docstring).

    Only pairs with a foreground pixel can be edges: the work is done inside `foreground_box`."""
    edges = np.zeros(instance.shape, np.uint8)
    box = foreground_box(instance)
    if box is None:
        return edges
    ids, z, out = instance[box], np.asarray(depth, np.float32)[box], edges[box]
    pairs = (  # (first, second) pixel of every vertical pair, then of every horizontal pair
        (np.s_[:-1], np.s_[1:]),
        (np.s_[:, :-1], np.s_[:, 1:]),
    )
    for first, second in pairs:
        a, b, za, zb = ids[first], ids[second], z[first], z[second]
        jump = (a > 0) & (b > 0) & (np.abs(za - zb) > threshold * np.minimum(za, zb))
        edge = (a != b) | jump
        out[first] |= edge
        out[second] |= edge
    return edges


class SceneRenderer:
    """Offscreen renderer of W x H conditioning maps (two GL passes, `data_prep.map_passes`) and of shaded
    synthetic photos (pyrender); reuse it for many scenes of that size. One GL context (pyrender's
    offscreen renderer's) serves both.

    ``platform`` sets PYOPENGL_PLATFORM ('egl' default, or 'osmesa'); it must be chosen before OpenGL is
    first imported in the process, so a conflicting value raises.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        platform: str = "egl",
        znear: float = 0.05,
        zfar: float = 100.0,
        depth_edge_threshold: float = 0.05,
        max_face_angle_deg: float = 75.0,
        min_visible_keypoints: int = 4,
        min_eye_distance_px: float = 2.0,
    ) -> None:
        if platform not in ("egl", "osmesa"):
            raise ValueError(f"platform must be 'egl' or 'osmesa', got {platform!r}")
        current = os.environ.get("PYOPENGL_PLATFORM")
        if "OpenGL" in sys.modules and current != platform:
            raise RuntimeError(
                f"OpenGL was already imported with PYOPENGL_PLATFORM={current!r}; set it to {platform!r} "
                "before anything imports OpenGL / pyrender"
            )
        os.environ["PYOPENGL_PLATFORM"] = platform
        import pyrender

        from data_prep.map_passes import MapPasses

        self._pyrender = pyrender
        self.width, self.height = int(width), int(height)
        self.znear, self.zfar = znear, zfar
        self.depth_edge_threshold = depth_edge_threshold
        self.max_face_angle_deg = max_face_angle_deg
        self.min_visible_keypoints = min_visible_keypoints
        self.min_eye_distance_px = min_eye_distance_px
        self._renderer = pyrender.OffscreenRenderer(self.width, self.height)  # owns the GL context; shades
        self._check_size_fits_the_gl_framebuffer()
        with self._context():
            self._passes = MapPasses(self.width, self.height)

    # -- resources -------------------------------------------------------------------------------------
    def _check_size_fits_the_gl_framebuffer(self) -> None:
        """Raises (releasing the context) when width or height exceeds this OpenGL's framebuffer limits, which
        would otherwise fail deep inside pyrender's first render."""
        from OpenGL import GL

        limit = min(
            int(GL.glGetIntegerv(GL.GL_MAX_RENDERBUFFER_SIZE)), *map(int, GL.glGetIntegerv(GL.GL_MAX_VIEWPORT_DIMS))
        )
        if max(self.width, self.height) > limit:
            self._renderer.delete()
            self._renderer = None
            raise ValueError(
                f"SceneRenderer: width={self.width}, height={self.height} exceed this OpenGL's largest framebuffer "
                f"side {limit} (GL_MAX_RENDERBUFFER_SIZE / GL_MAX_VIEWPORT_DIMS)"
            )

    def close(self) -> None:
        """Release the GL context and everything in it."""
        if self._renderer is not None:
            with self._context():
                self._passes.delete()
            self._renderer.delete()
            self._renderer = None

    def __enter__(self) -> SceneRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        """Make the offscreen renderer's GL context current (pyrender makes it current only inside its own
        ``render``)."""
        platform = self._renderer._platform
        platform.make_current()
        try:
            yield
        finally:
            platform.make_uncurrent()

    # -- scene construction ----------------------------------------------------------------------------
    def _camera(self, K: np.ndarray):
        K = np.asarray(K, np.float64)
        if K.shape != (3, 3) or abs(K[0, 1]) > 1e-6:
            raise ValueError(f"K must be a (3, 3) intrinsics matrix without skew, got {K.tolist()}")
        return self._pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], znear=self.znear, zfar=self.zfar)

    def _scene(self, meshes, K, materials):
        pyrender = self._pyrender
        scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0), ambient_light=(0.3, 0.3, 0.3))
        for (verts, faces, normals), material in zip(_surfaces(meshes), materials):
            primitive = pyrender.Primitive(
                positions=verts,
                normals=normals,
                indices=faces.astype(np.uint32),
                material=material,
                mode=pyrender.constants.GLTF.TRIANGLES,
            )
            scene.add(pyrender.Mesh([primitive]))
        scene.add(self._camera(K), pose=CAMERA_POSE)
        return scene

    # -- public ----------------------------------------------------------------------------------------
    def render(
        self,
        meshes: Sequence[tuple[np.ndarray, np.ndarray]],
        K: np.ndarray,
        joints: Sequence[np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Render N people (camera-frame verts (V, 3), faces (F, 3)) into DESIGN section 4's fields.

        joints: per person (127, 3) camera-frame SMPL-X output joints, for ``face_kps``/``face_visible``
        (zeros / False when None). Returns depth f16 HxW, normal u8 HxWx3, instance u8 HxW, amodal u8 NxHxW,
        occlusion u8 HxW, depth_edges u8 HxW, face_kps f32 Nx5x2, face_visible bool N.
        """
        num = len(meshes)
        if num == 0 or num > 255:
            raise ValueError(f"need 1..255 meshes, got {num}")
        if joints is not None and len(joints) != num:
            raise ValueError(f"got {len(joints)} joint arrays for {num} meshes")
        P = self._camera(K).get_projection_matrix(self.width, self.height)
        V = np.linalg.inv(CAMERA_POSE)  # world (= camera, OpenCV axes) -> OpenGL camera, as pyrender's
        surfaces = _surfaces(meshes)
        with self._context():
            buffers = [self._passes.upload(verts, normals, faces) for verts, faces, normals in surfaces]
            try:
                normal, instance, window_depth = self._passes.surface(buffers, P, V)
                amodal = self._passes.silhouettes(buffers, P, V)
            finally:
                for mesh in buffers:
                    mesh.delete()
        depth, depth16 = np.zeros(instance.shape, np.float32), np.zeros(instance.shape, np.float16)
        box = foreground_box(instance)  # outside it depth is 0 (nothing was drawn)
        if box is not None:
            depth[box] = linear_depth(window_depth[box], self.znear, self.zfar)
            depth16[box] = depth[box]
        result = {
            "depth": depth16,
            "normal": normal,
            "instance": instance,
            "amodal": amodal,
            "occlusion": (amodal.sum(0, dtype=np.uint8) >= 2).astype(np.uint8),
            "depth_edges": depth_edges(instance, depth, self.depth_edge_threshold),
        }
        result.update(self.face_keypoints(K, instance, joints, num))
        return result

    def face_keypoints(self, K, instance, joints, num) -> dict[str, np.ndarray]:
        """``face_kps`` (N, 5, 2) float32 and ``face_visible`` (N,) bool (see module docstring)."""
        kps = np.zeros((num, 5, 2), np.float32)
        visible = np.zeros(num, bool)
        if joints is None:
            return {"face_kps": kps, "face_visible": visible}
        cos_max = np.cos(np.radians(self.max_face_angle_deg))
        for i, person_joints in enumerate(joints):
            person_joints = np.asarray(person_joints, np.float64)
            if person_joints.shape != (NUM_JOINTS_OUT, 3):
                raise ValueError(f"joints of person {i} have shape {person_joints.shape}, expected (127, 3)")
            points = face_keypoints_3d(person_joints)
            in_front = bool(np.all(points[:, 2] > self.znear))
            uv = project(points, K) if in_front else np.zeros((5, 2))
            kps[i] = uv
            if not in_front:
                continue
            inside = np.all((uv[:, 0] >= 0) & (uv[:, 0] < self.width) & (uv[:, 1] >= 0) & (uv[:, 1] < self.height))
            big_enough = np.linalg.norm(uv[0] - uv[1]) >= self.min_eye_distance_px
            forward = person_joints[NOSE_JOINT] - person_joints[list(EAR_JOINTS)].mean(0)
            to_camera = -person_joints[NOSE_JOINT]
            cos = forward @ to_camera / max(np.linalg.norm(forward) * np.linalg.norm(to_camera), 1e-12)
            if not (inside and big_enough and cos > cos_max):
                continue
            cols, rows = np.floor(uv).astype(int).T
            seen = int(np.sum(instance[rows, cols] == i + 1))
            visible[i] = seen >= self.min_visible_keypoints
        return {"face_kps": kps, "face_visible": visible}

    def shade(
        self,
        meshes: Sequence[tuple[np.ndarray, np.ndarray]],
        K: np.ndarray,
        colors: Sequence[tuple[float, float, float]],
        background: np.ndarray,
        light_direction: Sequence[float] = (0.3, -0.6, 1.0),
    ) -> np.ndarray:
        """Lit RGB uint8 H x W x 3 "photo": per-person base colours (RGB in [0, 1]), one directional light
        travelling along ``light_direction`` (camera/OpenCV frame) plus ambient, composited over
        ``background`` (uint8 H x W x 3)."""
        pyrender = self._pyrender
        materials = [
            pyrender.MetallicRoughnessMaterial(baseColorFactor=(*c, 1.0), metallicFactor=0.0, roughnessFactor=0.7)
            for c in colors
        ]
        scene = self._scene(meshes, K, materials)
        d = np.asarray(light_direction, np.float64)
        d = d / np.linalg.norm(d)
        # pyrender's directional light shines along the node's local -z axis.
        z_axis = -d
        x_axis = np.cross([0.0, 1.0, 0.0], z_axis)
        x_axis = x_axis / np.linalg.norm(x_axis) if np.linalg.norm(x_axis) > 1e-6 else np.array([1.0, 0, 0])
        pose = np.eye(4)
        pose[:3, :3] = np.stack([x_axis, np.cross(z_axis, x_axis), z_axis], 1)
        scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=3.5), pose=pose)
        rgba, _ = self._renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        out = rgba[..., :3].astype(np.float32) + background.astype(np.float32) * (1 - alpha)  # premultiplied
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _surfaces(meshes: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per mesh: verts float32 (V, 3), faces int64 (F', 3) without degenerate triangles, vertex normals."""
    surfaces = []
    for i, (verts, faces) in enumerate(meshes):
        verts = np.asarray(verts, np.float32)
        faces = np.asarray(faces, np.int64)
        if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"mesh {i}: expected verts (V, 3) and faces (F, 3), got {verts.shape}, {faces.shape}")
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        faces = faces[keep]
        surfaces.append((verts, faces, vertex_normals(verts, faces)))
    return surfaces
