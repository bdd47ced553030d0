"""Composition: the model's (S, S, 3) result → the output picture, 1280×720 by default.

    composer = Composer(ComposeOptions((1280, 720), "pad"), avatar_picture, crop_box)
    out = composer.compose(face, mirror=False)   # (H, W, 3) uint8 RGB, a new array
    still = composer.compose(avatar_crop)        # the avatar at rest (start-up, no face)

- ``pad``: the face result scaled to the output's height (its short side), centred; the sides are
  the avatar's crop, scaled to cover the output and blurred (``background="blur"``), or a solid
  colour ("black", "white", "green", or "#RRGGBB").
- ``paste``: the avatar's full picture fitted into the output (over its own blurred cover), and
  the result pasted back where its face crop came from, with feathered edges.

Everything that depends only on the avatar (background, placement, feather mask) is computed once
per avatar; a frame costs one resize, one blend or copy into a copy of the base, and a flip when
mirrored. ``fit_picture`` fits any picture (the camera, for the explicit pass-through) into the
output with black bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from splinecam.engines.faces.geometry import CropBox

COMPOSE_MODES = ("pad", "paste")
NAMED_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "green": (0, 177, 64), "grey": (128, 128, 128)}


def parse_size(text: str) -> tuple[int, int]:
    """"1280x720" → (1280, 720); ValueError with a readable message otherwise."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT like 1280x720, got {text!r}") from None
    if w <= 0 or h <= 0 or w > 8192 or h > 8192:
        raise ValueError(f"size {text!r} out of range (1..8192)")
    return w, h


def parse_colour(text: str) -> tuple[int, int, int]:
    """A named colour or #RRGGBB → (r, g, b)."""
    t = text.strip().lower()
    if t in NAMED_COLOURS:
        return NAMED_COLOURS[t]
    if len(t) == 7 and t[0] == "#":
        try:
            return tuple(int(t[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    raise ValueError(f"unknown colour {text!r}: use blur, {', '.join(NAMED_COLOURS)} or #RRGGBB")


@dataclass(frozen=True)
class ComposeOptions:
    """size: (width, height) of the output; mode: pad | paste; background: "blur" or a colour.
    (Mirroring is per frame, :meth:`Composer.compose`, so it can be toggled live.)"""

    size: tuple[int, int] = (1280, 720)
    mode: str = "pad"
    background: str = "blur"

    def __post_init__(self) -> None:
        if self.mode not in COMPOSE_MODES:
            raise ValueError(f"--compose {self.mode!r}: use one of {', '.join(COMPOSE_MODES)}")
        if self.background != "blur":
            parse_colour(self.background)


@dataclass(frozen=True)
class Rect:
    """A rectangle in output pixels: x, y of the top-left corner, width w, height h."""

    x: int
    y: int
    w: int
    h: int


def _cover(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``picture`` to cover ``size`` (w, h) and cut the middle."""
    W, H = size
    h, w = picture.shape[:2]
    s = max(W / w, H / h)
    nw, nh = max(W, int(round(w * s))), max(H, int(round(h * s)))
    big = cv2.resize(picture, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    x0, y0 = (nw - W) // 2, (nh - H) // 2
    return big[y0:y0 + H, x0:x0 + W]


def background_for(picture: np.ndarray, size: tuple[int, int], background: str) -> np.ndarray:
    """The (H, W, 3) uint8 background: ``picture`` blurred to cover ``size``, or a solid colour."""
    W, H = size
    if background != "blur":
        return np.full((H, W, 3), parse_colour(background), dtype=np.uint8)
    # blur at a small size (cheap and smoother), then scale up; darken a little so the face stands out
    small_side = 64
    s = small_side / max(W, H)
    small = _cover(picture, (max(1, int(W * s)), max(1, int(H * s))))
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=4.0)
    bg = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    return (bg.astype(np.float32) * 0.75).astype(np.uint8)


def fit_rect(src_w: int, src_h: int, size: tuple[int, int]) -> Rect:
    """The largest rectangle of ``src``'s aspect ratio centred inside ``size`` (w, h)."""
    W, H = size
    s = min(W / src_w, H / src_h)
    w, h = max(1, int(round(src_w * s))), max(1, int(round(src_h * s)))
    return Rect((W - w) // 2, (H - h) // 2, w, h)


def fit_picture(picture: np.ndarray, size: tuple[int, int], mirror: bool = False) -> np.ndarray:
    """``picture`` (h, w, 3) fitted into ``size`` (W, H) over black, optionally mirrored."""
    W, H = size
    r = fit_rect(picture.shape[1], picture.shape[0], size)
    out = np.zeros((H, W, 3), np.uint8)
    out[r.y:r.y + r.h, r.x:r.x + r.w] = cv2.resize(picture, (r.w, r.h), interpolation=cv2.INTER_AREA)
    return cv2.flip(out, 1) if mirror else out


def _feather(h: int, w: int, width: float) -> np.ndarray:
    """(h, w) float32 mask: 1 inside, ramping to 0 over ``width`` px at the edges (smoothstep)."""
    def ramp(n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float32)
        d = np.minimum(i + 0.5, n - i - 0.5) / max(width, 1e-3)
        d = np.clip(d, 0.0, 1.0)
        return d * d * (3 - 2 * d)
    return np.outer(ramp(h), ramp(w)).astype(np.float32)


class Composer:
    """Composes one avatar's results (see the module doc). ``picture``: the avatar's full
    (h, w, 3) uint8 RGB picture; ``crop``: where its face crop came from in it (None: the
    picture is the crop, paste = pad of the whole picture)."""

    def __init__(self, options: ComposeOptions, picture: np.ndarray, crop: CropBox | None):
        self.options = options
        W, H = options.size
        if options.mode == "pad" or crop is None:
            self.base = background_for(picture if crop is None else _crop_rgb(picture, crop), options.size,
                                       options.background)
            side = min(W, H)
            self.face_rect = Rect((W - side) // 2, (H - side) // 2, side, side)
            self._mask = None
        else:
            pic_rect = fit_rect(picture.shape[1], picture.shape[0], options.size)
            base = background_for(picture, options.size, options.background)
            base[pic_rect.y:pic_rect.y + pic_rect.h, pic_rect.x:pic_rect.x + pic_rect.w] = cv2.resize(
                picture, (pic_rect.w, pic_rect.h), interpolation=cv2.INTER_AREA)
            self.base = base
            s = pic_rect.w / picture.shape[1]
            x0, y0, x1, y1 = crop.to_xyxy()
            fx, fy = int(round(pic_rect.x + x0 * s)), int(round(pic_rect.y + y0 * s))
            side = max(1, int(round((x1 - x0) * s)))
            self.face_rect = Rect(fx, fy, side, side)
            # paste only inside the picture; feather the edges (6 % of the face side)
            cx0, cy0 = max(fx, pic_rect.x), max(fy, pic_rect.y)
            cx1 = min(fx + side, pic_rect.x + pic_rect.w)
            cy1 = min(fy + side, pic_rect.y + pic_rect.h)
            self._clip = Rect(cx0, cy0, max(0, cx1 - cx0), max(0, cy1 - cy0))
            mask = _feather(side, side, 0.06 * side)[cy0 - fy:cy1 - fy, cx0 - fx:cx1 - fx]
            self._mask = np.ascontiguousarray(mask)
            self._inv = np.ascontiguousarray(1.0 - mask)

    def compose(self, face: np.ndarray, mirror: bool = False) -> np.ndarray:
        """(S, S, 3) uint8 RGB → (H, W, 3) uint8 RGB output, flipped left-right if ``mirror``."""
        out = self.base.copy()
        r = self.face_rect
        interp = cv2.INTER_LINEAR if r.w >= face.shape[1] else cv2.INTER_AREA
        big = cv2.resize(face, (r.w, r.h), interpolation=interp)
        if self._mask is None:
            out[r.y:r.y + r.h, r.x:r.x + r.w] = big
        else:
            c = self._clip
            if c.w > 0 and c.h > 0:
                part = big[c.y - r.y:c.y - r.y + c.h, c.x - r.x:c.x - r.x + c.w]
                dst = out[c.y:c.y + c.h, c.x:c.x + c.w]
                out[c.y:c.y + c.h, c.x:c.x + c.w] = cv2.blendLinear(part, dst, self._mask, self._inv)
        return cv2.flip(out, 1) if mirror else out


def _crop_rgb(picture: np.ndarray, crop: CropBox) -> np.ndarray:
    from splinecam.engines.faces.geometry import crop_image

    return crop_image(picture, crop, 256)
