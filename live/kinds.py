"""The live loop's named values as enums whose members *are* their strings (``str`` subclasses): they
compare equal to, print as and serialise to JSON as the same strings the CLI, ``--metrics``, the remembered
state and the control page have always used ("relative", "animated", "reconnecting" …).

One catch of a ``str`` enum: it hashes by member, not by string, so a dict keyed by the strings must be
keyed by the members instead (``{PosePhase.HOLD: …}``), never looked up with a member.
"""

from __future__ import annotations

import enum

try:
    StrEnum = enum.StrEnum  # Python 3.11+
except AttributeError:  # Python 3.10: the same behaviour
    class StrEnum(str, enum.Enum):  # type: ignore[no-redef]
        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


class FrameKind(StrEnum):
    """What an output frame shows (``OutputFrame.kind``)."""

    AVATAR = "avatar"            # the avatar at rest or holding / easing a pose: no face, start-up, refused
    ANIMATED = "animated"        # the avatar driven by this frame's face
    PASSTHROUGH = "passthrough"  # the camera itself, while the user holds the pass-through toggle
