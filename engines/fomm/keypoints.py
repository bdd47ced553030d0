"""FOMM keypoints on the host: the (K, 6) layout, 2×2 inverses, and the official normalisation.

The keypoint interface of the backends and the live loop is one float32 array per frame, (K, D):
D = 2 for TPSMM (x, y), D = 6 for FOMM — x, y, then the keypoint's 2×2 jacobian row-major
(j00, j01, j10, j11). The first two columns are always the position, so everything that only
looks at positions (hull scale, preview dots) reads ``kp[:, :2]``, and everything that treats keypoints
as numbers (One-Euro smoothing, the hold/ease fallback, remembered calibrations, best-frame search)
works unchanged on the whole row. A model without jacobians (``estimate_jacobian: false``) carries the
identity, which the maths below turns into exactly no local affine change.

Normalisation (the official ``normalize_kp``, as ``demo.py --relative --adapt_scale`` calls it):

- value: ``kp_src + (kp_drv − kp_drv_ref) · s``, s = sqrt(hull area of kp_src / hull area of kp_drv_ref)
  (computed once at calibration, on positions; a degenerate hull gives s = 1, as for TPSMM);
- jacobian (``relative_jacobian``, on by default as in the official demo): ``J_drv · J_drv_ref⁻¹ · J_src``;
  off, the driver's raw jacobian is used (relative movement of positions only).

2×2 inverses are taken here, on the host, never in an exported graph. A singular jacobian (|det| below
:data:`DET_EPS`, or not finite) is treated as the identity instead of producing inf/NaN motion.
"""

from __future__ import annotations

import numpy as np

KP_WIDTH = 6
DET_EPS = 1e-8


def pack(value: np.ndarray, jacobian: np.ndarray | None) -> np.ndarray:
    """value (…,K,2) [+ jacobian (…,K,2,2), identity when None] → (…,K,6) float32."""
    value = np.asarray(value, np.float32)
    if jacobian is None:
        jacobian = np.broadcast_to(np.eye(2, dtype=np.float32), value.shape[:-1] + (2, 2))
    jac = np.asarray(jacobian, np.float32).reshape(value.shape[:-1] + (4,))
    return np.ascontiguousarray(np.concatenate([value, jac], axis=-1))


def unpack(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(…,K,6) → value (…,K,2), jacobian (…,K,2,2), float32."""
    kp = np.asarray(kp, np.float32)
    if kp.shape[-1] != KP_WIDTH:
        raise ValueError(f"FOMM keypoints have {KP_WIDTH} columns (x, y, 2×2 jacobian), got shape {kp.shape}")
    return kp[..., :2], kp[..., 2:].reshape(kp.shape[:-1] + (2, 2))


def has_jacobians(kp: np.ndarray) -> bool:
    """Whether keypoint rows carry jacobians (FOMM's (K, 6)) rather than positions only (TPSMM's (K, 2))."""
    return np.asarray(kp).shape[-1] == KP_WIDTH


def inverse_2x2(jacobian: np.ndarray) -> np.ndarray:
    """Inverses of (…,2,2) float32 matrices; singular or non-finite ones are replaced by the identity."""
    j = np.asarray(jacobian, np.float32)
    det = j[..., 0, 0].astype(np.float64) * j[..., 1, 1] - j[..., 0, 1].astype(np.float64) * j[..., 1, 0]
    bad = ~np.isfinite(det) | (np.abs(det) < DET_EPS) | ~np.isfinite(j).all(axis=(-2, -1))
    safe = np.where(bad[..., None, None], np.eye(2, dtype=np.float32), j)
    return np.linalg.inv(safe).astype(np.float32)


def relative_jacobian(jac_source: np.ndarray, jac_driving: np.ndarray, jac_driving_ref: np.ndarray) -> np.ndarray:
    """The official relative jacobian J_drv · J_drv_ref⁻¹ · J_src, (…,K,2,2) float32."""
    diff = np.matmul(np.asarray(jac_driving, np.float32), inverse_2x2(jac_driving_ref))
    return np.matmul(diff, np.asarray(jac_source, np.float32)).astype(np.float32)


def relative_keypoints(kp_source: np.ndarray, kp_driving: np.ndarray, kp_driving_ref: np.ndarray, scale: float,
                       use_relative_jacobian: bool = True) -> np.ndarray:
    """Official relative normalisation of packed keypoints (K,6) (or batches (…,K,6)) → (…,K,6) float32.

    ``scale`` is the adapt-movement scale fixed at calibration (1 for none).
    """
    v_src, j_src = unpack(kp_source)
    v_drv, j_drv = unpack(kp_driving)
    v_ref, j_ref = unpack(kp_driving_ref)
    value = (v_drv - v_ref) * np.float32(scale) + v_src
    jac = relative_jacobian(j_src, j_drv, j_ref) if use_relative_jacobian else j_drv
    return pack(value, np.broadcast_to(jac, value.shape[:-1] + (2, 2)))


def source_driving_jacobian(kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
    """J_src · J_drv⁻¹ (…,K,2,2) float32: the local affine part of each keypoint's warp (Eq. 4), what the
    generator graph takes as ``kp_jacobian``."""
    _, j_src = unpack(kp_source)
    _, j_drv = unpack(kp_driving)
    return np.matmul(j_src, inverse_2x2(j_drv)).astype(np.float32)
