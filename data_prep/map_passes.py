"""The two OpenGL passes that draw a scene's conditioning maps (used by `data_prep.render.SceneRenderer`).

- surface pass: every mesh in one z-buffer (depth test LESS, back faces culled); the colour target gets the
  interpolated, re-normalised vertex normal in OpenGL camera axes as (n + 1) / 2 in RGB and the mesh's
  instance id (i + 1) in alpha; background (0, 0, 0, 0). Read back: RGBA uint8 and the window-space depth.
- silhouette pass: every mesh with depth writes off (so none hides another) and the colour target in
  bitwise-OR mode; mesh k sets bit k % 8 of channel k // 8, so each pixel ends up holding the set of meshes
  that cover it (32 meshes per pass). A fragment counts where its depth is < 1 (the depth test against
  the cleared buffer), exactly as when the mesh is drawn alone with depth writes on.

Both passes sample at pixel centres, with one shared vertex transform ``gl_Position = (P V) (x, y, z, 1)``.
The surface pass draws into a 4-sample framebuffer with multisampling off and resolves it into a
single-sample one before reading, as pyrender does: Mesa's single-sample path rounds depth differently (by
up to one float16 step on ~0.3% of the foreground), and the resolve keeps depth bit-identical to the
pyrender renderer's. The silhouette pass draws straight into the single-sample framebuffer. Everything
here needs the GL context current; arrays come back in image order (row 0 = top).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from OpenGL import GL
from OpenGL.GL import shaders

MESHES_PER_SILHOUETTE_PASS = 32  # 8 bits x 4 channels of an RGBA8 target
SURFACE_SAMPLES = 4  # as pyrender's main framebuffer

_VERTEX_TRANSFORM = """#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
uniform mat4 P;
uniform mat4 V;
"""
_SURFACE_VERT = (
    _VERTEX_TRANSFORM
    + """out vec3 cam_normal;
void main()
{
    mat4 light_matrix = P * V;
    gl_Position = light_matrix * vec4(position, 1.0);
    cam_normal = mat3(transpose(inverse(V))) * normal;
}
"""
)
_SURFACE_FRAG = """#version 330 core
in vec3 cam_normal;
uniform float instance_value;  // (i + 1) / 255
out vec4 frag_color;
void main()
{
    frag_color = vec4(normalize(cam_normal) * 0.5 + 0.5, instance_value);
}
"""
_SILHOUETTE_VERT = (
    _VERTEX_TRANSFORM
    + """void main()
{
    mat4 light_matrix = P * V;
    gl_Position = light_matrix * vec4(position, 1.0);
}
"""
)
_SILHOUETTE_FRAG = """#version 330 core
uniform vec4 bit;  // one channel = 2^b / 255, the others 0
out vec4 frag_color;
void main()
{
    frag_color = bit;
}
"""
_READ_FORMATS = (GL.GL_RED, GL.GL_RG, GL.GL_RGB, GL.GL_RGBA)


@dataclass
class MeshBuffers:
    """One mesh on the GL side: a vertex array with positions (location 0), normals (1) and indices."""

    vao: int
    buffers: tuple[int, int, int]
    num_indices: int

    def draw(self) -> None:
        GL.glBindVertexArray(self.vao)
        GL.glDrawElements(GL.GL_TRIANGLES, self.num_indices, GL.GL_UNSIGNED_INT, ctypes.c_void_p(0))

    def delete(self) -> None:
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteBuffers(3, list(self.buffers))


class MapPasses:
    """W x H framebuffers (RGBA8 + 24-bit depth; single-sample, and 4-sample for the surface pass) and the
    programs of the two passes.

    Create and use it with the GL context current; ``delete()`` releases it.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = int(width), int(height)
        self._surface = _program(_SURFACE_VERT, _SURFACE_FRAG)
        self._silhouette = _program(_SILHOUETTE_VERT, _SILHOUETTE_FRAG)
        self._framebuffers: list[tuple[int, tuple[int, int]]] = []
        self._target = self._framebuffer(samples=0)
        self._surface_target = self._framebuffer(samples=SURFACE_SAMPLES)

    def _framebuffer(self, samples: int) -> int:
        renderbuffers = tuple(int(b) for b in GL.glGenRenderbuffers(2))
        framebuffer = int(GL.glGenFramebuffers(1))
        self._framebuffers.append((framebuffer, renderbuffers))
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, framebuffer)
        for buffer, storage, attachment in zip(
            renderbuffers, (GL.GL_RGBA8, GL.GL_DEPTH_COMPONENT24), (GL.GL_COLOR_ATTACHMENT0, GL.GL_DEPTH_ATTACHMENT)
        ):
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, buffer)
            GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, samples, storage, self.width, self.height)
            GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, attachment, GL.GL_RENDERBUFFER, buffer)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            self.delete()
            raise RuntimeError(f"a map framebuffer ({samples} samples) is incomplete (status 0x{int(status):x})")
        return framebuffer

    def delete(self) -> None:
        for framebuffer, renderbuffers in self._framebuffers:
            GL.glDeleteFramebuffers(1, [framebuffer])
            GL.glDeleteRenderbuffers(2, list(renderbuffers))
        self._framebuffers = []
        GL.glDeleteProgram(self._surface)
        GL.glDeleteProgram(self._silhouette)

    def upload(self, verts: np.ndarray, normals: np.ndarray, faces: np.ndarray) -> MeshBuffers:
        """Copy verts (V, 3), normals (V, 3) (float32) and faces (F, 3) (uint32) into new GL buffers."""
        vao = int(GL.glGenVertexArrays(1))
        position_buffer, normal_buffer, index_buffer = (int(b) for b in GL.glGenBuffers(3))
        GL.glBindVertexArray(vao)
        for location, buffer, data in ((0, position_buffer, verts), (1, normal_buffer, normals)):
            data = np.ascontiguousarray(data, np.float32)
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, buffer)
            GL.glBufferData(GL.GL_ARRAY_BUFFER, data.nbytes, data, GL.GL_STATIC_DRAW)
            GL.glEnableVertexAttribArray(location)
            GL.glVertexAttribPointer(location, 3, GL.GL_FLOAT, GL.GL_FALSE, 0, ctypes.c_void_p(0))
        indices = np.ascontiguousarray(faces, np.uint32)
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, index_buffer)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, indices.nbytes, indices, GL.GL_STATIC_DRAW)
        GL.glBindVertexArray(0)
        return MeshBuffers(vao, (position_buffer, normal_buffer, index_buffer), int(indices.size))

    def surface(
        self, meshes: Sequence[MeshBuffers], P: np.ndarray, V: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normal RGB uint8 (H, W, 3), instance id uint8 (H, W) (0 = none) and window depth float32 (H, W)
        (1 = nothing drawn)."""
        self._begin(self._surface_target, self._surface, P, V, depth_writes=True)
        GL.glDisable(GL.GL_MULTISAMPLE)
        location = GL.glGetUniformLocation(self._surface, "instance_value")
        for i, mesh in enumerate(meshes):
            GL.glUniform1f(location, (i + 1) / 255.0)
            mesh.draw()
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._surface_target)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._target)
        for buffer_bit, sampling in ((GL.GL_COLOR_BUFFER_BIT, GL.GL_LINEAR), (GL.GL_DEPTH_BUFFER_BIT, GL.GL_NEAREST)):
            GL.glBlitFramebuffer(0, 0, self.width, self.height, 0, 0, self.width, self.height, buffer_bit, sampling)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._target)
        GL.glEnable(GL.GL_MULTISAMPLE)
        normal = self._read(GL.GL_RGB, GL.GL_UNSIGNED_BYTE, np.uint8, 3)  # reading RGB beats slicing RGBA
        instance = np.ascontiguousarray(self._read(GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, np.uint8, 4)[..., 3])
        depth = self._read(GL.GL_DEPTH_COMPONENT, GL.GL_FLOAT, np.float32, 1)
        self._end()
        return normal, instance, depth[..., 0]

    def silhouettes(self, meshes: Sequence[MeshBuffers], P: np.ndarray, V: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8, 1 on the pixels each mesh covers, ignoring the others."""
        out = np.empty((len(meshes), self.height, self.width), np.uint8)
        for start in range(0, len(meshes), MESHES_PER_SILHOUETTE_PASS):
            group = meshes[start : start + MESHES_PER_SILHOUETTE_PASS]
            self._begin(self._target, self._silhouette, P, V, depth_writes=False)
            GL.glEnable(GL.GL_COLOR_LOGIC_OP)
            GL.glLogicOp(GL.GL_OR)
            location = GL.glGetUniformLocation(self._silhouette, "bit")
            for k, mesh in enumerate(group):
                bit = np.zeros(4, np.float32)
                bit[k // 8] = (1 << (k % 8)) / 255.0
                GL.glUniform4fv(location, 1, bit)
                mesh.draw()
            channels = (len(group) + 7) // 8
            bits = self._read(_READ_FORMATS[channels - 1], GL.GL_UNSIGNED_BYTE, np.uint8, channels)
            GL.glDisable(GL.GL_COLOR_LOGIC_OP)
            self._end()
            for k in range(len(group)):
                np.not_equal(bits[..., k // 8] & (1 << (k % 8)), 0, out=out[start + k])
        return out

    # -- pass set-up -----------------------------------------------------------------------------------
    def _begin(self, framebuffer: int, program: int, P: np.ndarray, V: np.ndarray, depth_writes: bool) -> None:
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, framebuffer)
        GL.glViewport(0, 0, self.width, self.height)
        GL.glClearColor(0.0, 0.0, 0.0, 0.0)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthRange(0.0, 1.0)
        GL.glDepthMask(GL.GL_TRUE if depth_writes else GL.GL_FALSE)
        GL.glEnable(GL.GL_CULL_FACE)
        GL.glCullFace(GL.GL_BACK)
        GL.glFrontFace(GL.GL_CCW)
        GL.glDisable(GL.GL_BLEND)
        GL.glPolygonMode(GL.GL_FRONT_AND_BACK, GL.GL_FILL)
        GL.glUseProgram(program)
        for name, matrix in (("P", P), ("V", V)):
            value = np.ascontiguousarray(matrix, np.float32)
            GL.glUniformMatrix4fv(GL.glGetUniformLocation(program, name), 1, GL.GL_TRUE, value)

    def _end(self) -> None:
        GL.glDepthMask(GL.GL_TRUE)
        GL.glUseProgram(0)
        GL.glBindVertexArray(0)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)

    def _read(self, gl_format: int, gl_type: int, dtype: type, channels: int) -> np.ndarray:
        """The single-sample framebuffer as (H, W, channels), row 0 = top of the image."""
        out = np.empty((self.height, self.width, channels), dtype)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        GL.glReadPixels(0, 0, self.width, self.height, gl_format, gl_type, out)
        return out[::-1]


def _program(vertex_source: str, fragment_source: str) -> int:
    vertex = shaders.compileShader(vertex_source, GL.GL_VERTEX_SHADER)
    fragment = shaders.compileShader(fragment_source, GL.GL_FRAGMENT_SHADER)
    vao = GL.glGenVertexArrays(1)  # core profiles validate a program only with a vertex array bound
    GL.glBindVertexArray(vao)
    try:
        return int(shaders.compileProgram(vertex, fragment))
    finally:
        GL.glBindVertexArray(0)
        GL.glDeleteVertexArrays(1, [vao])
