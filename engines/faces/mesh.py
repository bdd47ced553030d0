"""mediapipe face mesh: the 468 landmarks of the most prominent face (:class:`FaceMesh`) — calibration,
best-frame search, evaluation (AKD), prepare-data and landmark-keypoint models."""

from __future__ import annotations

import numpy as np

from splinecam.engines.faces.geometry import FaceBox, check_image, crop_box_for_face, crop_image
from splinecam.engines.faces.graphs import QuietGraph


class FaceMesh:
    """mediapipe face mesh: 468 landmarks of the most prominent face.

    ``static=True`` (stills, calibration) detects on every call; ``static=False`` tracks
    between calls (live video, faster). The graph is built on first use.
    """

    def __init__(self, static: bool = True, min_score: float = 0.5) -> None:
        self.static, self.min_score = static, min_score
        self._mesh = None

    def landmarks(self, image_rgb: np.ndarray, face: FaceBox | None = None) -> np.ndarray | None:
        """``(468, 2)`` float32 landmark coordinates in pixels of ``image_rgb`` (H×W×3 uint8
        RGB), or None when no face is found. With ``face``, the mesh runs on a 256×256 crop
        around it (helps with small faces in big pictures)."""
        check_image(image_rgb)
        if face is not None:
            box = crop_box_for_face(face, 2.0, 0.0)
            crop = crop_image(image_rgb, box, 256)
            pts = self.landmarks(crop)
            if pts is None:
                return None
            x0, y0, x1, _ = box.as_int()
            return (pts * np.float32((x1 - x0) / 256.0) + np.float32([x0, y0])).astype(np.float32)
        if self._mesh is None:
            import mediapipe as mp

            self._mesh = QuietGraph(lambda: mp.solutions.face_mesh.FaceMesh(
                static_image_mode=self.static, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=self.min_score))
        h, w = image_rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image_rgb))
        if not result.multi_face_landmarks:
            return None
        lms = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h) for p in lms[:468]], dtype=np.float32)

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "FaceMesh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
