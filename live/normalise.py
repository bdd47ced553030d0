"""Keypoint normalisation: standard, relative and AVD (DESIGN.md §4).

- standard: the driving keypoints as they are (leaks the driver's face shape);
- relative: ``kp_src + (kp_drv − kp_drv_ref) · s`` with s = sqrt(hull area(kp_src) / hull area(kp_drv_ref)),
  computed once at calibration; a degenerate hull falls back to s = 1 with a warning;
- avd: the AVD network maps (source keypoints, driving keypoints) to keypoints with the source's
  shape and the driver's pose.

Keypoints are float32 numpy (K, 2), (x, y) in [-1, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from splinecam.engines.errors import SplinecamError
from splinecam.engines.relative_motion import relative_keypoints, relative_scale

MODES = ("relative", "avd", "standard")


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
    the first frame seen is used when none was set.
    """

    def __init__(self, kp_source: np.ndarray, mode: str = "relative",
                 avd_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
        self.kp_source = np.asarray(kp_source, dtype=np.float32)
        self.avd_fn = avd_fn
        self.calibration: Calibration | None = None
        self.mode = "standard"
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise SplinecamError(f"unknown --mode {mode!r}: use one of {', '.join(MODES)}")
        if mode == "avd" and self.avd_fn is None:
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
        scale, ok = relative_scale(self.kp_source, ref)
        if not ok:
            warnings.warn("degenerate keypoint hull at calibration: relative scale falls back to 1", stacklevel=2)
        self.calibration = Calibration(ref.copy(), scale, ok)
        return self.calibration

    def __call__(self, kp_driving: np.ndarray) -> np.ndarray:
        kp = np.asarray(kp_driving, dtype=np.float32)
        if self.mode == "standard":
            return kp
        if self.mode == "avd":
            return np.asarray(self.avd_fn(self.kp_source, kp), dtype=np.float32)
        if self.calibration is None:
            self.calibrate(kp)
        cal = self.calibration
        return relative_keypoints(self.kp_source, kp, cal.kp_driving_ref, np.float32(cal.scale)).astype(np.float32)
