"""Scene outcomes and the report's counts: order-independent merging (as Beam combines per-worker counts)."""

import numpy as np

from data_prep import scene_outcome
from data_prep.scene_outcome import MAX_LISTED, PrepStats, SceneOutcome


def _outcomes(num: int) -> list[SceneOutcome]:
    rng = np.random.default_rng(0)
    outcomes = []
    for index in range(num):
        if rng.random() < 0.5:
            outcomes.append(SceneOutcome(index, f"id{index}", str(rng.choice(["missing_fit", "bad_shape"])), "why"))
        else:
            faces = tuple(rng.choice([None, "hidden", "out_of_frame", "no_face_model"], size=2))
            people = tuple(rng.choice([None, None, "outside_image", "fully_occluded"], size=2))
            outcomes.append(SceneOutcome(index, f"id{index}", None, "", faces, people))
    return outcomes


def test_counts_merged_in_any_order_equal_counts_added_in_order():
    outcomes = _outcomes(5 * MAX_LISTED)
    in_order = PrepStats()
    for outcome in outcomes:
        in_order.add(outcome)

    rng = np.random.default_rng(1)
    shuffled = [outcomes[i] for i in rng.permutation(len(outcomes))]
    parts = []
    for chunk in np.array_split(np.arange(len(shuffled)), 7):
        part = PrepStats()
        for i in chunk:
            part.add(shuffled[i])
        parts.append(part)
    merged = parts[3].merge(parts[:3] + parts[4:])
    assert merged.to_dict() == in_order.to_dict()

    report = in_order.to_dict()
    skipped = [o for o in outcomes if o.skip_reason is not None]
    assert report["skipped"] == len(skipped) and report["written"] == len(outcomes) - len(skipped)
    assert report["skipped_examples"] == [[o.image_id, o.skip_reason, "why"] for o in skipped[:MAX_LISTED]]
    faces = [f for o in outcomes if o.skip_reason is None for f in o.face_reasons]
    assert report["faces_embedded"] == faces.count(None)
    assert report["faces_visible"] == faces.count(None) + faces.count("no_face_model")
    assert report["face_not_visible_reasons"] == {
        "hidden": faces.count("hidden"),
        "out_of_frame": faces.count("out_of_frame"),
    }
    assert report["face_not_embedded_reasons"] == {"no_face_model": faces.count("no_face_model")}
    invisible = [
        (o.image_id, i, r) for o in outcomes if o.skip_reason is None for i, r in enumerate(o.person_reasons) if r
    ]
    assert report["people_not_visible"] == len(invisible)
    assert report["people_not_visible_examples"] == [list(item) for item in invisible[:MAX_LISTED]]


def test_people_without_visible_pixels_get_a_reason():
    amodal = np.zeros((3, 4, 4), np.uint8)
    amodal[0, :2] = 1  # person 1: visible
    amodal[1, :1] = 1  # person 2: silhouette entirely behind person 1
    instance = np.where(amodal[0] > 0, 1, 0).astype(np.uint8)  # person 3: no silhouette at all
    reasons = scene_outcome.person_reasons({"amodal": amodal, "instance": instance, "num_people": 3})
    assert reasons == (None, "fully_occluded", "outside_image")
