"""The bench's inputs: one source image and N driving frames, all (S, S, 3) uint8 RGB.

Every row of a run sees the same frames, and every frame is computed (no frame skipping). Where
they come from, first match wins:

1. ``--driving VIDEO`` (and ``--source IMG``): real frames, resized to S×S as the official demo does
   for ``--crop none`` (the sample clips are face-centred talking heads);
2. a clip bundled in ``live/assets/`` (when the live package ships one);
3. deterministic synthetic frames: the bundled avatar (``live/assets/``), or a drawn face when none
   is installed, warped by a smooth head motion (turn, nod, zoom) plus a jaw opening — so the bench
   runs from any directory with nothing big bundled.

Fewer video frames than asked for are cycled (forward then backward, so motion stays smooth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "live" / "assets"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class BenchInputs:
    """source: (S,S,3) uint8 RGB; frames: N × (S,S,3) uint8 RGB; description: where they came from."""

    source: np.ndarray
    frames: list[np.ndarray]
    description: str

    def to_dict(self) -> dict:
        return {"description": self.description, "frames": len(self.frames), "size": int(self.source.shape[0])}


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Any (h,w,3) RGB → (size,size,3) uint8: centre square crop, then area/cubic resize."""
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    sq = image[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    out = cv2.resize(sq, (size, size), interpolation=interp)
    if out.dtype != np.uint8:
        out = np.clip(np.rint(out * (255.0 if out.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[..., :3])


def _cycle(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    """n frames from a clip, ping-ponging when it is shorter than n."""
    if len(frames) >= n:
        return frames[:n]
    loop = frames + frames[-2:0:-1] if len(frames) > 2 else frames
    return [loop[i % len(loop)] for i in range(n)]


def video_frames(path: str | Path, n: int, size: int) -> list[np.ndarray]:
    """The first n frames of a video, resized to (size,size,3) uint8 (cycled if the clip is short)."""
    from splinecam.engines.media import VideoReader

    frames = [resize_square(f, size) for f in VideoReader(path).read_all(max_frames=n)]
    return _cycle(frames, n)


def drawn_face(size: int) -> np.ndarray:
    """A deterministic cartoon portrait (face, hair, eyes, brows, nose, mouth) on a grey wall."""
    s = size / 256.0
    img = np.full((size, size, 3), (96, 104, 116), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = (img * (0.85 + 0.15 * (yy / size))[..., None]).astype(np.uint8)  # soft wall gradient

    def p(x, y):
        return int(round(x * s)), int(round(y * s))

    def ax(a, b):
        return int(round(a * s)), int(round(b * s))

    cv2.rectangle(img, p(88, 200), p(168, 256), (60, 80, 140), -1)  # shirt
    cv2.ellipse(img, p(128, 232), ax(80, 30), 0, 180, 360, (60, 80, 140), -1)
    cv2.rectangle(img, p(112, 170), p(144, 212), (196, 152, 128), -1)  # neck
    cv2.ellipse(img, p(128, 108), ax(62, 76), 0, 0, 360, (60, 40, 30), -1)  # hair
    cv2.ellipse(img, p(128, 122), ax(52, 66), 0, 0, 360, (222, 178, 150), -1)  # face
    cv2.ellipse(img, p(76, 124), ax(8, 14), 0, 0, 360, (206, 160, 134), -1)  # ears
    cv2.ellipse(img, p(180, 124), ax(8, 14), 0, 0, 360, (206, 160, 134), -1)
    for cx in (106, 150):
        cv2.ellipse(img, p(cx, 112), ax(12, 7), 0, 0, 360, (250, 250, 250), -1)  # eye whites
        cv2.circle(img, p(cx, 112), max(1, int(5 * s)), (70, 50, 40), -1)  # iris
        cv2.circle(img, p(cx + 1, 111), max(1, int(2 * s)), (255, 255, 255), -1)  # glint
        cv2.ellipse(img, p(cx, 98), ax(14, 4), 0, 180, 360, (60, 40, 30), max(1, int(3 * s)))  # brow
    cv2.line(img, p(128, 114), p(122, 140), (180, 130, 110), max(1, int(2 * s)))  # nose
    cv2.line(img, p(122, 140), p(132, 142), (180, 130, 110), max(1, int(2 * s)))
    cv2.ellipse(img, p(128, 160), ax(18, 6), 0, 0, 180, (150, 60, 60), -1)  # lips
    cv2.line(img, p(110, 160), p(146, 160), (120, 40, 40), max(1, int(2 * s)))
    return cv2.GaussianBlur(img, (3, 3), 0)


def warped_frames(source: np.ndarray, n: int) -> list[np.ndarray]:
    """n frames of the source under a smooth deterministic head motion and jaw opening.

    Frame t: rotation ±8°, shift ±6% horizontally / ±4% vertically, zoom ±5%, and the lower face
    stretched downwards by up to 8% (a mouth opening); periods of 48, 36, 60 and 20 frames.
    """
    size = source.shape[0]
    c = size / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for t in range(n):
        ang = 8.0 * math.sin(2 * math.pi * t / 48)
        dx = 0.06 * size * math.sin(2 * math.pi * t / 36)
        dy = 0.04 * size * math.sin(2 * math.pi * t / 60 + 1.0)
        zoom = 1.0 + 0.05 * math.sin(2 * math.pi * t / 60)
        jaw = 0.08 * max(0.0, math.sin(2 * math.pi * t / 20))
        # jaw: sample rows below the mouth line from higher up (stretch downwards)
        mouth_y = 0.62 * size
        w = np.clip((yy - mouth_y) / (0.25 * size), 0.0, 1.0) * np.exp(-((xx - c) / (0.22 * size)) ** 2)
        map_y = yy - jaw * size * w * (1.0 - np.clip((yy - mouth_y) / (0.38 * size), 0, 1))
        stretched = cv2.remap(source, xx, map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        m = cv2.getRotationMatrix2D((c, c), ang, zoom)
        m[:, 2] += (dx, dy)
        frames.append(cv2.warpAffine(stretched, m, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return frames


def _bundled(extensions: tuple[str, ...]) -> Path | None:
    if not ASSETS.is_dir():
        return None
    files = sorted(p for p in ASSETS.iterdir() if p.suffix.lower() in extensions and p.is_file())
    return files[0] if files else None


def load_inputs(size: int, n: int, driving: str | Path | None = None, source: str | Path | None = None
                ) -> BenchInputs:
    """The source and n driving frames at size×size (see the module docstring for the order)."""
    from splinecam.engines.media import read_image

    src_img = resize_square(read_image(source), size) if source else None
    clip = Path(driving) if driving else _bundled(VIDEO_EXTENSIONS)
    if clip is not None:
        frames = video_frames(clip, n, size)
        if src_img is not None:
            src_name = Path(source).name
        else:
            avatar = _bundled(IMAGE_EXTENSIONS)
            src_img = resize_square(read_image(avatar), size) if avatar else frames[0]
            src_name = avatar.name if avatar else "its first frame"
        return BenchInputs(src_img, frames, f"driving {clip.name} resized to {size}, source {src_name}")
    if src_img is None:
        avatar = _bundled(IMAGE_EXTENSIONS)
        src_img = resize_square(read_image(avatar), size) if avatar else drawn_face(size)
        name = avatar.name if avatar else "drawn face"
    else:
        name = Path(source).name
    return BenchInputs(src_img, warped_frames(src_img, n), f"synthetic: {name} warped (head motion + jaw), {size}px")
