"""Face detection, crop maths, tracking and best-frame search (engines.faces)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from splinecam.engines.errors import FaceNotFoundError
from splinecam.engines.faces.best_frame import find_best_frame, landmark_distance
from splinecam.engines.faces.detection import FaceDetector, find_face, stable_crop_for_frames
from splinecam.engines.faces.geometry import (
    DEFAULT_CROP_SCALE,
    DEFAULT_VERTICAL_SHIFT,
    CropBox,
    FaceBox,
    crop_box_for_face,
    crop_image,
)
from splinecam.engines.faces.mesh import FaceMesh
from splinecam.engines.faces.tracker import FaceTracker
from splinecam.engines.media import VideoReader, read_image

DATA = Path("/work/shared/data")
AVATARS = sorted((DATA / "avatars").glob("*.*"))
SOURCE = DATA / "samples" / "source.png"
DRIVING = DATA / "samples" / "driving.mp4"

pytestmark = pytest.mark.skipif(not SOURCE.exists(), reason="shared sample data not present")


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


@pytest.fixture(scope="module")
def mesh():
    with FaceMesh() as m:
        yield m


def _landscape(h=720, w=1280):
    """Gradient sky over green ground, no face."""
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    sky = np.array([90, 150, 230]) * (1 - y) + np.array([200, 220, 250]) * y
    img = np.where(y < 0.6, sky, np.array([50, 130, 40]))
    return np.repeat(img, w, axis=1).astype(np.uint8)


def _paste(canvas, image, x, y, size):
    canvas[y:y + size, x:x + size] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize("path", [SOURCE, *AVATARS], ids=lambda p: p.name)
def test_face_found_on_every_portrait(detector, path):
    img = read_image(path)
    h, w = img.shape[:2]
    face = find_face(img, str(path), detector)
    assert face.score > 0.5
    cx, cy = face.center
    assert 0 < cx < w and 0 < cy < h
    assert 0.04 * max(h, w) < face.size < max(h, w)
    assert len(face.keypoints) == 6
    crop = crop_image(img, crop_box_for_face(face))
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8


def test_small_face_in_big_picture(detector):
    # A face about 4 % of the long side: too small for both mediapipe models on the whole
    # picture, found by the tiled search.
    big = _landscape(1080, 1920)
    _paste(big, read_image(DATA / "avatars" / "obama.jpg"), 480, 360, 130)
    face = find_face(big, "composed picture", detector)
    cx, cy = face.center
    assert 480 < cx < 610 and 360 < cy < 490


@pytest.mark.parametrize("image", [np.zeros((480, 640, 3), np.uint8), _landscape()],
                         ids=["blank", "landscape"])
def test_no_face_raises(detector, image):
    with pytest.raises(FaceNotFoundError) as err:
        find_face(image, "holiday.jpg", detector)
    msg = str(err.value)
    assert "holiday.jpg" in msg and "\n" not in msg


def test_detect_rejects_wrong_input(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 3), np.float32))


# ----------------------------------------------------------------------------- crop maths


def test_crop_box_for_face_is_square_and_centred():
    face = FaceBox(100, 200, 200, 300, 0.9)
    assert face.center == (150, 250) and face.size == 100
    box = crop_box_for_face(face, scale=2.0, vertical_shift=0.0)
    assert box == CropBox(150, 250, 200)
    assert box.to_xyxy() == (50, 150, 250, 350)
    shifted = crop_box_for_face(face, scale=2.0, vertical_shift=-0.25)
    assert shifted == CropBox(150, 225, 200)
    default = crop_box_for_face(face)
    assert default.size == pytest.approx(100 * DEFAULT_CROP_SCALE)
    assert default.cy == pytest.approx(250 + 100 * DEFAULT_VERTICAL_SHIFT)
    x0, y0, x1, y1 = CropBox(10.4, 20.6, 33.3).as_int()
    assert x1 - x0 == y1 - y0 == 33
    with pytest.raises(ValueError):
        crop_box_for_face(face, scale=0)


def test_crop_box_clamped():
    # Near the top-left corner: moved inside, size kept.
    assert CropBox(10, 20, 100).clamped(640, 480) == CropBox(50, 50, 100)
    # Near the bottom-right corner.
    assert CropBox(630, 470, 100).clamped(640, 480) == CropBox(590, 430, 100)
    # Already inside: unchanged.
    assert CropBox(300, 200, 100).clamped(640, 480) == CropBox(300, 200, 100)
    # Larger than the picture: shrinks to the short side and is centred on that axis.
    assert CropBox(320, 240, 1000).clamped(640, 480) == CropBox(320, 240, 480)


@pytest.mark.parametrize("border", ["replicate", "constant"])
def test_box_patch_is_the_clipped_index_fill(border):
    """box_patch's OpenCV border fill gives exactly what indexing with clipped coordinates gives (the fill
    crop_image used before), for boxes inside, straddling every side, larger than the picture and outside."""
    from splinecam.engines.faces.geometry import box_patch

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    h, w = img.shape[:2]
    for _ in range(200):
        box = CropBox(*rng.uniform(-40, 95, 2), rng.uniform(1, 90))
        x0, y0, x1, y1 = box.as_int()
        rows, cols = np.arange(y0, y1), np.arange(x0, x1)
        ref = img[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]]
        if border == "constant":
            ref[((rows < 0) | (rows >= h))[:, None] | ((cols < 0) | (cols >= w))[None, :]] = 0
        np.testing.assert_array_equal(box_patch(img, box, border), ref)


def test_crop_image_inside_and_padding():
    img = np.zeros((100, 120, 3), np.uint8)
    img[..., 0] = np.arange(120, dtype=np.uint8)[None, :]  # red = x
    img[..., 1] = np.arange(100, dtype=np.uint8)[:, None]  # green = y
    inside = crop_image(img, CropBox(60, 50, 40), size=40)
    np.testing.assert_array_equal(inside, img[30:70, 40:80])
    # Half outside on the left and top: replicated edge pixels.
    rep = crop_image(img, CropBox(0, 0, 40), size=40)
    assert rep.shape == (40, 40, 3)
    np.testing.assert_array_equal(rep[:20, :20], np.broadcast_to(img[0, 0], (20, 20, 3)))
    np.testing.assert_array_equal(rep[20:, 20:], img[:20, :20])
    np.testing.assert_array_equal(rep[25, :20, 1], np.full(20, 5))  # row y=5 repeated
    const = crop_image(img, CropBox(0, 0, 40), size=40, border="constant")
    assert not const[:20].any() and not const[:, :20].any()
    np.testing.assert_array_equal(const[20:, 20:], img[:20, :20])
    # Entirely outside: still a valid crop (edge colour).
    far = crop_image(img, CropBox(500, 500, 40), size=16)
    np.testing.assert_array_equal(far, np.broadcast_to(img[99, 119], (16, 16, 3)))
    # Shrinking and enlarging give the requested size.
    assert crop_image(img, CropBox(60, 50, 100), size=32).shape == (32, 32, 3)
    assert crop_image(img, CropBox(60, 50, 20), size=64).shape == (64, 64, 3)


def test_stable_crop_matches_vox_framing(detector):
    # driving.mp4 is VoxCeleb-framed: the crop computed from its faces is about the whole frame.
    reader = VideoReader(DRIVING)
    w, h = reader.size
    box = stable_crop_for_frames(reader, sample_every=6, detector=detector)
    side = (w * h) ** 0.5
    assert abs(box.size - side) < 0.1 * side
    assert abs(box.cy - h / 2) < 0.06 * side
    assert abs(box.cx - w / 2) < 0.1 * side


def test_stable_crop_raises_without_face(detector):
    frames = [np.zeros((120, 160, 3), np.uint8)] * 6
    with pytest.raises(FaceNotFoundError, match="clip.mp4"):
        stable_crop_for_frames(frames, sample_every=2, detector=detector, what="clip.mp4")


def test_stable_crop_follows_one_person():
    a = FaceBox(100, 100, 200, 200, 0.9)
    big_b = FaceBox(380, 80, 540, 240, 0.99)

    class Fake:
        def __init__(self):
            self.i = 0

        def detect(self, image):
            self.i += 1
            return [a] if self.i == 1 else [big_b, a.mapped(1, 3, 0)]

    frames = [np.zeros((300, 600, 3), np.uint8)] * 5
    box = stable_crop_for_frames(frames, sample_every=1, detector=Fake())
    assert abs(box.cx - 150) < 5


# ----------------------------------------------------------------------------- tracking


class ScriptedDetector:
    """Returns the boxes of a script, one list per call."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def detect(self, image):
        out = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return list(out)


def _box(cx, cy, size, score=0.9):
    return FaceBox(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2, score)


FRAME = np.zeros((480, 640, 3), np.uint8)


@pytest.mark.parametrize("second", [220, 380], ids=["second-smaller", "second-larger"])
def test_tracker_stays_on_first_person_real_faces(detector, second):
    a = read_image(DATA / "avatars" / "obama.jpg")
    b = read_image(DATA / "avatars" / "jobs.jpg")
    alone = _landscape(540, 960)
    _paste(alone, a, 60, 120, 320)
    both = alone.copy()
    _paste(both, b, 560, 80, second)
    tracker = FaceTracker(detector)
    first = tracker.update(alone, 0.0)
    assert first.face_found and first.crop is not None
    for i in range(1, 6):
        state = tracker.update(both, i / 30)
        assert state.face_found
        assert state.crop.cx < 400, "the crop moved to the second person"
        assert abs(state.crop.cx - first.crop.cx) < 10
    assert len(detector.detect(both)) == 2


def test_tracker_keeps_person_against_a_more_prominent_face():
    a, b = _box(200, 240, 100), _box(480, 240, 160, 0.99)
    det = ScriptedDetector([[a]] + [[b, a]] * 5 + [[b]] * 30)
    tracker = FaceTracker(det, reacquire_after=10)
    for i in range(6):
        state = tracker.update(FRAME, i / 30)
        assert state.face_found and abs(state.crop.cx - 200) < 2
    # a leaves: the crop stays where it was while a is merely lost ...
    for i in range(6, 6 + 9):
        state = tracker.update(FRAME, i / 30)
        assert not state.face_found and state.frames_since_seen == i - 5
        assert abs(state.crop.cx - 200) < 2
    # ... and moves to the remaining person once a has been gone for a while.
    state = tracker.update(FRAME, 15 / 30)
    assert state.face_found and state.frames_since_seen == 0
    assert abs(state.crop.cx - 480) < 2 and state.face == b


def test_tracker_smoothing_reduces_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    n = 150
    noise = rng.normal(0.0, 3.0, size=(n, 3))
    script = [[_box(320 + dx, 240 + dy, 100 + ds)] for dx, dy, ds in noise]
    # then the head moves 100 px in 1/3 s (a fast move) and stays
    script += [[_box(320 + 10 * k, 240, 100)] for k in range(1, 11)]
    script += [[_box(420, 240, 100)]] * 35
    tracker = FaceTracker(ScriptedDetector(script))
    states = [tracker.update(FRAME, i / 30) for i in range(len(script))]
    raw = np.array([crop_box_for_face(s[0]).cx for s in script[30:n]])
    smooth = np.array([s.crop.cx for s in states[30:n]])
    assert smooth.std() < 0.4 * raw.std()
    assert abs(smooth.mean() - 320) < 2
    raw_size = np.array([crop_box_for_face(s[0]).size for s in script[30:n]])
    assert np.array([s.crop.size for s in states[30:n]]).std() < 0.35 * raw_size.std()
    # One second after the move, the crop is where the face is.
    assert abs(states[-1].crop.cx - 420) < 3
    assert all(s.face_found for s in states)  # the move is not taken for another person
    assert abs(states[n + 15].crop.cx - 420) < 5  # and it did not crawl there


def test_tracker_detect_every_and_lost_face():
    a = _box(300, 240, 100)
    det = ScriptedDetector([[a]] * 3 + [[]] * 10)
    tracker = FaceTracker(det, detect_every=3)
    for i in range(9):
        state = tracker.update(FRAME, i / 30)
        assert state.face_found
    assert det.calls == 3
    last = state.crop
    state = tracker.update(FRAME, 9 / 30)  # 4th detection: nobody
    assert not state.face_found and state.frames_since_seen == 1 and state.crop == last
    state = tracker.update(FRAME, 10 / 30)  # lost: detects on every frame
    assert det.calls == 5 and state.frames_since_seen == 2 and state.crop == last
    tracker.reset()
    assert tracker.update(FRAME, 11 / 30).crop is None


# ----------------------------------------------------------------------------- face mesh


def test_landmarks_and_distance(mesh, detector):
    src = read_image(SOURCE)
    crop = crop_image(src, crop_box_for_face(find_face(src, "source", detector)))
    pts = mesh.landmarks(crop)
    assert pts.shape == (468, 2) and pts.dtype == np.float32
    assert pts.min() > 0 and pts.max() < 256
    assert landmark_distance(pts, pts) == 0.0
    # Invariant to translation and scale, not to a change of shape.
    assert landmark_distance(pts, pts * 1.7 + 30) < 1e-9
    squashed = pts * np.float32([1.0, 0.6])
    assert landmark_distance(pts, squashed) > 0.05
    assert mesh.landmarks(np.zeros((256, 256, 3), np.uint8)) is None
    # With a face box, the mesh runs on a crop and comes back in picture coordinates.
    face = find_face(src, "source", detector)
    full = mesh.landmarks(src, face)
    assert full is not None
    assert face.x0 - 20 < np.median(full[:, 0]) < face.x1 + 20


def test_find_best_frame_picks_the_source(mesh, detector):
    src = read_image(SOURCE)
    src256 = crop_image(src, crop_box_for_face(find_face(src, "source", detector)))
    driving = VideoReader(DRIVING).read_all(80)[::20]
    frames = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in driving]
    frames.insert(2, src256)
    frames.insert(0, np.zeros((256, 256, 3), np.uint8))  # no face: skipped
    assert find_best_frame(src256, frames, mesh) == 3
    assert find_best_frame(src256, [np.zeros((64, 64, 3), np.uint8)] * 2, mesh) == 0
