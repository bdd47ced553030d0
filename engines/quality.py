"""Picture quality: the one PSNR of splinecam (``training/evaluate.py``, ``splinecam bench``, the ``auto``
backend policy), and the floor a reduced precision must keep against float32."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

#: the PSNR of identical pictures, and the most any pair scores (an MSE of 1e-10 of the peak² or less)
IDENTICAL_PSNR_DB = 100.0
#: a reduced precision (bf16, fp16, int8) is acceptable at this PSNR against float32 or above
PSNR_FLOOR_DB = 35.0


def psnr(a: np.ndarray, b: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB of two pictures of the same shape, 10·log10(peak² / MSE), at most
    :data:`IDENTICAL_PSNR_DB` (identical pictures score exactly that). ``peak``: 255 for uint8 pictures,
    1 for float ones in [0, 1] (the default follows ``a``'s dtype)."""
    if peak is None:
        peak = 255.0 if np.asarray(a).dtype == np.uint8 else 1.0
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse <= peak * peak * 10 ** (-IDENTICAL_PSNR_DB / 10):
        return IDENTICAL_PSNR_DB
    return 10 * math.log10(peak * peak / mse)


def mean_psnr(frames: Iterable[np.ndarray], reference: Iterable[np.ndarray], peak: float | None = None) -> float:
    """Mean over frame pairs of :func:`psnr`."""
    return float(np.mean([psnr(a, b, peak) for a, b in zip(frames, reference)]))
