"""What became of each scene (written or skipped, and why) and the counts over a run, mergeable across workers.

`prepare_scene` is the one place where a scene becomes an example, for the in-process and the Beam
generation alike: a `SkipExample` becomes a counted outcome; any other exception is re-raised as
`ExamplePrepError` naming the example (a bug or an environment problem must stop the run, not be counted).

`PrepStats` adds outcomes in any order and merges with other `PrepStats` (Beam combines per-worker
partial counts): counts are sums and the listed examples are the first `MAX_LISTED` by scene index, so the
report is the same whatever the runner and the number of workers.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from data_prep.examples import SkipExample

MAX_LISTED = 1000  # skipped examples / invisible people listed by id in the report (all are counted)
PERSON_REASONS = ("outside_image", "fully_occluded")


class ExamplePrepError(RuntimeError):
    """Preparing one example failed for a reason other than a bad input (`SkipExample`)."""


class NoExamplesError(ValueError):
    """No scene of the source could be prepared."""


@dataclasses.dataclass(frozen=True)
class SceneOutcome:
    """One scene: `skip_reason` None = written. Written scenes carry per-person face and pixel reasons.

    face_reasons: per person, None (face embedded) or one of `examples.FACE_REASONS`;
    person_reasons: per person, None (some visible pixels) or one of `PERSON_REASONS`.
    """

    index: int
    image_id: str
    skip_reason: str | None = None
    skip_detail: str = ""
    face_reasons: tuple[str | None, ...] = ()
    person_reasons: tuple[str | None, ...] = ()


def person_reasons(example: dict[str, Any]) -> tuple[str | None, ...]:
    """Per person: None if they have visible pixels in `instance`; 'outside_image' if their full silhouette
    (`amodal`) is empty; 'fully_occluded' if it is not but others hide all of it."""
    amodal, instance = np.asarray(example["amodal"]), np.asarray(example["instance"])
    reasons: list[str | None] = []
    for i in range(int(example["num_people"])):
        if not amodal[i].any():
            reasons.append("outside_image")
        elif not np.any(instance == i + 1):
            reasons.append("fully_occluded")
        else:
            reasons.append(None)
    return tuple(reasons)


def prepare_scene(factory: Any, index: int, scene: Any) -> tuple[SceneOutcome, dict[str, Any] | None]:
    """(outcome, example or None if skipped) for scene number `index` of the source."""
    try:
        example, face_reasons = factory(scene)
    except SkipExample as skip:
        return SceneOutcome(index, scene.image_id, skip.reason, skip.detail), None
    except Exception as err:
        raise ExamplePrepError(
            f"preparing example {scene.image_id!r} (scene {index}) failed: {type(err).__name__}: {err}"
        ) from err
    outcome = SceneOutcome(index, scene.image_id, None, "", tuple(face_reasons), person_reasons(example))
    return outcome, example


def _first(items: list[tuple], limit: int = MAX_LISTED) -> list[tuple]:
    return sorted(items)[:limit]


@dataclasses.dataclass
class PrepStats:
    """Counts of a prep run (see the module docstring); `to_dict` is what the report holds."""

    written: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped_examples: list = dataclasses.field(default_factory=list)  # (index, id, reason, detail)
    people: int = 0
    faces: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # reason or "embedded"
    people_not_visible: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    invisible_people: list = dataclasses.field(default_factory=list)  # (index, id, person, reason)

    def add(self, outcome: SceneOutcome) -> None:
        if outcome.skip_reason is not None:
            self.skipped[outcome.skip_reason] += 1
            self.skipped_examples.append((outcome.index, outcome.image_id, outcome.skip_reason, outcome.skip_detail))
        else:
            self.written += 1
            self.people += len(outcome.face_reasons)
            self.faces.update("embedded" if reason is None else reason for reason in outcome.face_reasons)
            for person, reason in enumerate(outcome.person_reasons):
                if reason is not None:
                    self.people_not_visible[reason] += 1
                    self.invisible_people.append((outcome.index, outcome.image_id, person, reason))
        self._trim()

    def merge(self, others: Iterable[PrepStats]) -> PrepStats:
        for other in others:
            self.written += other.written
            self.skipped.update(other.skipped)
            self.skipped_examples.extend(other.skipped_examples)
            self.people += other.people
            self.faces.update(other.faces)
            self.people_not_visible.update(other.people_not_visible)
            self.invisible_people.extend(other.invisible_people)
        self._trim()
        return self

    def _trim(self) -> None:
        """Keep the lists bounded (2 x MAX_LISTED) without changing which entries `to_dict` lists."""
        for name in ("skipped_examples", "invisible_people"):
            items = getattr(self, name)
            if len(items) > 2 * MAX_LISTED:
                setattr(self, name, _first(items))

    def to_dict(self) -> dict[str, Any]:
        """The report's counts. Faces: `faces_visible` by the renderer (in frame, turned to the camera, not
        occluded), of which `faces_embedded` have an ArcFace embedding; the others have reasons."""
        not_visible = {r: n for r, n in self.faces.items() if r in ("out_of_frame", "hidden")}
        not_embedded = {r: n for r, n in self.faces.items() if r not in ("out_of_frame", "hidden", "embedded")}
        return {
            "written": self.written,
            "skipped": sum(self.skipped.values()),
            "skip_reasons": dict(sorted(self.skipped.items())),
            "skipped_examples": [list(item[1:]) for item in _first(self.skipped_examples)],  # [id, reason, detail]
            "people": self.people,
            "people_not_visible": sum(self.people_not_visible.values()),
            "person_not_visible_reasons": dict(sorted(self.people_not_visible.items())),
            "people_not_visible_examples": [list(item[1:]) for item in _first(self.invisible_people)],
            "faces_visible": self.people - sum(not_visible.values()),
            "faces_not_visible": sum(not_visible.values()),
            "face_not_visible_reasons": dict(sorted(not_visible.items())),
            "faces_embedded": self.faces["embedded"],
            "face_not_embedded_reasons": dict(sorted(not_embedded.items())),  # visible, not embedded
        }


def no_examples_message(counts: dict[str, Any]) -> str:
    """Why nothing was written, from `PrepStats.to_dict()` counts."""
    first = "; ".join(f"{i}: {reason} ({detail})" for i, reason, detail in counts["skipped_examples"][:3])
    return f"none of the {counts['skipped']} scenes could be prepared (skip reasons {counts['skip_reasons']}; first: {first})"
