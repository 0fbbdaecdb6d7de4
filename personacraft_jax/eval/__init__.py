"""Evaluation: metrics for generated images (numpy, host side) and held-out / report helpers.

- `face_identity`: ArcFace cosine similarity between each person's reference embedding and the face found at
  that person's expected place in the generated image (insightface detection + keypoint matching).
- `body_shape`: agreement of SMPL-X betas fitted to the generated image (Multi-HMR format) with the requested
  betas, after matching fitted people to requested people.
- `matching`: the shared one-to-one assignment (Hungarian, with a cost threshold).

`launch.evaluate` runs both on a `launch.sample` output folder and writes `metrics.json`.
"""
