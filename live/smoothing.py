"""Keypoint smoothing settings of the live loop (``--smooth-min-cutoff``, ``--smooth-beta``, key S).

The filter itself is :class:`splinecam.engines.one_euro.OneEuroFilter` (the one One-Euro filter, shared
with the face tracker), applied to the raw driving keypoints, (K, D) float32, on the source's own clock
(seconds), before normalisation:

    f = OneEuroFilter.from_settings(SmoothingSettings(min_cutoff=1.0, beta=4.0))
    kp_smooth = f(kp, t)        # a new float32 array of kp's shape
    f.reset()                   # after a face was lost: the next value starts the filter anew
"""

from __future__ import annotations

from dataclasses import dataclass

from splinecam.engines.one_euro import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF
from splinecam.engines.validate import Range

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
