"""The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012): splinecam's one smoothing filter, for the live
loop's keypoints (``live/smoothing.py``) and the face tracker's crop (``engines/faces/tracker.py``).

A low-pass filter whose cut-off rises with speed: still values are smoothed hard (no jitter), fast ones
barely (little lag). Elementwise on arrays of a fixed shape; time in seconds.

    f = OneEuroFilter(min_cutoff=1.0, beta=4.0)
    y = f(x, t)        # a new array of x's shape, in the filter's dtype
    f.reset()          # the next value starts the filter anew
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_MIN_CUTOFF = 1.0  # Hz: cut-off when the values are still
DEFAULT_BETA = 4.0        # Hz per (unit per second): how fast the cut-off rises with speed
DEFAULT_D_CUTOFF = 1.0    # Hz: cut-off of the speed estimate
FALLBACK_DT = 1.0 / 30.0  # s: the step assumed for a timestamp that does not increase


def _alpha(cutoff, dt: float):
    """Smoothing factor of an exponential filter with cut-off ``cutoff`` Hz at step ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter, elementwise. ``min_cutoff`` / ``beta`` may be arrays that broadcast against the
    values (a per-element cut-off: the tracker smooths a crop's side harder than its centre). ``dtype``:
    the values' and the state's type (float32 for keypoints, float64 for pixel coordinates). A timestamp
    that does not increase is taken as :data:`FALLBACK_DT` after the previous one (never a division by
    zero). A value of another shape than the last restarts the filter."""

    def __init__(self, min_cutoff=DEFAULT_MIN_CUTOFF, beta=DEFAULT_BETA, d_cutoff: float = DEFAULT_D_CUTOFF,
                 dtype=np.float32):
        if not (np.all(np.isfinite(min_cutoff)) and np.all(np.asarray(min_cutoff) > 0)):
            raise ValueError(f"One-Euro min-cutoff must be finite and > 0, got {min_cutoff!r}")
        if not (np.all(np.isfinite(beta)) and np.all(np.asarray(beta) >= 0)):
            raise ValueError(f"One-Euro beta must be finite and >= 0, got {beta!r}")
        if not (math.isfinite(d_cutoff) and d_cutoff > 0):
            raise ValueError(f"One-Euro d-cutoff must be finite and > 0, got {d_cutoff!r}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, float(d_cutoff)
        self.dtype = np.dtype(dtype)
        self.reset()

    @classmethod
    def from_settings(cls, s, dtype=np.float32) -> "OneEuroFilter":
        """From anything with ``min_cutoff``, ``beta``, ``d_cutoff`` (``live.smoothing.SmoothingSettings``)."""
        return cls(s.min_cutoff, s.beta, s.d_cutoff, dtype)

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if not dt > 0:
            dt = FALLBACK_DT
        self._t += dt
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = (a_d * dx + (1.0 - a_d) * self._dx).astype(self.dtype)
        a = _alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = (a * x + (1.0 - a) * self._x).astype(self.dtype)
        return self._x.copy()
