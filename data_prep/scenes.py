"""Synthetic multi-person scenes (random plausible SMPL-X fits + captions) and their shaded "photo".

Used by the demo / smoke data set when no real images and Multi-HMR fits are available. Poses are random
but plausible (arm raises, elbow and knee bends, steps, torso and head turns, finger curl); people stand
on a common floor, side by side at similar depths with frequent partial overlaps, sometimes one behind
another, occasionally turned away; the whole group is kept inside the camera view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from data_prep.body_model import BodyModel
from data_prep.fits import PersonFit, SceneFit, multihmr_intrinsics
from data_prep.render import SceneRenderer, project

_COUNT_WORDS = {1: "a person", 2: "two people", 3: "three people", 4: "four people", 5: "five people"}
_ACTIVITIES = ("standing side by side", "posing together", "standing in a group", "chatting", "waiting")
_SINGLE_ACTIVITIES = ("standing", "posing", "waiting", "walking")
_PLACES = ("in a park", "on a city street", "in a photo studio", "at the beach", "in an office",
           "in a living room", "in front of a brick wall", "at a train station")  # fmt: skip
_PALETTE = ((0.80, 0.25, 0.22), (0.22, 0.45, 0.80), (0.25, 0.65, 0.35), (0.85, 0.70, 0.25),
            (0.60, 0.35, 0.70), (0.85, 0.50, 0.30), (0.30, 0.70, 0.75), (0.55, 0.55, 0.55))  # fmt: skip


def random_person_pose(rng: np.random.Generator, facing_away: bool = False) -> np.ndarray:
    """(53, 3) axis-angle pose: upright in the OpenCV camera frame, facing the camera (or away)."""
    rot = np.zeros((53, 3))
    yaw = rng.normal(0.0, 0.45) + (np.pi if facing_away else 0.0)
    tilt = Rotation.from_euler("xz", rng.normal(0.0, 0.04, size=2))
    upright = Rotation.from_euler("y", yaw) * tilt * Rotation.from_euler("x", np.pi)
    rot[0] = upright.as_rotvec()
    turn = rng.normal(0.0, 0.15)
    for joint in (3, 6, 9):  # spine: turn and slight bend
        rot[joint] = [rng.normal(0.05, 0.06), turn, rng.normal(0.0, 0.04)]
    rot[12] = [rng.normal(0.0, 0.1), rng.normal(0.0, 0.15), 0.0]
    rot[15] = [rng.normal(0.0, 0.1), rng.normal(0.0, 0.25), rng.normal(0.0, 0.05)]
    for sign, shoulder, elbow, collar in ((1.0, 16, 18, 13), (-1.0, 17, 19, 14)):
        raised = rng.random() < 0.25
        down = rng.uniform(0.3, 1.3) if raised else -rng.uniform(0.9, 1.45)
        rot[shoulder] = [0.0, sign * rng.normal(0.0, 0.35), sign * down]
        rot[elbow] = [0.0, -sign * rng.uniform(0.0, 1.9 if raised else 1.2), 0.0]
        rot[collar] = [0.0, 0.0, sign * rng.normal(0.0, 0.08)]
    step = rng.random() < 0.35
    for hip, knee, ankle, sign in ((1, 4, 7, 1.0), (2, 5, 8, -1.0)):
        swing = rng.normal(0.0, 0.15) - (rng.uniform(0.3, 0.9) if step and sign > 0 else 0.0)
        rot[hip] = [swing, 0.0, sign * rng.uniform(0.0, 0.12)]
        rot[knee] = [rng.uniform(0.0, 0.3) + (rng.uniform(0.2, 0.9) if step and sign > 0 else 0.0), 0.0, 0.0]
        rot[ankle] = [rng.normal(0.0, 0.1), 0.0, 0.0]
    curl = rng.uniform(0.0, 0.6, size=(2, 15))
    curl[:, 12:] *= 0.3  # thumbs
    rot[22:37, 2] = -curl[0]
    rot[37:52, 2] = curl[1]
    rot[52] = [rng.uniform(0.0, 0.15), 0.0, 0.0]
    return rot.astype(np.float32)


def pose_scene(body: BodyModel, scene: SceneFit) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Camera-frame meshes [(verts (V, 3), faces (F, 3))] and joints [(127, 3)] of every person."""
    meshes, joints = [], []
    for person in scene.people:
        verts, person_joints = body.posed(person)
        meshes.append((verts, body.faces))
        joints.append(person_joints)
    return meshes, joints


def _caption(rng: np.random.Generator, people: Sequence[PersonFit], rots: Sequence[np.ndarray]) -> str:
    place = _PLACES[rng.integers(len(_PLACES))]
    raised = any(r[16, 2] > 0 or r[17, 2] < 0 for r in rots)
    gesture = " with raised arms" if raised else ""
    if len(people) == 1:
        betas = people[0].betas
        build = "tall " if betas[0] > 1.0 else "short " if betas[0] < -1.0 else ""
        build += "heavyset " if betas[1] > 1.0 else "slim " if betas[1] < -1.0 else ""
        activity = _SINGLE_ACTIVITIES[rng.integers(len(_SINGLE_ACTIVITIES))]
        return f"a full-body photo of a {build}person {activity}{gesture} {place}"
    count = _COUNT_WORDS.get(len(people), f"{len(people)} people")
    activity = _ACTIVITIES[rng.integers(len(_ACTIVITIES))]
    return f"a full-body photo of {count} {activity}{gesture} {place}"


@dataclasses.dataclass(frozen=True)
class SceneLayout:
    """Where synthetic groups stand: `distance` = range (metres) of the front row's camera distance before the
    group is moved back until it is inside the view; `anywhere` = shift the group to a random horizontal
    position where it still fits (False: centred, as the defaults have always been)."""

    distance: tuple[float, float] = (2.3, 3.6)
    anywhere: bool = False


def posed_synthetic_scene(
    rng: np.random.Generator,
    body: BodyModel,
    width: int,
    height: int,
    min_people: int = 1,
    max_people: int = 4,
    layout: SceneLayout = SceneLayout(),
) -> tuple[SceneFit, str, tuple[tuple[np.ndarray, np.ndarray], ...]]:
    """A random scene (Multi-HMR camera for W x H, 1..max people inside the view), its caption, and every
    person's camera-frame (verts (V, 3), joints (127, 3)), equal to `body.posed(person)` (each person goes
    through the body model once: placing them and posing them share the forward)."""
    if not 1 <= min_people <= max_people:
        raise ValueError(f"need 1 <= min_people <= max_people, got {min_people}, {max_people}")
    K = multihmr_intrinsics(width, height)
    num = int(rng.integers(min_people, max_people + 1))
    floor = rng.uniform(1.0, 1.5)  # camera height above the floor (camera y axis points down)
    base_depth = rng.uniform(*layout.distance)
    rots, canon, xs, zs = [], [], [], []
    x = 0.0
    for i in range(num):
        rot = random_person_pose(rng, facing_away=rng.random() < 0.1)
        betas = np.clip(rng.normal(0.0, 1.0, 10), -2.5, 2.5).astype(np.float32)
        betas[2:] *= 0.6
        expression = np.clip(rng.normal(0.0, 0.5, 10), -1.5, 1.5).astype(np.float32)
        person = PersonFit(betas, expression, rot, np.zeros(3, np.float32))
        rotated = body.rotated(person)
        verts, _ = rotated.placed(person.transl)  # head joint at the origin
        behind = i > 0 and rng.random() < 0.3
        if behind:  # stand behind an earlier person, partly hidden
            j = int(rng.integers(i))
            xs.append(xs[j] + rng.uniform(-0.35, 0.35))
            zs.append(zs[j] + rng.uniform(0.7, 1.4))
        else:
            x = x + (rng.uniform(0.3, 0.7) if i else 0.0)
            xs.append(x)
            zs.append(base_depth + rng.uniform(-0.4, 0.4))
        rots.append(rot)
        canon.append((person, verts, rotated))
    xs = np.array(xs) - np.mean(xs) + rng.normal(0.0, 0.1)
    zs = np.array(zs)
    margin = 0.03 * max(width, height)
    for _ in range(60):  # move the group back until every vertex projects inside the image
        transl = [np.array([xs[i], floor - v[:, 1].max(), zs[i]]) for i, (_, v, _) in enumerate(canon)]
        uv = np.concatenate([project(v + t, K) for (_, v, _), t in zip(canon, transl)])
        if (uv[:, 0].min() > margin and uv[:, 0].max() < width - margin and uv[:, 1].min() > margin
                and uv[:, 1].max() < height - margin):  # fmt: skip
            break
        zs = zs + 0.25
    if layout.anywhere:
        transl = _shift_sideways(rng, [v for _, v, _ in canon], transl, K, width, margin)
    people = tuple(
        PersonFit(p.betas, p.expression, p.rotvec, t.astype(np.float32)) for (p, _, _), t in zip(canon, transl)
    )
    posed = tuple(rotated.placed(p.transl) for (_, _, rotated), p in zip(canon, people))
    fit = SceneFit(people=people, K=K, width=width, height=height)
    return fit, _caption(rng, people, rots), posed


def _shift_sideways(rng, verts, transl, K, width: int, margin: float) -> list[np.ndarray]:
    """The group moved sideways by a random amount that keeps every vertex inside [margin, width - margin]."""
    uv = np.concatenate([project(v + t, K) for v, t in zip(verts, transl)])
    shift_px = rng.uniform(-(uv[:, 0].min() - margin), (width - margin) - uv[:, 0].max())
    for _ in range(8):  # perspective: a metric shift moves near vertices more; halve until it fits
        moved = [t + np.array([shift_px * t[2] / K[0, 0], 0.0, 0.0]) for t in transl]
        u = np.concatenate([project(v + t, K)[:, 0] for v, t in zip(verts, moved)])
        if u.min() > margin and u.max() < width - margin:
            return moved
        shift_px /= 2
    return transl


def background_image(rng: np.random.Generator, width: int, height: int, horizon: float) -> np.ndarray:
    """uint8 H x W x 3: a vertical wall/sky gradient above ``horizon`` (row) and a floor gradient below."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    top, wall = rng.uniform(0.55, 0.95, 3), rng.uniform(0.35, 0.8, 3)
    near, far = rng.uniform(0.15, 0.5, 3), rng.uniform(0.3, 0.6, 3)
    a = np.clip(rows / max(horizon, 1.0), 0, 1)
    b = np.clip((rows - horizon) / max(height - horizon, 1.0), 0, 1)
    upper = top * (1 - a) + wall * a
    lower = far * (1 - b) + near * b
    column = np.where(rows < horizon, upper, lower)  # (H, 3)
    return np.repeat((column * 255)[:, None, :], width, axis=1).astype(np.uint8)


def shade_scene(
    renderer: SceneRenderer,
    meshes: Sequence[tuple[np.ndarray, np.ndarray]],
    K: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The synthetic example's "photo": uint8 H x W x 3, per-person colours, directional light, background."""
    colors = [_PALETTE[i] for i in rng.permutation(len(_PALETTE))[: len(meshes)]]
    if len(meshes) > len(_PALETTE):
        colors = [tuple(rng.uniform(0.2, 0.9, 3)) for _ in meshes]
    horizon = float(K[1, 2])  # a level camera sees the horizon at the principal point's row
    background = background_image(rng, renderer.width, renderer.height, horizon)
    light = (rng.uniform(-0.6, 0.6), rng.uniform(0.2, 0.8), 1.0)
    return renderer.shade(meshes, K, colors, background, light_direction=light)
