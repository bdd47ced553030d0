"""benchmarks/black_regions.py: issue 12's rule on frames, and the backend a sweep's animate ran."""

import subprocess
import sys

import numpy as np

from tests.conftest import REPO


def test_a_dark_region_grown_past_the_margin_is_flagged_and_the_avatars_own_is_not():
    from splinecam.benchmarks.black_regions import check_frames

    frame = np.full((100, 100, 3), 200, np.uint8)
    own = frame.copy()
    own[:10, :10] = 0                      # the avatar's own dark patch: 1 % of the frame
    grown = own.copy()
    grown[:10, 10:12] = 5                  # the same patch 0.2 % bigger, joined to it
    apart = own.copy()
    apart[50:59, 50:59] = 0                # a separate, smaller dark patch: the largest region is still 1 %
    report = check_frames([own, grown, apart], reference_fraction=0.01)
    assert report.flagged == [1] and report.frames == 3 and report.worst_pixels == 120
    assert report.excess == [0.002]


def test_the_sweep_reads_the_backend_animate_ran(tmp_path):
    from splinecam.benchmarks.black_regions import animate_backend

    out = tmp_path / "a.mp4"
    done = subprocess.run([sys.executable, "-m", "splinecam.cli", "animate", "--source",
                           str(REPO / "live" / "assets" / "mona.jpg"), "--driving",
                           str(REPO / "live" / "assets" / "webcam.mp4"), "--out", str(out), "--max-frames", "2",
                           "--backend", "onnxruntime", "--precision", "fp32"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-500:]
    assert animate_backend(done.stdout) == "onnxruntime/cpu/fp32"
    assert animate_backend("wrote x.mp4: 3 frames") == ""
