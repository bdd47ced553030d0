"""Tracking state of the live loop: the driving face crop, and what to drive with when it is lost.

    cropper = FaceCropper(FaceTracker(detect_every=DETECT_EVERY), size=256)
    tracked = cropper.update(frame)            # TrackedFace: the (S,S,3) crop or None, found or not
    fallback = PoseFallback(hold_s=0.25, ease_s=0.5)
    fallback.good(kp_norm, t)                  # every frame with a face
    pose = fallback.pose(kp_neutral, t)        # a frame without: hold, then ease to neutral

The crop comes from :class:`splinecam.engines.faces.tracker.FaceTracker` (mediapipe detection, smoothed crop locked
onto one person, re-detected when lost). Without a face the loop never animates from a stale or
empty crop: it holds the last good normalised keypoints for ``hold_s`` (a blink of a missed
detection goes unnoticed), then eases them to the avatar's own keypoints — the avatar at rest —
over ``ease_s`` with a smoothstep, then shows the avatar still.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from splinecam.engines.faces.geometry import CropBox, FaceBox, box_patch, crop_image
from splinecam.engines.faces.tracker import FaceTracker
from splinecam.live.capture import CapturedFrame
from splinecam.live.kinds import StrEnum

DETECT_EVERY = 2  # face detection on every 2nd frame while the face is found (every frame while lost)


def fast_crop(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """The live loop's driving crop: ``box`` of ``image`` (edge pixels replicated outside the picture, as
    ``splinecam.engines.faces.geometry.crop_image``) at ``size × size``, in about a tenth of a millisecond to
    half of one on a 2-core CPU instead of ``crop_image``'s 2–7 ms. A box at least twice ``size``: an area
    average by the integer part of the scale (OpenCV's fast path), then a bilinear resize for the rest; a box
    between ``size`` and twice it: one bilinear resize (``cv2.INTER_AREA`` by a fractional scale costs
    ~2.3 ms for a 414 px box; the face mesh resamples its input bilinearly anyway); a smaller box: bicubic, as
    ``crop_image``. (H, W, 3) uint8 → (size, size, 3) uint8."""
    x0, y0, x1, y1 = box.as_int()
    side = x1 - x0
    k = side // size
    if k >= 2:
        side -= side % k                                   # an exact multiple of k: at most k-1 px less
        box = CropBox(x0 + side / 2.0, y0 + side / 2.0, side)
        small = cv2.resize(box_patch(image, box), (side // k, side // k), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    if side <= size:
        return crop_image(image, box, size)
    return cv2.resize(box_patch(image, box), (size, size), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class TrackedFace:
    """The driving face in one frame.

    crop: (S, S, 3) uint8 RGB crop of the tracked face, or None when no face is in view.
    box: the crop in the frame's pixels (the last one while the face is lost; None before any).
    face: the raw detection, when this frame has one. lost_for: frames since the face was seen.
    """

    crop: np.ndarray | None
    box: CropBox | None
    face: FaceBox | None
    lost_for: int

    @property
    def found(self) -> bool:
        return self.crop is not None


class FaceCropper:
    """Runs a :class:`FaceTracker` on each captured frame and cuts the model's square crop."""

    def __init__(self, tracker: FaceTracker, size: int):
        self.tracker = tracker
        self.size = size

    def update(self, frame: CapturedFrame) -> TrackedFace:
        """Track in ``frame.image`` (H, W, 3 RGB) on the source clock; crop when the face is found."""
        state = self.tracker.update(frame.image, frame.media_time)
        if not state.face_found or state.crop is None:
            return TrackedFace(None, state.crop, None, max(1, state.frames_since_seen))
        return TrackedFace(fast_crop(frame.image, state.crop, self.size), state.crop, state.face, 0)

    def reset(self) -> None:
        self.tracker.reset()

    def close(self) -> None:
        self.tracker.close()


class PosePhase(StrEnum):
    """Where :class:`PoseFallback` is on a frame without a face."""

    HOLD = "hold"          # the last good pose
    EASING = "easing"      # on the way to the neutral pose
    NEUTRAL = "neutral"    # the avatar's own keypoints: show the avatar still


@dataclass(frozen=True)
class FallbackPose:
    """What to drive with on a frame without a face.

    kp: (K, 2) float32 normalised keypoints. phase: "hold" (the last good pose), "easing" (on the
    way to the neutral pose) or "neutral" (the avatar's own keypoints: show the avatar still).
    progress: 0 → 1 through the easing.
    """

    kp: np.ndarray
    phase: PosePhase
    progress: float


class PoseFallback:
    """Hold, then ease the last good normalised keypoints to the neutral pose (times in s)."""

    def __init__(self, hold_s: float = 0.25, ease_s: float = 0.5):
        self.hold_s, self.ease_s = float(hold_s), float(ease_s)
        self.reset()

    def reset(self) -> None:
        """Forget the last pose (a new avatar, a new calibration): the next loss shows neutral."""
        self._last: np.ndarray | None = None
        self._t_last = 0.0

    def good(self, kp: np.ndarray, t: float) -> None:
        """A frame with a face was driven with ``kp`` at source time ``t``."""
        self._last = np.asarray(kp, dtype=np.float32).copy()
        self._t_last = float(t)

    def pose(self, kp_neutral: np.ndarray, t: float) -> FallbackPose:
        neutral = np.asarray(kp_neutral, dtype=np.float32)
        if self._last is None:
            return FallbackPose(neutral, PosePhase.NEUTRAL, 1.0)
        since = float(t) - self._t_last
        if since <= self.hold_s:
            return FallbackPose(self._last, PosePhase.HOLD, 0.0)
        p = 1.0 if self.ease_s <= 0 else min(1.0, (since - self.hold_s) / self.ease_s)
        if p >= 1.0:
            return FallbackPose(neutral, PosePhase.NEUTRAL, 1.0)
        w = np.float32(p * p * (3.0 - 2.0 * p))  # smoothstep
        return FallbackPose(((1 - w) * self._last + w * neutral).astype(np.float32), PosePhase.EASING, p)
