"""benchmarks/motion_folds.py: the folded share of the bundled model's dense motion, per frame of an animation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytest.importorskip("torch")
CLIP = REPO / "live" / "assets" / "webcam.mp4"
AVATAR = REPO / "live" / "assets" / "mona.jpg"


def test_measures_every_frame_and_every_warp(tmp_path):
    import json

    out = tmp_path / "folds.json"
    done = subprocess.run([sys.executable, "-m", "splinecam.benchmarks.motion_folds", "--source", str(AVATAR),
                           "--driving", str(CLIP), "--max-frames", "6", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "mixed grid folded over" in done.stdout
    (report,) = json.loads(out.read_text())
    assert len(report["mixed"]) == 6 and all(0 <= m <= 1 for m in report["mixed"])
    assert len(report["single_folds"]) == 11                    # the identity + 10 TPS of cpu-256
    assert report["single_folds"][0] == 0                       # the identity never folds
    assert report["mean"] == pytest.approx(float(np.mean(report["mixed"])))


def test_a_source_without_a_face_is_one_line(tmp_path):
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 128, 3), 90, np.uint8))
    done = subprocess.run([sys.executable, "-m", "splinecam.benchmarks.motion_folds", "--source", str(blank),
                           "--driving", str(CLIP), "--max-frames", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("motion_folds: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-1500:]
    missing = subprocess.run([sys.executable, "-m", "splinecam.benchmarks.motion_folds", "--source",
                              str(tmp_path / "nope.png"), "--driving", str(CLIP)], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "nope.png is not a file" in missing.stderr
