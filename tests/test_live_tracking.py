"""Tracking: the fast crop matches engines.faces.geometry.crop_image; the cropper follows a face and reports
its loss."""

from __future__ import annotations

import numpy as np
import pytest

from splinecam.engines.faces.geometry import CropBox, FaceBox, crop_image
from splinecam.engines.faces.tracker import FaceTracker
from splinecam.live.capture import CapturedFrame
from splinecam.live.tracking import FaceCropper, fast_crop


def pattern(h=720, w=1280) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx // 3) % 256, (yy // 2) % 256, ((xx + yy) // 5) % 256], -1)
    return img.astype(np.uint8)


@pytest.mark.parametrize("box", [CropBox(640, 330, 610), CropBox(100, 100, 600), CropBox(1200, 700, 800),
                                 CropBox(640, 360, 300), CropBox(640, 360, 200)])
def test_fast_crop_matches_crop_image(box):
    img = pattern()
    fast, ref = fast_crop(img, box, 256), crop_image(img, box, 256)
    assert fast.shape == (256, 256, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(float) - ref.astype(float)).mean() < 1.0


def test_cropper_follows_the_face_and_reports_loss():
    class Detector:
        def __init__(self):
            self.face = True

        def detect(self, image):
            return [FaceBox(600, 300, 700, 400, 0.9)] if self.face else []

    det = Detector()
    cropper = FaceCropper(FaceTracker(det), 256)
    img = pattern()
    t = cropper.update(CapturedFrame(img, 0.0, 0, 0.0))
    assert t.found and t.crop.shape == (256, 256, 3) and t.lost_for == 0
    assert t.box.cx == pytest.approx(650) and t.box.size == pytest.approx(185)
    det.face = False
    t = cropper.update(CapturedFrame(img, 0.04, 1, 0.04))
    assert not t.found and t.crop is None and t.box is not None and t.lost_for == 1
