"""Keypoints from face-mesh landmarks: the keypoint engine of landmark configs (``head: landmarks``).

A landmark config lists K = 5·T mediapipe face-mesh indices (``kp_detector_params.landmarks``); its
keypoints are those landmarks of the 256×256 face crop, in the grid convention every network uses
((x, y) in [-1, 1], pixel centres at ±1: :func:`landmarks_to_grid`, the same as the training data's).
The mesh costs a few milliseconds a frame on a CPU, next to tens for a keypoint network, and it follows
any face it can find — the keypoints never see pixels of anything but the face's geometry.

:class:`LandmarkKeypoints` runs the mesh: a static one for stills (the avatar), a tracking one for
video (the driving frames). A video frame where the mesh loses the face keeps the previous frame's
keypoints (counted in ``misses``); an avatar without a face mesh is refused with a one-line error
(every portrait in ``data/avatars``, paintings and a cartoon included, has one).
"""

from __future__ import annotations

import numpy as np

from splinecam.engines.errors import FaceNotFoundError
from splinecam.engines.tpsmm.config import ModelConfig


def landmarks_to_grid(landmarks_px: np.ndarray, size: int) -> np.ndarray:
    """Pixel landmarks (…,2) of a size×size frame (mediapipe's convention: pixel i spans [i, i+1)) →
    grid coordinates in [-1, 1] with pixel centres at the ends (``align_corners=True``)."""
    return ((np.asarray(landmarks_px, np.float32) - 0.5) / (size - 1) * 2 - 1).astype(np.float32)


class LandmarkKeypoints:
    """Face-mesh keypoints of one landmark config: ``source(image)`` for an avatar, ``driving(frame)`` per
    video frame. Images are (S,S,3) RGB uint8 (float32 [0,1] is converted)."""

    def __init__(self, config: ModelConfig):
        if not config.landmark_keypoints:
            raise ValueError(f"{config.name} does not take face-mesh keypoints")
        self.indices = np.asarray(config.keypoint.landmarks, np.int64)
        self.size = config.image_size
        self._static = None
        self._video = None
        self._last: np.ndarray | None = None
        self.misses = 0

    @staticmethod
    def _uint8(image: np.ndarray) -> np.ndarray:
        if image.dtype == np.uint8:
            return image
        return np.clip(np.rint(np.asarray(image, np.float32) * 255), 0, 255).astype(np.uint8)

    def _mesh(self, static: bool):
        from splinecam.engines.faces import FaceMesh

        if static:
            self._static = self._static or FaceMesh(static=True)
            return self._static
        self._video = self._video or FaceMesh(static=False)
        return self._video

    def keypoints_of(self, landmarks_px: np.ndarray) -> np.ndarray:
        """(468,2) pixel landmarks of an S×S crop → (K,2) float32 keypoints."""
        return landmarks_to_grid(np.asarray(landmarks_px)[self.indices], self.size)

    def source(self, image: np.ndarray) -> np.ndarray:
        """Keypoints of an avatar (static mesh): (K,2) float32. No face → FaceNotFoundError."""
        pts = self._mesh(True).landmarks(self._uint8(image))
        if pts is None:
            raise FaceNotFoundError("the face mesh found no face in the avatar crop: use a portrait with a clearly "
                                    "visible face, or a model with a keypoint network (--checkpoint)")
        return self.keypoints_of(pts)

    def driving(self, frame: np.ndarray) -> np.ndarray:
        """Keypoints of the next video frame (tracking mesh): (K,2) float32. A frame where the mesh loses
        the face repeats the last keypoints; FaceNotFoundError only before the first face."""
        pts = self._mesh(False).landmarks(self._uint8(frame))
        if pts is None:
            self.misses += 1
            if self._last is None:
                raise FaceNotFoundError("the face mesh found no face in the driving frame")
            return self._last.copy()
        self._last = self.keypoints_of(pts)
        return self._last.copy()

    def reset(self) -> None:
        """Start a new video (the tracking mesh forgets the last face)."""
        if self._video is not None:
            self._video.close()
            self._video = None
        self._last = None

    def close(self) -> None:
        for mesh in (self._static, self._video):
            if mesh is not None:
                mesh.close()
        self._static = self._video = None
