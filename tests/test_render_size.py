"""SceneRenderer's size check. A module of its own: pyrender's EGL `delete` terminates the display that every
live renderer in the process shares, so no other renderer may be open (test_render's module fixture is)."""

import numpy as np
import pytest

from data_prep.fits import multihmr_intrinsics
from data_prep.render import SceneRenderer


def test_renderer_refuses_sizes_beyond_the_gl_framebuffer():
    from OpenGL import GL

    with SceneRenderer(8, 8):
        limit = int(GL.glGetIntegerv(GL.GL_MAX_RENDERBUFFER_SIZE))
    with pytest.raises(ValueError, match=rf"width={limit + 1}, height=8 exceed this OpenGL's largest framebuffer"):
        SceneRenderer(limit + 1, 8)
    with SceneRenderer(8, 8) as r:  # the refused renderer released its context
        assert r.render([(np.zeros((3, 3)), np.array([[0, 1, 2]]))], multihmr_intrinsics(8, 8))["depth"].shape == (8, 8)
