"""Shared body-model fixtures: the generated SMPL-X-format stand-in, written once per test session."""

import pytest

from data_prep.body_model import BodyModel, write_standin_smplx_model


@pytest.fixture(scope="session")
def standin_model_root(tmp_path_factory):
    """Folder holding ``smplx/SMPLX_NEUTRAL.npz`` (the stand-in, not the licensed model)."""
    root = tmp_path_factory.mktemp("standin_smplx")
    write_standin_smplx_model(root)
    return root


@pytest.fixture(scope="session")
def body_model(standin_model_root):
    return BodyModel(standin_model_root)
