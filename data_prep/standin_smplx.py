"""A deterministic, SMPL-X-*format* stand-in body model for tests and the demo.

This is NOT SMPL-X. The real model files are license-gated (https://smpl-x.is.tue.mpg.de) and must be
provided by the user for real use. This module builds a file with exactly the keys and shapes that
``smplx.create(root, 'smplx')`` reads (see REFERENCE_FACTS "smplx model file contract"), so the real
``smplx`` package, the renderer and the whole data pipeline run without the licensed files.

Geometry: 21 closed primitives ("tubes": a straight axis with elliptical cross-sections whose radii follow
a profile, rounded caps with a pole vertex at each end) placed on a T-pose skeleton with the real 55-joint
SMPL-X hierarchy: torso+neck, head, nose, 2 arms, 2 palms, 10 fingers, 2 legs, 2 feet. Canonical frame as
SMPL-X: metres, y up, x = the subject's left, z = the direction the body faces.

Exact counts: closed genus-0 parts give F = 2V - 4k. To reach exactly 10475 vertices / 20908 faces, a
few torso triangles are split at their centroid (+1 vertex, +2 faces, still closed) and the remaining
``4k - 42`` faces are zero-area triangles ``(v, v, v)`` (invisible to rasterisers and ray casts).

Conventions of the stand-in:
- ``J_regressor``: each joint = the mean of one cross-section ring of a tube (so it lies on the tube's
  axis and moves with the shape directions), or of a small vertex patch (jaw, eyes).
- LBS ``weights``: per tube, a chain of joints along its axis; each bone segment belongs to its parent
  joint, blended with a smoothstep across each joint.
- ``shapedirs`` (V, 3, 400): betas 0..9 are hand-made: 0 height, 1 girth (weight), 2 shoulder width,
  3 leg length, 4 hip width, 5 chest depth, 6 head size, 7 arm length, 8 belly, 9 neck length (positive =
  more). 10..299 are zero. Expression directions 300..309: mouth open, smile, then small facial bumps.
- All head and nose vertices are skinned to the head joint, so ``jaw_pose`` (and the eye poses) move
  nothing; expressions deform the face.
- ``posedirs`` are zero (no pose correctives); ``hands_components*`` are identities; ``hands_mean*`` a mild
  finger curl (unused with ``flat_hand_mean=True``).
- The vertex ids that ``smplx.vertex_ids['smplx']`` hard-codes (nose, eyes, ears, toes, heels, fingertips)
  are permuted onto the anatomically right vertices; the 51 landmarks (iBUG 17..67 order, as
  ``smplx.joint_names.JOINT_NAMES[76:127]``) are barycentric points on the face.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

NUM_VERTS = 10475
NUM_FACES = 20908
NUM_JOINTS = 55
SMPLX_PARENTS = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip
# smplx.vertex_ids['smplx'] (smplx 0.1.28).
SMPLX_VERTEX_IDS = {
    "nose": 9120, "reye": 9929, "leye": 9448, "rear": 616, "lear": 6,
    "rthumb": 8079, "rindex": 7669, "rmiddle": 7794, "rring": 7905, "rpinky": 8022,
    "lthumb": 5361, "lindex": 4933, "lmiddle": 5058, "lring": 5169, "lpinky": 5286,
    "LBigToe": 5770, "LSmallToe": 5780, "LHeel": 8846, "RBigToe": 8463, "RSmallToe": 8474, "RHeel": 8635,
}  # fmt: skip

EYE_Y = 0.675  # eye height in the canonical frame
HEAD_CENTRE = np.array([0.0, 0.6725, 0.015])
HEAD_RADII = np.array([0.078, 0.1175, 0.098])  # x, y, z half-axes of the head ellipsoid


@dataclass
class _Tube:
    """A closed tube primitive and its skinning chain."""

    name: str
    origin: np.ndarray  # (3,) point at t = 0
    axis: np.ndarray  # (3,) unit
    e1: np.ndarray  # (3,) unit, cross-section axis of radius r1
    profile: np.ndarray  # (P, 3): t, r1, r2 (t from 0 to length)
    caps: tuple[float, float]
    segments: int
    rings: int
    root_joint: int  # owns t < chain[0].t
    chain: list[tuple[float, int]] = field(default_factory=list)  # (t, joint) along the axis
    blend: float = 0.03
    girth: float = 0.1  # radial growth per unit beta 1
    regress: dict[int, float] = field(default_factory=dict)  # joint -> t of its regressor ring

    @property
    def length(self) -> float:
        return float(self.profile[-1, 0])

    @property
    def e2(self) -> np.ndarray:
        return np.cross(self.axis, self.e1)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _ring_ts(tube: _Tube) -> np.ndarray:
    """Ring positions along the axis: a mix of uniform and cosine spacing (denser at the caps)."""
    k = np.arange(1, tube.rings + 1) / (tube.rings + 1)
    return tube.length * (0.55 * k + 0.45 * (1 - np.cos(np.pi * k)) / 2)


def _tube_mesh(tube: _Tube) -> dict[str, np.ndarray]:
    """Vertices (V, 3), faces (F, 3), per-vertex t and axis point of a closed tube."""
    ts = _ring_ts(tube)
    r1 = np.interp(ts, tube.profile[:, 0], tube.profile[:, 1])
    r2 = np.interp(ts, tube.profile[:, 0], tube.profile[:, 2])
    c0, c1 = tube.caps
    length = tube.length
    cap = np.ones_like(ts)
    lo, hi = ts < c0, ts > length - c1
    cap[lo] = np.sqrt(np.clip(1 - ((c0 - ts[lo]) / c0) ** 2, 0, 1))
    cap[hi] = np.sqrt(np.clip(1 - ((ts[hi] - (length - c1)) / c1) ** 2, 0, 1))
    phi = 2 * np.pi * np.arange(tube.segments) / tube.segments
    centres = tube.origin + ts[:, None] * tube.axis
    ring = (
        centres[:, None, :]
        + (r1 * cap)[:, None, None] * np.cos(phi)[None, :, None] * tube.e1
        + (r2 * cap)[:, None, None] * np.sin(phi)[None, :, None] * tube.e2
    )
    pole0, pole1 = tube.origin, tube.origin + length * tube.axis
    verts = np.concatenate([pole0[None], ring.reshape(-1, 3), pole1[None]])
    t_vert = np.concatenate([[0.0], np.repeat(ts, tube.segments), [length]])
    axis_pts = tube.origin + t_vert[:, None] * tube.axis
    s, r = tube.segments, tube.rings
    j = np.arange(s)
    jn = (j + 1) % s
    faces = [np.stack([np.zeros(s, int), 1 + jn, 1 + j], 1)]
    for i in range(r - 1):
        a, b = 1 + i * s, 1 + (i + 1) * s
        faces.append(np.stack([a + j, a + jn, b + jn], 1))
        faces.append(np.stack([a + j, b + jn, b + j], 1))
    last = 1 + (r - 1) * s
    faces.append(np.stack([np.full(s, len(verts) - 1), last + j, last + jn], 1))
    faces = np.concatenate(faces)
    tri = verts[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0] - pole0, np.cross(tri[:, 1] - pole0, tri[:, 2] - pole0)).sum()
    if volume < 0:
        faces = faces[:, ::-1]
    return {"verts": verts, "faces": faces, "t": t_vert, "axis_pts": axis_pts, "ring_t": ts}


def _chain_weights(tube: _Tube, t: np.ndarray) -> np.ndarray:
    """LBS weights (V, 55) along a tube: segment after joint j belongs to j, smoothstep blend at joints."""
    weights = np.zeros((len(t), NUM_JOINTS))
    owners = [tube.root_joint] + [joint for _, joint in tube.chain]
    knots = [kt for kt, _ in tube.chain]
    idx = np.searchsorted(knots, t, side="right")  # 0 = before the first joint
    weights[np.arange(len(t)), np.asarray(owners)[idx]] = 1.0
    bounds = [0.0, *knots, tube.length]
    for j, kt in enumerate(knots):
        half = min(tube.blend, 0.45 * (kt - bounds[j]), 0.45 * (bounds[j + 2] - kt))
        if half <= 0:
            continue
        near = np.abs(t - kt) < half
        alpha = (t[near] - (kt - half)) / (2 * half)
        alpha = alpha * alpha * (3 - 2 * alpha)
        rows = np.nonzero(near)[0]
        weights[rows] = 0.0
        weights[rows, owners[j]] = 1 - alpha
        weights[rows, owners[j + 1]] += alpha
    return weights


def _mirror(v) -> np.ndarray:
    return np.asarray(v, np.float64) * np.array([-1.0, 1.0, 1.0])


def _body_tubes() -> list[_Tube]:
    """The 21 primitives of the stand-in, with their skinning chains and regressor rings."""
    x_axis, y_axis, z_axis = np.eye(3)
    tubes = []
    torso_profile = np.array(
        [
            [-0.16, 0.150, 0.095],
            [-0.05, 0.165, 0.105],
            [0.08, 0.140, 0.095],
            [0.22, 0.150, 0.105],
            [0.33, 0.165, 0.110],
            [0.43, 0.170, 0.090],
            [0.49, 0.080, 0.060],
            [0.52, 0.056, 0.055],
            [0.60, 0.050, 0.050],
        ]
    )
    torso_profile[:, 0] += 0.16
    tubes.append(
        _Tube(
            "torso", np.array([0.0, -0.16, -0.005]), y_axis, x_axis, torso_profile, (0.08, 0.04), 48, 56,
            root_joint=0, chain=[(0.27, 3), (0.40, 6), (0.46, 9), (0.66, 12), (0.74, 15)], girth=0.22,
            regress={0: 0.16, 3: 0.27, 6: 0.40, 9: 0.46, 12: 0.66},
        )
    )  # fmt: skip
    head_len = 2 * HEAD_RADII[1]
    tubes.append(
        _Tube(
            "head", HEAD_CENTRE - [0, HEAD_RADII[1], 0], y_axis, x_axis,
            np.array([[0.0, HEAD_RADII[0], HEAD_RADII[2]], [head_len, HEAD_RADII[0], HEAD_RADII[2]]]),
            (head_len / 2, head_len / 2), 48, 40, root_joint=15, girth=0.03, regress={15: 0.025},
        )
    )  # fmt: skip
    nose_start, nose_tip = np.array([0.0, 0.662, 0.095]), np.array([0.0, 0.640, 0.138])
    nose_len = float(np.linalg.norm(nose_tip - nose_start))
    tubes.append(
        _Tube(
            "nose", nose_start, _unit(nose_tip - nose_start), x_axis,
            np.array([[0.0, 0.011, 0.014], [nose_len, 0.011, 0.012]]), (0.006, 0.010), 12, 8,
            root_joint=15, girth=0.0,
        )
    )  # fmt: skip
    arm_profile = np.array(
        [
            [0.04, 0.055, 0.055],
            [0.17, 0.052, 0.055],
            [0.30, 0.045, 0.046],
            [0.43, 0.037, 0.038],
            [0.55, 0.035, 0.036],
            [0.68, 0.025, 0.032],
            [0.70, 0.022, 0.030],
        ]
    )
    arm_profile[:, 0] -= 0.04
    fingers = {  # name: (first joint, base offset from the wrist (x, y, z), direction, lengths, radius)
        "index": (25, (0.095, 0.0, 0.025), (1, 0, 0.05), (0.035, 0.025, 0.020), 0.0095),
        "middle": (28, (0.095, 0.0, 0.006), (1, 0, 0), (0.040, 0.028, 0.022), 0.0098),
        "pinky": (31, (0.085, 0.0, -0.032), (1, 0, -0.08), (0.028, 0.020, 0.018), 0.0085),
        "ring": (34, (0.090, 0.0, -0.013), (1, 0, -0.03), (0.037, 0.026, 0.020), 0.0092),
        "thumb": (37, (0.025, -0.012, 0.030), (1, -0.25, 0.9), (0.035, 0.030, 0.025), 0.0110),
    }
    for side, sign in (("left", 1.0), ("right", -1.0)):
        off = 0 if side == "left" else 15
        flip = (lambda v: np.asarray(v, float)) if sign > 0 else _mirror
        arm_axis = sign * x_axis
        tubes.append(
            _Tube(
                f"{side}_arm", flip([0.04, 0.44, -0.015]), arm_axis, y_axis, arm_profile, (0.03, 0.03), 24, 36,
                root_joint=9, chain=[(0.035, 13 + (side == "right")), (0.13, 16 + (side == "right")),
                                     (0.39, 18 + (side == "right")), (0.64, 20 + (side == "right"))],
                girth=0.15, regress={13 + (side == "right"): 0.035, 16 + (side == "right"): 0.13,
                                     18 + (side == "right"): 0.39, 20 + (side == "right"): 0.64},
            )
        )  # fmt: skip
        wrist_joint = 20 + (side == "right")
        wrist = flip([0.68, 0.44, -0.015])
        tubes.append(
            _Tube(
                f"{side}_palm", wrist + arm_axis * -0.015, arm_axis, y_axis,
                np.array([[0.0, 0.017, 0.044], [0.12, 0.015, 0.042]]), (0.016, 0.016), 16, 12,
                root_joint=wrist_joint, girth=0.04,
            )
        )  # fmt: skip
        for name, (joint0, base, direction, lengths, radius) in fingers.items():
            d = _unit(flip(direction))
            start = wrist + flip(base) - 0.012 * d
            knots = np.cumsum([0.012, *lengths[:2]])
            total = 0.012 + sum(lengths)
            e1 = _unit(np.cross(d, z_axis)) if name != "thumb" else _unit(np.cross(d, y_axis))
            tubes.append(
                _Tube(
                    f"{side}_{name}", start, d, e1, np.array([[0.0, radius, radius], [total, radius * 0.9,
                                                                                       radius * 0.85]]),
                    (radius, radius * 0.9), 8, 14, root_joint=wrist_joint,
                    chain=[(float(kt), joint0 + off + i) for i, kt in enumerate(knots)], blend=0.006,
                    girth=0.03, regress={joint0 + off + i: float(kt) for i, kt in enumerate(knots)},
                )
            )  # fmt: skip
    leg_profile = np.array(
        [
            [-0.02, 0.085, 0.085],
            [-0.15, 0.080, 0.080],
            [-0.35, 0.063, 0.065],
            [-0.50, 0.048, 0.050],
            [-0.62, 0.052, 0.058],
            [-0.80, 0.038, 0.042],
            [-0.90, 0.033, 0.035],
            [-0.935, 0.030, 0.030],
        ]
    )
    leg_profile[:, 0] = -0.02 - leg_profile[:, 0]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        r = side == "right"
        flip = (lambda v: np.asarray(v, float)) if sign > 0 else _mirror
        top, bottom = flip([0.088, -0.02, 0.0]), flip([0.100, -0.935, -0.02])
        axis = _unit(bottom - top)
        scale = float(np.linalg.norm(bottom - top)) / 0.915
        prof = leg_profile.copy()
        prof[:, 0] *= scale
        tubes.append(
            _Tube(
                f"{side}_leg", top, axis, x_axis, prof, (0.04, 0.03), 24, 38, root_joint=0,
                chain=[(0.06 * scale, 1 + r), (0.48 * scale, 4 + r), (0.88 * scale, 7 + r)], girth=0.15,
                regress={1 + r: 0.06 * scale, 4 + r: 0.48 * scale, 7 + r: 0.88 * scale},
            )
        )  # fmt: skip
        foot_profile = np.array([[0.0, 0.036, 0.030], [0.07, 0.041, 0.034], [0.17, 0.048, 0.025],
                                 [0.24, 0.040, 0.018]])  # fmt: skip
        tubes.append(
            _Tube(
                f"{side}_foot", flip([0.105, -0.945, -0.07]), z_axis, x_axis, foot_profile, (0.03, 0.02), 16, 16,
                root_joint=7 + r, chain=[(0.17, 10 + r)], blend=0.02, girth=0.05, regress={10 + r: 0.17},
            )
        )  # fmt: skip
    return tubes


# iBUG-68 points 17..67 (smplx landmark order) in face coordinates: u toward the subject's LEFT (+x),
# v up from eye height (metres). Points 27..30 (nose bridge) and 31..35 get pulled onto the nose.
_LANDMARKS_UV = np.array(
    [
        [-0.058, 0.018], [-0.047, 0.026], [-0.035, 0.029], [-0.024, 0.028], [-0.013, 0.024],
        [0.013, 0.024], [0.024, 0.028], [0.035, 0.029], [0.047, 0.026], [0.058, 0.018],
        [0.0, -0.005], [0.0, -0.015], [0.0, -0.025], [0.0, -0.035],
        [-0.016, -0.042], [-0.008, -0.044], [0.0, -0.045], [0.008, -0.044], [0.016, -0.042],
        [-0.045, 0.0], [-0.037, 0.005], [-0.027, 0.005], [-0.019, 0.0], [-0.027, -0.005], [-0.037, -0.005],
        [0.019, 0.0], [0.027, 0.005], [0.037, 0.005], [0.045, 0.0], [0.037, -0.005], [0.027, -0.005],
        [-0.025, -0.068], [-0.016, -0.061], [-0.006, -0.058], [0.0, -0.059], [0.006, -0.058],
        [0.016, -0.061], [0.025, -0.068], [0.016, -0.076], [0.006, -0.079], [0.0, -0.080],
        [-0.006, -0.079], [-0.016, -0.076],
        [-0.020, -0.068], [-0.008, -0.065], [0.0, -0.065], [0.008, -0.065], [0.020, -0.068],
        [0.008, -0.071], [0.0, -0.071], [-0.008, -0.071],
    ]
)  # fmt: skip
_NOSE_LANDMARKS = {10: 0.25, 11: 0.5, 12: 0.75, 13: 1.0}  # landmark -> fraction along the nose axis


def head_surface_point(u: float, v: float) -> np.ndarray:
    """Point on the front of the head ellipsoid at face coordinates (u, v) (metres, see _LANDMARKS_UV)."""
    x, y = u, EYE_Y + v
    q = 1 - (x / HEAD_RADII[0]) ** 2 - ((y - HEAD_CENTRE[1]) / HEAD_RADII[1]) ** 2
    return np.array([x, y, HEAD_CENTRE[2] + HEAD_RADII[2] * np.sqrt(max(q, 0.0))])


def _smooth(x, lo, hi) -> np.ndarray:
    a = np.clip((np.asarray(x) - lo) / (hi - lo), 0, 1)
    return a * a * (3 - 2 * a)


def _shape_dirs(verts: np.ndarray, kind: np.ndarray, radial: np.ndarray, girth: np.ndarray) -> np.ndarray:
    """Betas 0..9 as (V, 3, 10) displacement fields (see module docstring)."""
    x, y, z = verts.T
    side = np.sign(x)
    is_ = {name: np.char.startswith(kind, name) for name in ("torso", "head", "nose")}
    arm_like = np.char.endswith(kind, "arm") | np.char.endswith(kind, "palm")
    hand = np.char.endswith(kind, "palm") | np.isin(
        np.char.partition(kind, "_")[:, 2], ["index", "middle", "ring", "pinky", "thumb"]
    )
    upper_limb = arm_like | hand
    leg = np.char.endswith(kind, "leg")
    foot = np.char.endswith(kind, "foot")
    head = is_["head"] | is_["nose"]
    dirs = np.zeros((len(verts), 3, 10))
    dirs[:, :, 0] = 0.05 * np.stack([0.25 * x, y, 0.25 * z], 1)  # height
    dirs[:, :, 1] = girth[:, None] * radial  # girth
    dirs[upper_limb, 0, 1] += 0.02 * side[upper_limb]
    dirs[leg | foot, 0, 1] += 0.01 * side[leg | foot]
    upper = _smooth(y, 0.25, 0.40) * is_["torso"]
    dirs[:, 0, 2] = 0.10 * x * upper + 0.10 * 0.17 * side * upper_limb  # shoulder width
    below_hip = np.clip(-0.02 - y, 0, None)
    dirs[:, 1, 3] = -0.06 * below_hip * leg - 0.06 * 0.92 * foot  # leg length
    lower = (1 - _smooth(y, 0.02, 0.15)) * is_["torso"]
    dirs[:, 0, 4] = 0.12 * x * lower + 0.12 * 0.088 * side * (leg | foot)  # hip width
    chest = np.exp(-(((y - 0.30) / 0.10) ** 2)) * is_["torso"]
    dirs[:, 2, 5] = 0.12 * radial[:, 2] * chest  # chest depth
    dirs[head, :, 6] = 0.06 * (verts[head] - HEAD_CENTRE)  # head size
    beyond = np.clip(np.abs(x) - 0.17, 0, None) * upper_limb
    dirs[:, 0, 7] = 0.08 * side * beyond  # arm length
    belly = np.exp(-(((y - 0.08) / 0.10) ** 2)) * is_["torso"] * (radial[:, 2] > 0)
    dirs[:, 2, 8] = 0.04 * belly * radial[:, 2] / 0.1  # belly
    dirs[:, 1, 9] = 0.03 * np.maximum(_smooth(y, 0.46, 0.56) * is_["torso"], head)  # neck length
    return dirs


def _expression_dirs(verts: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Expressions 0..9 as (V, 3, 10): mouth open, smile, then small Gaussian face bumps."""
    face = (np.char.startswith(kind, "head") | np.char.startswith(kind, "nose")) & (verts[:, 2] > 0.03)
    dirs = np.zeros((len(verts), 3, 10))

    def bump(centre, sigma):
        return np.exp(-np.sum((verts - centre) ** 2, 1) / (2 * sigma**2)) * face

    mouth = head_surface_point(0.0, -0.075)
    dirs[:, 1, 0] = -0.012 * bump(mouth - [0, 0.01, 0], 0.02)
    for u in (-0.025, 0.025):
        w = bump(head_surface_point(u, -0.068), 0.012)
        dirs[:, 0, 1] += 0.006 * np.sign(u) * w
        dirs[:, 1, 1] += 0.006 * w
    spots = [(-0.035, 0.03), (0.035, 0.03), (-0.045, -0.04), (0.045, -0.04), (0.0, -0.1), (0.0, 0.06),
             (-0.06, -0.02), (0.06, -0.02)]  # fmt: skip
    for k, (u, v) in enumerate(spots, start=2):
        centre = head_surface_point(u, v)
        normal = _unit((centre - HEAD_CENTRE) / HEAD_RADII**2)
        dirs[:, :, k] = 0.004 * bump(centre, 0.015)[:, None] * normal
    return dirs


def build_standin_arrays() -> dict[str, np.ndarray]:
    """All arrays of the stand-in model file (deterministic)."""
    tubes = _body_tubes()
    parts = [_tube_mesh(t) for t in tubes]
    offsets = np.cumsum([0] + [len(p["verts"]) for p in parts])
    verts = np.concatenate([p["verts"] for p in parts])
    faces = np.concatenate([p["faces"] + o for p, o in zip(parts, offsets[:-1])])
    kind = np.concatenate([np.full(len(p["verts"]), t.name) for p, t in zip(parts, tubes)])
    radial = np.concatenate([p["verts"] - p["axis_pts"] for p in parts])
    girth = np.concatenate([np.full(len(p["verts"]), t.girth) for p, t in zip(parts, tubes)])
    weights = np.concatenate([_chain_weights(t, p["t"]) for p, t in zip(parts, tubes)])
    torso_cols = np.nonzero(kind == "torso")[0]
    shoulder = _smooth(np.abs(verts[:, 0]), 0.08, 0.16) * _smooth(verts[:, 1], 0.34, 0.42) * 0.5
    for rows, collar in ((torso_cols[verts[torso_cols, 0] > 0], 13), (torso_cols[verts[torso_cols, 0] < 0], 14)):
        weights[rows] *= (1 - shoulder[rows])[:, None]
        weights[rows, collar] += shoulder[rows]

    # J_regressor rows: the mean of one ring (tube joints) or of a small patch (jaw, eyes).
    regressor = np.zeros((NUM_JOINTS, len(verts)))
    for tube, part, off in zip(tubes, parts, offsets[:-1]):
        for joint, t_joint in tube.regress.items():
            ring = int(np.argmin(np.abs(part["ring_t"] - t_joint)))
            cols = off + 1 + ring * tube.segments + np.arange(tube.segments)
            regressor[joint, cols] = 1.0 / tube.segments
    head_cols = np.nonzero(kind == "head")[0]
    for joint, target, k in (
        (22, head_surface_point(0.0, -0.09) - [0, 0, 0.03], 24),
        (23, head_surface_point(0.032, 0.0), 8),
        (24, head_surface_point(-0.032, 0.0), 8),
    ):
        near = head_cols[np.argsort(np.linalg.norm(verts[head_cols] - target, axis=1), kind="stable")[:k]]
        regressor[joint, near] = 1.0 / k  # fmt: skip
    assert np.all(regressor.sum(1) > 0.999), "every joint needs a regressor"

    # Exact counts: centroid splits on back-of-torso faces, then zero-area padding faces.
    num_parts = len(tubes)
    splits = NUM_VERTS - len(verts)
    assert splits >= 0 and 2 * NUM_VERTS - 4 * num_parts <= NUM_FACES, (splits, num_parts)
    torso_faces = np.nonzero(np.all(kind[faces] == "torso", axis=1) & (verts[faces][:, :, 2].mean(1) < -0.03))[0]
    chosen = torso_faces[np.linspace(0, len(torso_faces) - 1, splits).round().astype(int)]
    assert len(np.unique(chosen)) == splits
    new_ids = len(verts) + np.arange(splits)
    tri = faces[chosen]
    verts = np.concatenate([verts, verts[tri].mean(1)])
    kind = np.concatenate([kind, kind[tri[:, 0]]])
    radial = np.concatenate([radial, radial[tri].mean(1)])
    girth = np.concatenate([girth, girth[tri].mean(1)])
    weights = np.concatenate([weights, weights[tri].mean(1)])
    regressor = np.concatenate([regressor, np.zeros((NUM_JOINTS, splits))], 1)
    keep = np.ones(len(faces), bool)
    keep[chosen] = False
    a, b, c = tri.T
    faces = np.concatenate(
        [faces[keep], np.stack([a, b, new_ids], 1), np.stack([b, c, new_ids], 1), np.stack([c, a, new_ids], 1)]
    )
    pad = NUM_FACES - len(faces)
    faces = np.concatenate([faces, np.zeros((pad, 3), faces.dtype)])  # (0, 0, 0): zero area

    # Move the hard-coded smplx vertex ids onto anatomical vertices.
    def nearest(prefix, target):
        cols = np.nonzero(kind == prefix)[0]
        return int(cols[np.argmin(np.linalg.norm(verts[cols] - target, axis=1))])

    def tip(name):
        return int(offsets[[t.name for t in tubes].index(name) + 1] - 1)  # the far pole of the tube

    anchors = {
        "nose": tip("nose"),
        "reye": nearest("head", head_surface_point(-0.032, 0.0)),
        "leye": nearest("head", head_surface_point(0.032, 0.0)),
        "rear": nearest("head", [-HEAD_RADII[0], EYE_Y - 0.01, HEAD_CENTRE[2]]),
        "lear": nearest("head", [HEAD_RADII[0], EYE_Y - 0.01, HEAD_CENTRE[2]]),
    }
    for s, side in (("l", "left"), ("r", "right")):
        for finger in ("thumb", "index", "middle", "ring", "pinky"):
            anchors[s + finger] = tip(f"{side}_{finger}")
    for s, side, sign in (("L", "left", 1), ("R", "right", -1)):
        anchors[s + "BigToe"] = nearest(f"{side}_foot", [sign * 0.085, -0.955, 0.17])
        anchors[s + "SmallToe"] = nearest(f"{side}_foot", [sign * 0.135, -0.955, 0.14])
        anchors[s + "Heel"] = nearest(f"{side}_foot", [sign * 0.105, -0.97, -0.075])
    perm = np.arange(NUM_VERTS)  # new index -> old index
    where = np.arange(NUM_VERTS)  # old index -> new index
    for name, target_id in SMPLX_VERTEX_IDS.items():
        old = anchors[name]
        j = where[old]
        displaced = perm[target_id]
        perm[target_id], perm[j] = old, displaced
        where[old], where[displaced] = target_id, j
    verts, kind, radial, girth, weights = verts[perm], kind[perm], radial[perm], girth[perm], weights[perm]
    regressor = regressor[:, perm]
    faces = where[faces]

    # Landmarks: barycentric points on the face (head + nose faces).
    face_ids = np.nonzero(np.all(np.isin(kind[faces], ["head", "nose"]), axis=1))[0]
    triangles = verts[faces[face_ids]]
    nose_tube = tubes[2]
    targets = []
    for i, (u, v) in enumerate(_LANDMARKS_UV):
        if i in _NOSE_LANDMARKS:
            targets.append(nose_tube.origin + _NOSE_LANDMARKS[i] * nose_tube.length * nose_tube.axis)
        else:
            targets.append(head_surface_point(u, v))
    lmk_faces, lmk_bary = _surface_points(triangles, face_ids, np.array(targets))
    contour = np.array([head_surface_point(0.07 * np.sin(a), -0.06 - 0.045 * np.cos(a))
                        for a in np.linspace(-1.2, 1.2, 17)])  # fmt: skip
    dyn_faces, dyn_bary = _surface_points(triangles, face_ids, contour)

    shapedirs = np.zeros((NUM_VERTS, 3, 400), np.float32)
    shapedirs[:, :, :10] = _shape_dirs(verts, kind, radial, girth)
    shapedirs[:, :, 300:310] = _expression_dirs(verts, kind)
    curl = np.zeros((15, 3))
    curl[:12, 2] = -0.15  # flex the four fingers (not the thumb) toward the palm
    return {
        "v_template": verts.astype(np.float32),
        "f": faces.astype(np.int64),
        "J_regressor": (regressor / regressor.sum(1, keepdims=True)).astype(np.float32),
        "weights": (weights / weights.sum(1, keepdims=True)).astype(np.float32),
        "kintree_table": np.stack([np.array(SMPLX_PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((NUM_VERTS, 3, 486), np.float32),
        "hands_componentsl": np.eye(45, dtype=np.float32),
        "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": curl.reshape(-1).astype(np.float32),
        "hands_meanr": (-curl).reshape(-1).astype(np.float32),
        "lmk_faces_idx": lmk_faces.astype(np.int64),
        "lmk_bary_coords": lmk_bary.astype(np.float32),
        "dynamic_lmk_faces_idx": np.tile(dyn_faces, (79, 1)).astype(np.int64),
        "dynamic_lmk_bary_coords": np.tile(dyn_bary, (79, 1, 1)).astype(np.float32),
    }


def _surface_points(triangles: np.ndarray, face_ids: np.ndarray, targets: np.ndarray):
    """Closest face (global id) and barycentric coordinates of each target point on ``triangles``."""
    faces_out, bary_out = [], []
    for target in targets:
        closest = trimesh.triangles.closest_point(triangles, np.repeat(target[None], len(triangles), 0))
        best = int(np.argmin(np.linalg.norm(closest - target, axis=1)))
        bary = trimesh.triangles.points_to_barycentric(triangles[best : best + 1], closest[best : best + 1])[0]
        bary = np.clip(bary, 0, None)
        faces_out.append(face_ids[best])
        bary_out.append(bary / bary.sum())
    return np.array(faces_out), np.array(bary_out)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An npz archive with fixed timestamps and key order, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def write_standin_smplx_model(root: str | os.PathLike) -> Path:
    """Write the stand-in to ``root/smplx/SMPLX_NEUTRAL.npz`` (atomically) and return that path.

    Deterministic: the same bytes on every call. Load it with ``smplx.create(root, 'smplx', ...)``.
    A stand-in for tests and the demo only; real use needs the license-gated SMPL-X files.
    """
    path = Path(root) / "smplx" / "SMPLX_NEUTRAL.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _npz_bytes(build_standin_arrays())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".SMPLX_NEUTRAL.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
