"""SMPL-X body model wrapper that poses people exactly as Multi-HMR places them in the camera frame.

``BodyModel(model_root)`` loads ``model_root/smplx/SMPLX_<GENDER>.npz`` with the real ``smplx`` package.
Security: ``smplx`` opens npz files with ``allow_pickle=True``; only load model files you trust.
For tests and the demo, ``write_standin_smplx_model(root)`` writes a project-generated stand-in in the
SMPL-X file format (not the licensed model; see ``data_prep.standin_smplx``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import smplx
import torch

from data_prep.fits import PersonFit
from data_prep.standin_smplx import write_standin_smplx_model

__all__ = ["HEAD_JOINT", "PELVIS_JOINT", "BodyModel", "axis_angle_to_matrix", "write_standin_smplx_model"]

PELVIS_JOINT = 0
HEAD_JOINT = 15


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: (3,) axis-angle -> (3, 3) rotation matrix (float64)."""
    rotvec = np.asarray(rotvec, np.float64)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


class BodyModel:
    """SMPL-X (``use_pca=False, flat_hand_mean=True``, 10 betas, 10 expression coefficients), CPU, float32.

    One forward per person: smplx's forward over a batch of people rounds its shape blend differently (1-2
    float32 ulps), which would move rendered normals / float16 depth at a few dozen pixels per image."""

    def __init__(self, model_root: str | os.PathLike, gender: str = "neutral") -> None:
        self._model = smplx.create(
            str(model_root),
            "smplx",
            gender=gender,
            use_pca=False,
            flat_hand_mean=True,
            num_betas=10,
            num_expression_coeffs=10,
        )
        self._model.eval()
        self._faces = np.asarray(self._model.faces, dtype=np.int64)

    @property
    def faces(self) -> np.ndarray:
        """(F, 3) int64 triangle vertex indices."""
        return self._faces

    def canonical(self, person: PersonFit) -> tuple[np.ndarray, np.ndarray]:
        """SMPL-X forward with identity global orientation: vertices (V, 3), joints (127, 3), float64."""
        rot = torch.as_tensor(person.rotvec, dtype=torch.float32)
        zeros = torch.zeros(1, 3)
        with torch.no_grad():
            out = self._model(
                betas=torch.as_tensor(person.betas)[None],
                expression=torch.as_tensor(person.expression)[None],
                global_orient=zeros,
                body_pose=rot[1:22].reshape(1, 63),
                left_hand_pose=rot[22:37].reshape(1, 45),
                right_hand_pose=rot[37:52].reshape(1, 45),
                jaw_pose=rot[52].reshape(1, 3),
                leye_pose=zeros,
                reye_pose=zeros,
                transl=zeros,
            )
        return out.vertices[0].double().numpy(), out.joints[0].double().numpy()

    def rotated(self, person: PersonFit) -> RotatedBody:
        """The forward with identity global orientation, then rotated about the pelvis by ``rotvec[0]``."""
        verts, joints = self.canonical(person)
        rotation = axis_angle_to_matrix(person.rotvec[0])
        pelvis = joints[PELVIS_JOINT].copy()
        return RotatedBody((verts - pelvis) @ rotation.T + pelvis, (joints - pelvis) @ rotation.T + pelvis)

    def posed(self, person: PersonFit) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame (OpenCV axes, metres) vertices (V, 3) and joints (127, 3), float32.

        Multi-HMR's construction: forward with identity global orientation; rotate about the pelvis joint
        by ``rotvec[0]``; subtract the rotated head joint; add ``transl``. So joint 15 lands on ``transl``.
        """
        return self.rotated(person).placed(person.transl)


@dataclass(frozen=True)
class RotatedBody:
    """One person's SMPL-X vertices (V, 3) and joints (127, 3), float64, rotated about the pelvis by the
    global orientation but not yet moved to the camera-frame position (see `BodyModel.posed`)."""

    verts: np.ndarray
    joints: np.ndarray

    def placed(self, transl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertices and joints (float32) with the head joint moved to ``transl`` (3,)."""
        offset = np.asarray(transl, np.float64) - self.joints[HEAD_JOINT]
        return (self.verts + offset).astype(np.float32), (self.joints + offset).astype(np.float32)
