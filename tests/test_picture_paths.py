"""One listing of an avatar folder (engines/media.picture_paths): the live library and auto's timing
sample (engines/model_options.avatar_sample) take the same first picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from splinecam.engines.errors import MediaError
from splinecam.engines.media import picture_paths
from splinecam.live.avatars import avatar_paths


def test_order_is_by_name_ignoring_case_and_other_files_are_skipped(tmp_path):
    for name in ("b.png", "A.jpg", "c.TIFF", "notes.txt", "d.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "e.png").mkdir()  # a folder named like a picture is not one
    got = [p.name for p in picture_paths(tmp_path, "--avatar")]
    assert got == ["A.jpg", "b.png", "c.TIFF"]
    assert avatar_paths(tmp_path) == picture_paths(tmp_path, "--avatar")


def test_empty_folder_and_missing_path_are_one_line_errors(tmp_path):
    with pytest.raises(MediaError, match=r"--avatar .*no pictures"):
        picture_paths(tmp_path, "--avatar")
    with pytest.raises(MediaError, match=r"--source .*no such picture"):
        picture_paths(tmp_path / "nope.png", "--source")


def test_auto_times_on_the_picture_the_library_shows_first(tmp_path, monkeypatch):
    from splinecam.engines import model_options

    seen = []
    monkeypatch.setattr("splinecam.engines.faces.detection.face_crop", lambda image, what, size: seen.append(image) or image)
    for name, value in (("B.png", 200), ("a.png", 50)):  # "a" sorts first ignoring case, last by code point
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), value, np.uint8))
    model_options.avatar_sample(tmp_path, 8)
    assert int(seen[0][0, 0, 0]) == 50
