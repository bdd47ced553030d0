"""TPSMM's per-frame host step: driving keypoints → the generator graph's per-frame inputs.

The T small TPS systems are solved here, on the host, in float32 (:func:`solve_tps`), so no exported
graph holds a matrix inverse (DESIGN.md §3). Every engine's generator takes exactly these feeds, by
name (:mod:`splinecam.engines.export.graphs`).
"""

from __future__ import annotations

import numpy as np

from splinecam.engines.tpsmm.config import ModelConfig

#: the generator's per-frame inputs, in its input order (after the cached source tensors)
FRAME_INPUTS = ("kp_driving", "tps_theta", "tps_params", "bg_param")


def generator_feeds(config: ModelConfig, kp_driving: np.ndarray, kp_source: np.ndarray,
                    bg_param: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(K,2) driving and source keypoints [+ (3,3) background] → the generator's per-frame feeds.

    kp_driving (1,K,2), tps_theta (1,T,2,3), tps_params (1,T,5,2), bg_param (1,3,3): float32,
    contiguous; ``bg_param`` is the identity without a background motion (exactly no motion).
    """
    import torch

    from splinecam.engines.tpsmm.geometry import solve_tps

    kp = np.ascontiguousarray(np.asarray(kp_driving, np.float32).reshape(1, -1, 2))
    src = np.ascontiguousarray(np.asarray(kp_source, np.float32).reshape(1, -1, 2))
    tps = solve_tps(torch.from_numpy(kp), torch.from_numpy(src), config.num_tps)
    bg = np.eye(3, dtype=np.float32) if bg_param is None else np.asarray(bg_param, np.float32)
    return {"kp_driving": kp, "tps_theta": np.ascontiguousarray(tps.theta.numpy()),
            "tps_params": np.ascontiguousarray(tps.control_params.numpy()),
            "bg_param": np.ascontiguousarray(bg.reshape(1, 3, 3))}
