"""benchmarks/dark_provenance.py: a dark output pixel is 'carried' when the motion field samples a dark
avatar pixel, 'new' (a hole) otherwise."""

from __future__ import annotations

import numpy as np


def _identity_grid(size: int) -> np.ndarray:
    lin = np.linspace(-1, 1, size, dtype=np.float32)
    gx, gy = np.meshgrid(lin, lin)
    return np.stack([gx, gy], -1)


def test_dark_region_sampled_from_dark_source_is_carried():
    from splinecam.benchmarks.dark_provenance import new_dark_mask

    size = 64
    source = np.full((size, size, 3), 200, np.uint8)
    source[10:30, 10:30] = 5  # the avatar's own dark hair
    grid = _identity_grid(size)
    grid[..., 0] -= 10 / (size - 1) * 2  # every output pixel samples 10 px to its left: the hair moved right
    output = np.full((size, size, 3), 200, np.uint8)
    output[10:30, 20:40] = 5
    dark, carried = new_dark_mask(output, source, grid)
    assert dark.sum() == 400 and carried.sum() == 400


def test_dark_region_sampled_from_bright_source_is_new():
    from splinecam.benchmarks.dark_provenance import new_dark_mask

    size = 64
    source = np.full((size, size, 3), 200, np.uint8)
    source[10:30, 10:30] = 5
    output = source.copy()
    output[40:60, 40:60] = 0  # a hole where the avatar is bright, the warp the identity
    output[10:30, 10:30] = 200  # (the hair gone, so the hole is the largest dark region)
    dark, carried = new_dark_mask(output, source, _identity_grid(size))
    assert dark.sum() == 400 and carried.sum() == 0


def test_a_source_without_a_face_is_one_line(tmp_path):
    import subprocess
    import sys

    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 128, 3), 90, np.uint8))
    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "splinecam.benchmarks.dark_provenance", "--source", str(blank),
                           "--driving", str(REPO / "live" / "assets" / "webcam.mp4"), "--max-frames", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    lines = [line for line in done.stderr.splitlines() if line.startswith("dark_provenance: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-1500:]


def test_encodings_are_counted_by_the_same_rule():
    """--encodings: the rule's count on frames as generated and after a round trip through libx264; a flat
    grey frame with a black square keeps its square through every encoding."""
    from splinecam.benchmarks.dark_provenance import ENCODINGS, encode_decode, flagged_after

    frame = np.full((64, 64, 3), 128, np.uint8)
    frame[8:40, 8:40] = 0  # 1024 px = 25 % of the frame
    frames = [frame] * 3
    assert flagged_after(frames, 0.20, None) == 3 and flagged_after(frames, 0.30, None) == 0
    for name in ENCODINGS:
        back = encode_decode(frames, name)
        assert len(back) == 3 and back[0].shape == frame.shape
        assert flagged_after(frames, 0.20, name) == 3 and flagged_after(frames, 0.30, name) == 0
