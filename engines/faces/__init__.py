"""Faces: detection, crop maths, the live tracker, face mesh and the best-frame search, one module each —
:mod:`~splinecam.engines.faces.geometry` (boxes, crops: no mediapipe), :mod:`~.graphs` (mediapipe graphs
with their start-up chatter silenced), :mod:`~.detection` (``FaceDetector``, the shared detector,
``find_face``, ``stable_crop_for_frames``), :mod:`~.tracker` (``FaceTracker``), :mod:`~.mesh`
(``FaceMesh``) and :mod:`~.best_frame` (``find_best_frame``, ``landmark_distance``). Import from those.
"""

# engines/tpsmm/landmarks.py (model code, left as it is) imports FaceMesh from here
from splinecam.engines.faces.mesh import FaceMesh  # noqa: E402,F401
