"""Avatars: one picture or a folder of them, face-cropped, prepared once, switchable live.

    library = AvatarLibrary.load("avatars/", backend, ComposeOptions(), crop="auto")
    avatar = library.current           # Avatar: picture, crop, (S,S,3) image, cached SourceState
    library.select(3); library.next(); library.previous()

Each avatar is face-cropped automatically (``splinecam.engines.faces.detection.find_face`` → ``crop_box_for_face`` →
``crop_image``), or taken whole with ``crop="none"`` (already a face crop). ``backend.prepare_source``
runs once per avatar (on first use, or for all of them with :meth:`AvatarLibrary.prepare_all`)
and its result is cached with the avatar's composer (its output background), so switching is
instant and never rebuilds an engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splinecam.engines.backends.base import Backend, SourceState
from splinecam.engines.errors import FaceNotFoundError, MediaError
from splinecam.engines.faces.detection import Detector, find_face
from splinecam.engines.faces.geometry import CropBox, crop_box_for_face, crop_image
from splinecam.engines.media import read_image
from splinecam.live.compose import ComposeOptions, Composer

log = logging.getLogger(__name__)

CROP_MODES = ("auto", "none")


@dataclass
class Avatar:
    """One avatar. picture: its full (h, w, 3) uint8 RGB picture; crop: the face crop in it (None
    with ``crop="none"``); image: the (S, S, 3) uint8 RGB crop the networks see; source: the
    backend's cached SourceState and composer: its output composer (both filled on first use)."""

    name: str
    path: Path
    picture: np.ndarray
    crop: CropBox | None
    image: np.ndarray
    source: SourceState | None = None
    composer: Composer | None = None
    still: np.ndarray | None = field(default=None, repr=False)  # composed avatar at rest, (H, W, 3)


def avatar_paths(path: str | Path) -> list[Path]:
    """A picture, or the pictures of a folder (sorted by name). Raises MediaError when none."""
    from splinecam.engines.media import picture_paths

    return picture_paths(path, "--avatar")


def load_avatar(path: Path, size: int, crop: str = "auto", detector: Detector | None = None) -> Avatar:
    """Read and face-crop one picture; FaceNotFoundError / MediaError with one line."""
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    picture = read_image(path)
    if crop == "none":
        import cv2

        image = cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA)
        return Avatar(path.stem, path, picture, None, image)
    face = find_face(picture, f"the avatar {path.name}", detector)
    box = crop_box_for_face(face)
    return Avatar(path.stem, path, picture, box, crop_image(picture, box, size))


class AvatarLibrary:
    """The avatars of a run, in order, with the current one. Prepared lazily, cached forever."""

    def __init__(self, avatars: list[Avatar], backend: Backend, compose: ComposeOptions, start: int = 0):
        if not avatars:
            raise MediaError("no avatar to show")
        self.avatars = avatars
        self.backend = backend
        self.compose = compose
        self.index = min(max(0, start), len(avatars) - 1)
        self.prepare_calls = 0

    @classmethod
    def load(cls, path: str | Path, backend: Backend, compose: ComposeOptions, crop: str = "auto",
             detector: Detector | None = None, start: str | int | None = None, say=print) -> "AvatarLibrary":
        """Load ``--avatar`` (a picture or a folder). In a folder, pictures without a face are
        skipped with one line each; a single picture without one (or a folder with none) raises
        FaceNotFoundError. ``start``: index or file name of the first avatar (e.g. remembered)."""
        paths = avatar_paths(path)
        avatars, skipped = [], []
        for p in paths:
            try:
                avatars.append(load_avatar(p, backend.size, crop, detector))
            except (FaceNotFoundError, MediaError) as err:
                if len(paths) == 1:
                    raise
                skipped.append(p.name)
                say(f"splinecam: skipping {p.name}: {str(err).split(':', 1)[0]}")
        if not avatars:
            raise FaceNotFoundError(f"--avatar {path}: no face found in any of its {len(paths)} pictures "
                                    f"(use portraits with a clearly visible face, or --crop none)")
        lib = cls(avatars, backend, compose)
        if start is not None:
            lib.index = lib.find(start) or 0
        return lib

    def find(self, key: str | int) -> int | None:
        """Index of the avatar with this index / file name / stem, or None."""
        if isinstance(key, int):
            return key if 0 <= key < len(self.avatars) else None
        for i, a in enumerate(self.avatars):
            if key in (a.path.name, a.name, str(a.path)):
                return i
        return None

    def __len__(self) -> int:
        return len(self.avatars)

    def prepared(self, i: int) -> Avatar:
        """Avatar ``i`` with its SourceState, composer and still frame (computed once)."""
        a = self.avatars[i]
        if a.source is None:
            a.source = self.backend.prepare_source(a.image)
            self.prepare_calls += 1
        if a.composer is None:
            a.composer = Composer(self.compose, a.picture, a.crop)
            a.still = a.composer.compose(a.image)
        return a

    def prepare_all(self) -> None:
        for i in range(len(self.avatars)):
            self.prepared(i)

    @property
    def current(self) -> Avatar:
        return self.prepared(self.index)

    def select(self, i: int) -> bool:
        """Switch to avatar ``i`` (0-based); False when there is none."""
        if not 0 <= i < len(self.avatars):
            return False
        self.index = i
        self.prepared(i)
        return True

    def next(self) -> None:
        self.select((self.index + 1) % len(self.avatars))

    def previous(self) -> None:
        self.select((self.index - 1) % len(self.avatars))
