"""Relative-mode maths, NumPy only (every model family; the light install needs it without torch).

The official demos' relative normalisation: driving keypoints as a displacement from a reference
driving frame, scaled by sqrt(hull area of the source keypoints / hull area of the reference), and
added to the source keypoints. A degenerate hull gives scale 1 and ``ok = False``.
"""

from __future__ import annotations

import numpy as np


def convex_hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of 2-D points (K, 2), float64; 0 for degenerate (collinear) sets."""
    pts = np.unique(np.asarray(points, dtype=np.float64).reshape(-1, 2), axis=0)
    if len(pts) < 3:
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    if len(hull) < 3:
        return 0.0
    x, y = hull[:, 0], hull[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def relative_scale(kp_source: np.ndarray, kp_driving_ref: np.ndarray, min_area: float = 1e-8) -> tuple[float, bool]:
    """The official relative-mode scale sqrt(hull area(kp_source) / hull area(kp_driving_ref)).

    Returns (scale, ok). A degenerate hull (collinear or coincident keypoints) gives (1.0, False):
    callers warn and carry on instead of producing inf/NaN motion.
    """
    a_src = convex_hull_area(kp_source)
    a_drv = convex_hull_area(kp_driving_ref)
    if not (a_src > min_area and a_drv > min_area) or not np.isfinite(a_src * a_drv):
        return 1.0, False
    return float(np.sqrt(a_src) / np.sqrt(a_drv)), True


def relative_keypoints(kp_source, kp_driving, kp_driving_ref, scale: float):
    """Relative normalisation: kp_src + (kp_drv − kp_drv_ref) · s. Works on numpy or torch, (…, K, 2)."""
    return kp_source + (kp_driving - kp_driving_ref) * scale
