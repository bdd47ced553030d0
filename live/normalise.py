"""Keypoint normalisation: standard, relative and AVD (DESIGN.md §4).

- standard: the driving keypoints as they are (leaks the driver's face shape);
- relative: ``kp_src + (kp_drv − kp_drv_ref) · s`` with s = sqrt(hull area(kp_src) / hull area(kp_drv_ref)),
  computed once at calibration; a degenerate hull falls back to s = 1 with a warning;
- avd: the AVD network maps (source keypoints, driving keypoints) to keypoints with the source's
  shape and the driver's pose (TPSMM only: FOMM has no AVD network).

Keypoints are float32 numpy (K, D) rows whose first two columns are (x, y) in [-1, 1]: D = 2 for TPSMM;
D = 6 for FOMM, whose rows carry each keypoint's 2×2 jacobian (:mod:`splinecam.engines.fomm.keypoints`).
The hull scale is taken on positions. FOMM's relative mode is the official demo's (``--relative
--adapt_scale``): relative positions and the relative jacobian ``J_drv · J_drv_ref⁻¹ · J_src``;
``relative_jacobian=False`` keeps the driver's raw jacobians (relative positions only, Avatarify's default).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from splinecam.engines.errors import SplinecamError
from splinecam.engines.fomm import keypoints as fomm_keypoints
from splinecam.engines.relative_motion import relative_keypoints, relative_scale
from splinecam.live.kinds import StrEnum


class NormaliseMode(StrEnum):
    """``--mode``: how driving keypoints become the generator's (see the module docstring)."""

    RELATIVE = "relative"
    AVD = "avd"
    STANDARD = "standard"


MODES = tuple(m.value for m in NormaliseMode)  # the --mode choices, in the order the M key cycles them


@dataclass
class Calibration:
    """The reference driving keypoints and the relative-mode scale fixed at calibration."""

    kp_driving_ref: np.ndarray
    scale: float
    scale_ok: bool


class KeypointNormaliser:
    """Maps raw driving keypoints to the keypoints the generator is driven with.

    ``avd_fn(kp_source, kp_driving) -> kp`` is the backend's AVD network (needed for mode avd).
    Relative mode needs a calibration: :meth:`calibrate` with the reference frame's keypoints;
    the first frame seen is used when none was set. ``relative_jacobian`` applies to keypoints with
    jacobians (FOMM) only.
    """

    def __init__(self, kp_source: np.ndarray, mode: str = "relative",
                 avd_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                 relative_jacobian: bool = True):
        self.kp_source = np.asarray(kp_source, dtype=np.float32)
        self.avd_fn = avd_fn
        self.relative_jacobian = relative_jacobian
        self.calibration: Calibration | None = None
        self.mode = NormaliseMode.STANDARD
        self.set_mode(mode)

    def set_mode(self, mode: str | NormaliseMode) -> None:
        if mode not in MODES:
            raise SplinecamError(f"unknown --mode {mode!r}: use one of {', '.join(MODES)}")
        mode = NormaliseMode(mode)
        if mode is NormaliseMode.AVD and self.avd_fn is None:
            if fomm_keypoints.has_jacobians(self.kp_source):
                raise SplinecamError("--mode avd does not exist for FOMM checkpoints (FOMM has no AVD network): "
                                     "use --mode relative or standard")
            raise SplinecamError("--mode avd needs a checkpoint with an AVD network (this one has none): "
                                 "use --mode relative or a checkpoint trained with train-avd")
        self.mode = mode

    def set_source(self, kp_source: np.ndarray) -> None:
        """A new avatar: keep the reference frame, recompute the scale against the new source."""
        self.kp_source = np.asarray(kp_source, dtype=np.float32)
        if self.calibration is not None:
            self.calibrate(self.calibration.kp_driving_ref)

    def calibrate(self, kp_driving_ref: np.ndarray) -> Calibration:
        """Fix the reference driving keypoints and the hull scale (relative mode)."""
        ref = np.asarray(kp_driving_ref, dtype=np.float32)
        scale, ok = relative_scale(self.kp_source[..., :2], ref[..., :2])
        if not ok:
            warnings.warn("degenerate keypoint hull at calibration: relative scale falls back to 1", stacklevel=2)
        self.calibration = Calibration(ref.copy(), scale, ok)
        return self.calibration

    def __call__(self, kp_driving: np.ndarray) -> np.ndarray:
        kp = np.asarray(kp_driving, dtype=np.float32)
        if self.mode is NormaliseMode.STANDARD:
            return kp
        if self.mode is NormaliseMode.AVD:
            return np.asarray(self.avd_fn(self.kp_source, kp), dtype=np.float32)
        if self.calibration is None:
            self.calibrate(kp)
        cal = self.calibration
        if fomm_keypoints.has_jacobians(kp):
            return fomm_keypoints.relative_keypoints(self.kp_source, kp, cal.kp_driving_ref, cal.scale,
                                                     self.relative_jacobian)
        return relative_keypoints(self.kp_source, kp, cal.kp_driving_ref, np.float32(cal.scale)).astype(np.float32)
