"""Keypoint smoothing: the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012).

A low-pass filter whose cut-off rises with speed: still keypoints are smoothed hard (no jitter),
fast ones barely (little lag). Applied to the raw driving keypoints, (K, 2) float32 in [-1, 1],
on the source's own clock (seconds), before normalisation.

    f = OneEuroFilter(min_cutoff=1.0, beta=4.0)
    kp_smooth = f(kp, t)        # any array shape; returns a new float32 array of that shape
    f.reset()                   # after a face was lost: the next value starts the filter anew
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from splinecam.engines.validate import Range

DEFAULT_MIN_CUTOFF = 1.0  # Hz: cut-off when the keypoints are still
DEFAULT_BETA = 4.0        # Hz per (unit of [-1, 1] per second): how fast the cut-off rises with speed
DEFAULT_D_CUTOFF = 1.0    # Hz: cut-off of the speed estimate
CUTOFF = Range(float, low=0, low_open=True, high=1000)   # Hz (min-cutoff, d-cutoff)
BETA = Range(float, low=0, high=10_000)


@dataclass(frozen=True)
class SmoothingSettings:
    """``enabled`` off passes keypoints through untouched."""

    enabled: bool = True
    min_cutoff: float = DEFAULT_MIN_CUTOFF
    beta: float = DEFAULT_BETA
    d_cutoff: float = DEFAULT_D_CUTOFF

    def __post_init__(self) -> None:  # ValidationError is a ValueError: NaN / inf never get in
        CUTOFF.check(self.min_cutoff, "smoothing min-cutoff")
        CUTOFF.check(self.d_cutoff, "smoothing d-cutoff")
        BETA.check(self.beta, "smoothing beta")


def _alpha(cutoff, dt: float):
    """Smoothing factor of an exponential filter with cut-off ``cutoff`` Hz at step ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter, elementwise on arrays of a fixed shape. Time in seconds.

    A timestamp that does not increase is treated as 1/30 s after the previous one, so a
    repeated or out-of-order stamp never divides by zero.
    """

    def __init__(self, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                 d_cutoff: float = DEFAULT_D_CUTOFF):
        self.settings = SmoothingSettings(True, min_cutoff, beta, d_cutoff)
        self.reset()

    @classmethod
    def from_settings(cls, s: SmoothingSettings) -> "OneEuroFilter":
        return cls(s.min_cutoff, s.beta, s.d_cutoff)

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if not dt > 0:
            dt = 1.0 / 30.0
        self._t += dt
        s = self.settings
        dx = (x - self._x) / dt
        a_d = _alpha(s.d_cutoff, dt)
        self._dx = (a_d * dx + (1.0 - a_d) * self._dx).astype(np.float32)
        a = _alpha(s.min_cutoff + s.beta * np.abs(self._dx), dt)
        self._x = (a * x + (1.0 - a) * self._x).astype(np.float32)
        return self._x.copy()
