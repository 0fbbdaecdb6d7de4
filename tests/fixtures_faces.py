"""Shared face-model fixtures: the generated antelopev2-like pack in a temporary folder."""

import pytest

from data_prep import testing_face_models


@pytest.fixture(scope="session")
def face_model_root(tmp_path_factory):
    """Root folder holding `models/antelopev2/{glintr100,scrfd_10g_bnkps}.onnx` stand-ins."""
    return testing_face_models.write_antelope_like_pack(tmp_path_factory.mktemp("insightface"))
