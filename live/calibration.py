"""Calibration by best-frame search (Avatarify's "F" key, the official ``find_best_frame`` live).

While the search runs, every webcam face crop is scored against the avatar's face landmarks
(mediapipe face mesh, ``splinecam.engines.faces.best_frame.landmark_distance``: 0 = the same shape and pose up to
translation and scale); the preview shows the avatar as a ghost over the crop and the match
score, so the user can line up. Finishing (the key again, or ``max_s`` seconds) calibrates with
the driving keypoints of the best-matching frame. The other calibration, the reset key, simply
takes the current frame (``KeypointNormaliser.calibrate``).

    search = BestFrameSearch()
    search.start(avatar.image, t)              # False: no face landmarks in the avatar
    match = search.update(crop, kp_raw, t)     # Match | None (no landmarks in this crop)
    kp_ref = search.finish()                   # (K, 2) keypoints of the best frame, or None
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from splinecam.engines.faces.best_frame import landmark_distance
from splinecam.engines.faces.mesh import FaceMesh

SCORE_SCALE = 2.0  # distance at which the 0-100 score is 100/e ≈ 37 (webcam vs. a portrait: 1-6)


@dataclass(frozen=True)
class Match:
    """distance: this frame's landmark distance (lower is better); best: the best so far;
    score / best_score: the same as 0-100 (100 = identical pose)."""

    distance: float
    best: float

    @staticmethod
    def to_score(d: float) -> float:
        return 100.0 * math.exp(-d / SCORE_SCALE) if math.isfinite(d) else 0.0

    @property
    def score(self) -> float:
        return self.to_score(self.distance)

    @property
    def best_score(self) -> float:
        return self.to_score(self.best)


class BestFrameSearch:
    """See the module doc. ``mesh`` (stills, for the avatar) and ``live_mesh`` (tracking, for the
    webcam crops) are created on first use unless given (tests pass fakes)."""

    def __init__(self, mesh: FaceMesh | None = None, live_mesh: FaceMesh | None = None, max_s: float = 10.0):
        self._mesh, self._live_mesh = mesh, live_mesh
        self.max_s = max_s
        self.active = False
        self.last: Match | None = None
        self._target: np.ndarray | None = None
        self._best = math.inf
        self._best_kp: np.ndarray | None = None
        self._t0 = 0.0

    def start(self, avatar_image: np.ndarray, t: float) -> bool:
        """Begin searching for the frame matching ``avatar_image`` ((S, S, 3) RGB) at source time t."""
        self._mesh = self._mesh or FaceMesh(static=True)
        self._target = self._mesh.landmarks(avatar_image)
        if self._target is None:
            self.active = False
            return False
        self.active, self.last = True, None
        self._best, self._best_kp, self._t0 = math.inf, None, float(t)
        return True

    def update(self, crop: np.ndarray, kp_raw: np.ndarray, t: float) -> Match | None:
        """Score one driving crop ((S, S, 3) RGB) whose raw keypoints are ``kp_raw`` (K, 2)."""
        if not self.active or self._target is None:
            return None
        self._live_mesh = self._live_mesh or FaceMesh(static=False)
        pts = self._live_mesh.landmarks(crop)
        if pts is None:
            return self.last
        d = landmark_distance(self._target, pts)
        if d < self._best:
            self._best, self._best_kp = d, np.asarray(kp_raw, np.float32).copy()
        self.last = Match(d, self._best)
        return self.last

    def expired(self, t: float) -> bool:
        return self.active and float(t) - self._t0 >= self.max_s

    def finish(self) -> np.ndarray | None:
        """Stop; the best frame's raw keypoints (None if no frame had landmarks)."""
        self.active = False
        return self._best_kp

    def close(self) -> None:
        for m in (self._mesh, self._live_mesh):
            if m is not None:
                m.close()


def ghost_overlay(crop: np.ndarray, avatar_image: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The avatar blended over the driving crop (both (S, S, 3) uint8) to line the face up."""
    if avatar_image.shape != crop.shape:
        avatar_image = cv2.resize(avatar_image, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_AREA)
    return cv2.addWeighted(crop, 1.0 - alpha, avatar_image, alpha, 0.0)
