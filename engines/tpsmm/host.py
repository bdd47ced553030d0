"""TPSMM's per-frame host step: driving keypoints → the generator graph's per-frame inputs. NumPy only.

The T small TPS systems are solved here, on the host (DESIGN.md §3: no exported graph holds a matrix
inverse), in float64 and handed to the graphs as float32 — "float32 or better". It is the same system
as the official code's (:func:`splinecam.engines.tpsmm.geometry.solve_tps`: the 0.01 added to the whole
(P+3)² diagonal, U(r) = r²·log(r²+1e-9)), solved instead of inverted. Every engine's generator takes
exactly these feeds, by name (:mod:`splinecam.engines.export.graphs`); no torch is needed, so the light
install (ONNX Runtime / OpenVINO only) runs it too.
"""

from __future__ import annotations

import numpy as np

from splinecam.engines.tpsmm.config import ModelConfig

#: the generator's per-frame inputs, in its input order (after the cached source tensors)
FRAME_INPUTS = ("kp_driving", "tps_theta", "tps_params", "bg_param")
TPS_REGULARISER = 0.01
LOG_EPS = 1e-9


def solve_tps_host(kp_driving: np.ndarray, kp_source: np.ndarray, num_tps: int, regularise: str = "all",
                   affine_tps: tuple[int, ...] = (), affine_fit: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The T TPS mapping driving keypoints onto source keypoints: (K,2), (K,2) → theta (T,2,3), params (T,P,2).

    P = K / T control points per TPS. float64 throughout. ``regularise``: "all" (official: the whole
    diagonal) or "kernel" (the radial block only; :data:`splinecam.engines.tpsmm.geometry.TPS_REGULARISE`).
    ``affine_tps`` / ``affine_fit``: the groups solved as one least-squares affine map of the ``affine_fit``
    groups' keypoints instead (:class:`splinecam.engines.tpsmm.geometry.AffineGroups`).
    """
    d = np.asarray(kp_driving, np.float64).reshape(num_tps, -1, 2)
    s = np.asarray(kp_source, np.float64).reshape(num_tps, -1, 2)
    t, p, _ = d.shape
    sq = ((d[:, :, None] - d[:, None, :]) ** 2).sum(-1)                       # (T,P,P)
    system = np.zeros((t, p + 3, p + 3))
    system[:, :p, :p] = sq * np.log(sq + LOG_EPS)
    system[:, :p, p:p + 2] = d
    system[:, :p, p + 2] = 1.0
    system[:, p:, :p] = system[:, :p, p:].transpose(0, 2, 1)
    system[:, np.arange(p), np.arange(p)] += TPS_REGULARISER
    if regularise == "all":
        system[:, np.arange(p, p + 3), np.arange(p, p + 3)] += TPS_REGULARISER
    elif regularise != "kernel":
        raise ValueError(f"TPS regularisation {regularise!r}: 'all' or 'kernel'")
    rhs = np.concatenate([s, np.zeros((t, 3, 2))], axis=1)                   # (T,P+3,2)
    param = np.linalg.solve(system, rhs)
    theta, params = param[:, p:, :].transpose(0, 2, 1), param[:, :p, :]      # views of this call's own array
    if affine_tps:
        fit = list(affine_fit) or list(range(t))
        x = d[fit].reshape(-1, 2)
        x = np.concatenate([x, np.ones((len(x), 1))], axis=1)                   # (M,3)
        a = np.linalg.solve(x.T @ x, x.T @ s[fit].reshape(-1, 2))                # (3,2)
        theta[list(affine_tps)] = a.T
        params[list(affine_tps)] = 0.0
    return theta, params


def generator_feeds(config: ModelConfig, kp_driving: np.ndarray, kp_source: np.ndarray,
                    bg_param: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(K,2) driving and source keypoints [+ (3,3) background] → the generator's per-frame feeds.

    kp_driving (1,K,2), tps_theta (1,T,2,3), tps_params (1,T,5,2), bg_param (1,3,3): float32,
    contiguous; ``bg_param`` is the identity without a background motion (exactly no motion).
    """
    kp = np.ascontiguousarray(np.asarray(kp_driving, np.float32).reshape(1, -1, 2))
    dm = config.dense_motion
    theta, params = solve_tps_host(kp[0], kp_source, config.num_tps, dm.tps_regularise, dm.affine_tps, dm.affine_fit)
    bg = np.eye(3, dtype=np.float32) if bg_param is None else np.asarray(bg_param, np.float32)
    return {"kp_driving": kp, "tps_theta": np.ascontiguousarray(theta[None], np.float32),
            "tps_params": np.ascontiguousarray(params[None], np.float32),
            "bg_param": np.ascontiguousarray(bg.reshape(1, 3, 3))}
