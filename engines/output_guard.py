"""The sanity guard on every generated frame: never a silently black call.

    check_prediction(pred, source_image)   # Backend.generate calls it on each (1,3,S,S) prediction
    check_frame(image, source_image)       # a finished (S,S,3) uint8 frame (the GPU pipeline's): all-black only

A prediction is refused with :class:`GeneratorOutputError` (one line: what is wrong, the likely cause,
the fix) when

* any value is NaN or ±inf (damaged weights, an fp16 overflow, a broken engine), or
* it is all black (fewer than ``BLACK_SHARE`` of its pixels brighter than ``DARK``) while the avatar it
  animates is not (more than ``LIT_SHARE`` of the avatar's pixels are): a cached graph with zeroed
  weights, a wrong engine build.

What the callers do with it: ``animate`` stops with the message (the frames written so far are kept);
the live loop holds the avatar (the meeting sees the avatar at rest, never a black frame), counts the
frame as ``bad_output``, says so once in the terminal and on the preview, and carries on.

Cost: two vectorised comparisons over one frame (well under a millisecond at 256×256).
"""

from __future__ import annotations

import numpy as np

from splinecam.engines.errors import SplinecamError

DARK = 2 / 255         # a pixel whose channel mean is at or below this counts as black (a broken engine gives 0)
BLACK_SHARE = 0.005    # a prediction with fewer bright pixels than this share is "all black"
LIT_SHARE = 0.2        # an avatar with more bright pixels than this share is "not black"


class GeneratorOutputError(SplinecamError):
    """The generator returned an unusable frame (non-finite, or black where the avatar is not)."""


def _bright_share(image: np.ndarray, channels_first: bool) -> float:
    """Share of pixels whose channel mean is above DARK: (1,3,S,S) (``channels_first``) or (S,S,3),
    uint8 or float in [0, 1]."""
    a = np.asarray(image)
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    mean = a.reshape(a.shape[-3:]).mean(axis=0) if channels_first else a.mean(axis=-1)
    return float((mean > DARK * scale).mean())


def check_prediction(pred: np.ndarray, source_image: np.ndarray | None = None) -> None:
    """Raise :class:`GeneratorOutputError` if ``pred`` ((1,3,S,S) float in [0,1]) is not finite, or is
    all black while ``source_image`` ((S,S,3) uint8 or float32 in [0,1]; None: not checked) is not."""
    p = np.asarray(pred)
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p)).sum())
        raise GeneratorOutputError(f"the generator's output holds {bad} NaN/inf values of {p.size}: the engine or "
                                   f"its weights are damaged (try another --backend, or another --checkpoint)")
    if source_image is not None and _bright_share(p, True) < BLACK_SHARE and _bright_share(source_image, False) > LIT_SHARE:
        raise GeneratorOutputError("the generator's output is all black although the avatar is not: the engine or "
                                   "its weights are damaged (try another --backend, or another --checkpoint)")


def check_frame(image: np.ndarray, source_image: np.ndarray | None = None) -> None:
    """The all-black check on a finished (S,S,3) frame (uint8, or float in [0,1]); non-finite values are
    no longer visible once a frame is uint8, so :func:`check_prediction` is the full guard."""
    if source_image is not None and _bright_share(image, False) < BLACK_SHARE \
            and _bright_share(source_image, False) > LIT_SHARE:
        raise GeneratorOutputError("the generator's output is all black although the avatar is not: the engine or "
                                   "its weights are damaged (try another --backend, or another --checkpoint)")
