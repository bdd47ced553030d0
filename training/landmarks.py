"""Keypoint warm start: which face-mesh landmarks the 50 keypoints are regressed onto.

TPS motion works best with keypoints spread over the face. :func:`choose_landmarks` picks K of the
468 mediapipe face-mesh landmarks by farthest-point sampling on the data's mean (normalised) face,
then orders them in num_tps groups of 5 neighbours (the face is split into 2 columns, each column into
num_tps/2 bands from top to bottom), so each TPS controls one region of the face. The chosen
indices are stored with the run (checkpoint and exported metadata).
"""

from __future__ import annotations

import numpy as np

from splinecam.training.data import DataError


def mean_face(landmarks: list[np.ndarray]) -> np.ndarray:
    """Mean of the per-frame landmarks (each (T,468,2), NaN = missing), centred and scaled: (468,2)."""
    known = [lm for lm in landmarks if lm is not None]
    stack = np.concatenate(known, axis=0) if known else np.zeros((0, 468, 2), np.float32)
    stack = stack[np.isfinite(stack).all(axis=(1, 2))]
    if len(stack) == 0:
        raise DataError("no frame of the training data has face-mesh landmarks: cannot tie the keypoints to "
                        "landmarks; run prepare-data without --no-landmarks, or train without --warmstart-steps "
                        "and landmark loss")
    stack = stack - stack.mean(axis=1, keepdims=True)
    stack = stack / stack.std(axis=(1, 2), keepdims=True)
    return stack.mean(axis=0)


def choose_landmarks(face: np.ndarray, num_tps: int = 10, points_per_tps: int = 5) -> np.ndarray:
    """Indices (num_tps·5,) into the 468 landmarks of ``face`` (468,2), grouped by TPS."""
    k = num_tps * points_per_tps
    chosen = [int(np.argmin(face[:, 1]))]  # start at the top of the forehead
    dist = np.linalg.norm(face - face[chosen[0]], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(face - face[nxt], axis=1))
    chosen = np.array(chosen)
    pts = face[chosen]
    cols = 2 if num_tps % 2 == 0 else 1
    order = np.argsort(pts[:, 0], kind="stable")
    groups = []
    for col in np.array_split(order, cols):
        col = col[np.argsort(pts[col, 1], kind="stable")]
        groups += np.array_split(col, num_tps // cols)
    out = np.concatenate([chosen[g] for g in groups])
    assert len(out) == k
    return out.astype(np.int64)
