"""The preview window: the output as sent, with overlays, and the hotkeys (live/hotkeys.py).

    preview = PreviewWindow.open("splinecam")          # None (after one line) without a display
    key = preview.show(output_rgb, OverlayInfo(...))   # cv2.waitKey code, -1 for none
    preview.close()

Overlays: FPS, end-to-end latency, per-stage ms, status (no face / reconnecting / pass-through in
red), normalisation mode, avatar, smoothing and mirror; an inset of the driving face crop with its
keypoints (during the best-frame search: the avatar as a ghost over it, with the match score); the
hotkey help. The window is local: it shows the camera inset to you, but nothing drawn here reaches
the virtual camera or the recording.

HighGUI must be used from one thread: the live loop calls ``show`` / ``poll`` from the main thread.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import cv2
import numpy as np

from splinecam.live.calibration import Match
from splinecam.live.hotkeys import HELP_LINES

FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN, RED, YELLOW, WHITE = (80, 220, 80), (60, 60, 240), (40, 220, 240), (240, 240, 240)  # BGR


@dataclass
class OverlayInfo:
    """What the overlay shows. stages_ms: last per-stage times; inset: (S, S, 3) RGB driving crop
    (or ghost) and inset_kp its (K, D) keypoints, positions (the first two columns) in [-1, 1]; status: ""
    when all is well."""

    fps: float = 0.0
    latency_ms: float | None = None
    stages_ms: dict = field(default_factory=dict)
    status: str = ""
    mode: str = ""
    avatar: str = ""
    smoothing: bool = True
    mirror: bool = False
    passthrough: bool = False
    inset: np.ndarray | None = None
    inset_kp: np.ndarray | None = None
    match: Match | None = None
    show_overlay: bool = True
    show_help: bool = False


def display_available() -> bool:
    """Whether a window can be opened (Linux: an X11 or Wayland display is set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _text(img: np.ndarray, text: str, org: tuple[int, int], colour=WHITE, scale: float = 0.55) -> None:
    cv2.putText(img, text, (org[0] + 1, org[1] + 1), FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, 1, cv2.LINE_AA)


def draw_overlay(bgr: np.ndarray, info: OverlayInfo) -> np.ndarray:
    """Draw ``info`` on ``bgr`` (H, W, 3 uint8 BGR) in place; returns it."""
    H, W = bgr.shape[:2]
    if info.passthrough:
        cv2.rectangle(bgr, (2, 2), (W - 3, H - 3), RED, 4)
        _text(bgr, "PASS-THROUGH: the meeting sees your camera (P to stop)", (12, H - 16), RED, 0.7)
    if not info.show_overlay:
        return bgr
    lat = f"{info.latency_ms:.0f} ms" if info.latency_ms is not None else "-"
    lines = [(f"{info.fps:5.1f} fps   latency {lat}", GREEN)]
    stages = dict(info.stages_ms)
    if stages:
        lines.append((" ".join(f"{k} {v:.0f}" for k, v in stages.items()) + " ms", WHITE))
    lines.append((f"mode {info.mode}   smooth {'on' if info.smoothing else 'off'}"
                  f"   mirror {'on' if info.mirror else 'off'}", WHITE))
    lines.append((f"avatar {info.avatar}", WHITE))
    if info.status:
        lines.append((info.status, YELLOW))
    y = 24
    for text, colour in lines:
        _text(bgr, text, (10, y), colour)
        y += 22
    if info.inset is not None:
        side = max(64, min(W, H) // 4)
        inset = cv2.resize(info.inset, (side, side), interpolation=cv2.INTER_AREA)
        inset = cv2.cvtColor(inset, cv2.COLOR_RGB2BGR)
        if info.inset_kp is not None:
            for x, yk in np.asarray(info.inset_kp)[..., :2].reshape(-1, 2):
                cv2.circle(inset, (int((x + 1) * side / 2), int((yk + 1) * side / 2)), 2, GREEN, -1, cv2.LINE_AA)
        x0, y0 = W - side - 10, 10
        bgr[y0:y0 + side, x0:x0 + side] = inset
        cv2.rectangle(bgr, (x0 - 1, y0 - 1), (x0 + side, y0 + side), WHITE, 1)
        if info.match is not None:
            _text(bgr, f"match {info.match.score:.0f}  best {info.match.best_score:.0f}", (x0, y0 + side + 20), YELLOW)
    if info.show_help:
        y = H - 16 - 22 * len(HELP_LINES) - (30 if info.passthrough else 0)
        for line in HELP_LINES:
            _text(bgr, line, (10, y), WHITE, 0.5)
            y += 22
    else:
        _text(bgr, "H help", (10, H - 16 - (30 if info.passthrough else 0)), WHITE, 0.5)
    return bgr


class PreviewWindow:
    """A resizable OpenCV window. ``closed`` turns True when the user closes it."""

    def __init__(self, title: str = "splinecam"):
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        self._shown = False
        self.closed = False

    @classmethod
    def open(cls, title: str = "splinecam", say=print) -> "PreviewWindow | None":
        if not display_available():
            say("splinecam: no display (DISPLAY is not set): running without the preview window")
            return None
        try:
            return cls(title)
        except cv2.error as err:
            say(f"splinecam: cannot open the preview window ({str(err).strip().splitlines()[-1]}): "
                f"running without it")
            return None

    def show(self, image_rgb: np.ndarray, info: OverlayInfo) -> int:
        """Show ``image_rgb`` (H, W, 3) with overlays; returns the key pressed (-1: none)."""
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        draw_overlay(bgr, info)
        if not self._shown:
            cv2.resizeWindow(self.title, bgr.shape[1], bgr.shape[0])
            self._shown = True
        cv2.imshow(self.title, bgr)
        return self.poll(1)

    def poll(self, ms: int = 1) -> int:
        """Let the window handle its events for ``ms``; returns the key pressed (-1: none)."""
        key = cv2.waitKey(ms)
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                self.closed = True
        except cv2.error:
            self.closed = True
        return key

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
