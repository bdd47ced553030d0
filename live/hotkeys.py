"""Hotkeys of the live preview window (cv2.waitKey codes → commands).

Avatarify's layout where it has one. Keys are case-insensitive; they work while the preview
window has the focus (there is no other way to read keys without a terminal or a window).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    QUIT = "quit"
    SELECT_AVATAR = "select avatar"   # arg: 0-based index
    NEXT_AVATAR = "next avatar"
    PREVIOUS_AVATAR = "previous avatar"
    CALIBRATE = "calibrate"           # reset the reference frame to the current one
    FIND_BEST = "find best frame"     # start / finish the best-matching-frame search
    CYCLE_MODE = "cycle mode"         # relative → avd → standard
    PASSTHROUGH = "pass-through"      # show the real camera (explicit, toggled)
    MIRROR = "mirror"
    SMOOTHING = "smoothing"
    OVERLAY = "overlay"
    HELP = "help"


@dataclass(frozen=True)
class Command:
    action: Action
    arg: int | None = None


_KEYS = {
    "q": Action.QUIT, "\x1b": Action.QUIT,
    "d": Action.NEXT_AVATAR, "a": Action.PREVIOUS_AVATAR,
    "c": Action.CALIBRATE, "f": Action.FIND_BEST,
    "m": Action.CYCLE_MODE, "p": Action.PASSTHROUGH,
    "r": Action.MIRROR, "s": Action.SMOOTHING,
    "o": Action.OVERLAY, "h": Action.HELP,
}

HELP_LINES = (
    "1-9 avatar   A/D previous/next",
    "C calibrate (reset reference)",
    "F find best frame (again: use it)",
    "M mode relative/avd/standard",
    "S smoothing   R mirror",
    "P pass-through: SEND THE CAMERA",
    "O overlay   H help   Q/Esc quit",
)


def command_for_key(key: int) -> Command | None:
    """A ``cv2.waitKey`` code (-1: none) → the command, or None."""
    if key is None or key < 0:
        return None
    ch = chr(key & 0xFF).lower()
    if "1" <= ch <= "9":
        return Command(Action.SELECT_AVATAR, int(ch) - 1)
    action = _KEYS.get(ch)
    return Command(action) if action else None
