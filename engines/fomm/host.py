"""FOMM's per-frame host step: packed driving keypoints → the generator graph's per-frame inputs.

The keypoints' 2×2 jacobians are inverted here, on the host (:func:`splinecam.engines.fomm.keypoints.
source_driving_jacobian`), so no exported graph holds a matrix inverse (as TPSMM's TPS solve,
DESIGN.md §3). Every engine's FOMM generator takes exactly these feeds, by name
(:mod:`splinecam.engines.export.fomm_graphs`).
"""

from __future__ import annotations

import numpy as np

from splinecam.engines.fomm.keypoints import source_driving_jacobian, unpack

#: the generator's per-frame inputs, in its input order (after the cached source tensors)
FRAME_INPUTS = ("kp_driving", "kp_jacobian")


def generator_feeds(config, kp_driving: np.ndarray, kp_source: np.ndarray,
                    bg_param: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(K,6) normalised driving and (K,6) source keypoints → kp_driving (1,K,2), kp_jacobian (1,K,2,2):
    float32, contiguous. FOMM has no background motion: ``bg_param`` is accepted for the common
    signature and must be None or the identity."""
    if bg_param is not None and not np.allclose(np.asarray(bg_param, np.float32).reshape(3, 3), np.eye(3)):
        raise ValueError("FOMM has no background motion: bg_param must be None or the identity")
    drv = np.asarray(kp_driving, np.float32).reshape(1, -1, 6)
    src = np.asarray(kp_source, np.float32).reshape(1, -1, 6)
    value, _ = unpack(drv)
    return {"kp_driving": np.ascontiguousarray(value),
            "kp_jacobian": np.ascontiguousarray(source_driving_jacobian(src, drv))}
