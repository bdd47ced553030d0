"""Training data: pairs of frames from the same clip (identity sampling), augmented.

Reads the output of ``prepare-data`` (``manifest.json`` + per clip ``.npy`` uint8 (T,S,S,3), loaded
memory-mapped, and ``.landmarks.npy`` (T,468,2)). Every sample is a deterministic function of
(seed, epoch, index), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from splinecam.engines.tpsmm.landmarks import landmarks_to_grid
from splinecam.engines.errors import SplinecamError


class DataError(SplinecamError):
    """Training data is missing or malformed."""


@dataclass(frozen=True)
class Augmentation:
    """Official ``augmentation_params`` — flips (same for both frames) and colour jitter amplitudes —
    and splinecam's ``affine_param``: one random similarity (zoom in ``scale``, rotation up to
    ``rotation`` degrees, shift up to ``shift`` of the frame) applied to both frames of a pair and to
    their landmarks, so the model sees faces bigger, smaller, tilted and off-centre in the crop than the
    prepared clips hold (none by default: the official configs never had it)."""

    horizontal_flip: bool = True
    time_flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1
    scale: tuple[float, float] = (1.0, 1.0)
    rotation: float = 0.0
    shift: float = 0.0

    @classmethod
    def from_dataset_params(cls, params: dict) -> "Augmentation":
        aug = (params or {}).get("augmentation_params") or {}
        flip = aug.get("flip_param") or {}
        jit = aug.get("jitter_param") or {}
        geo = aug.get("affine_param") or {}
        scale = geo.get("scale", (1.0, 1.0))
        if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and 0 < float(scale[0]) <= float(scale[1])):
            raise DataError(f"augmentation_params.affine_param.scale must be [low, high] with 0 < low <= high, "
                            f"got {scale!r}: fix the config")
        return cls(bool(flip.get("horizontal_flip", False)), bool(flip.get("time_flip", False)),
                   float(jit.get("brightness", 0)), float(jit.get("contrast", 0)),
                   float(jit.get("saturation", 0)), float(jit.get("hue", 0)),
                   (float(scale[0]), float(scale[1])), float(geo.get("rotation", 0)), float(geo.get("shift", 0)))

    @classmethod
    def none(cls) -> "Augmentation":
        return cls(False, False, 0, 0, 0, 0)

    @property
    def affine(self) -> bool:
        return self.scale != (1.0, 1.0) or bool(self.rotation) or bool(self.shift)


def random_similarity(aug: Augmentation, size: int, rng: random.Random) -> np.ndarray:
    """(2,3) float64 matrix of a random similarity about the centre of a size×size frame, in pixel-index
    coordinates (cv2's: pixel i is centred at i): zoom in ``aug.scale``, rotation ±``aug.rotation``°,
    shift ±``aug.shift`` × size on each axis."""
    s = rng.uniform(*aug.scale)
    a = rng.uniform(-aug.rotation, aug.rotation)
    tx, ty = (rng.uniform(-aug.shift, aug.shift) * size for _ in range(2))
    c = (size - 1) / 2.0
    m = cv2.getRotationMatrix2D((c, c), a, s)
    m[:, 2] += (tx, ty)
    return m


def warp_pair(frames: list[np.ndarray], landmarks: list[np.ndarray | None], m: np.ndarray
              ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The same similarity ``m`` (:func:`random_similarity`) on frames (S,S,3) and their mediapipe pixel
    landmarks (468,2; pixel i spans [i, i+1)). Outside the frame the border is mirrored, as a crop of a
    larger frame would continue it, never black."""
    size = frames[0].shape[0]
    out = [cv2.warpAffine(np.asarray(f), m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
           for f in frames]
    lms = [None if lm is None else ((np.asarray(lm, np.float64) - 0.5) @ m[:, :2].T + m[:, 2] + 0.5).astype(np.float32)
           for lm in landmarks]
    return out, lms


@dataclass
class Clip:
    """A prepared clip: frames (T,S,S,3) uint8 (memory-mapped), landmarks (T,468,2) or None."""

    name: str
    video: str
    frames: np.ndarray
    landmarks: np.ndarray | None


def load_clips(root: str | Path) -> list[Clip]:
    """The clips of a ``prepare-data`` output folder (raises :class:`DataError` if there are none, or
    if the manifest or a clip file is unreadable: one line naming the file and the fix)."""
    root = Path(root)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise DataError(f"{root} has no manifest.json: run `splinecam prepare-data --videos DIR --out {root}` first")
    redo = f"run `splinecam prepare-data` into {root} again"
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest} is not readable JSON ({str(exc)[:120]}): {redo}") from None
    entries = info.get("clips", []) if isinstance(info, dict) else None
    if not isinstance(entries, list):
        raise DataError(f"{manifest} is not a prepare-data manifest (no list of clips): {redo}")
    clips = []
    for i, c in enumerate(entries):
        if not isinstance(c, dict) or not all(isinstance(c.get(k), str) for k in ("name", "video", "path")):
            raise DataError(f"{manifest}: clip entry {i} lacks its name / video / path: {redo}")
        frames = _load_array(root / c["path"], redo, mmap=True)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[1] != frames.shape[2]:
            raise DataError(f"{root / c['path']} is not a clip of (T, S, S, 3) uint8 frames "
                            f"(got {frames.dtype} {frames.shape}): {redo}")
        lm = None
        lm_name = c.get("landmarks_path")
        if isinstance(lm_name, str) and (root / lm_name).is_file():
            lm = _load_array(root / lm_name, redo)
            if lm.ndim != 3 or lm.shape[0] != len(frames) or lm.shape[-1] != 2:
                raise DataError(f"{root / lm_name} does not hold (T, 468, 2) landmarks for its {len(frames)} "
                                f"frames (got {lm.shape}): {redo}")
        if len(frames) >= 2:
            clips.append(Clip(c["name"], c["video"], frames, lm))
    if not clips:
        raise DataError(f"{root} holds no clip with 2 or more frames: prepare more data")
    return clips


def _load_array(path: Path, redo: str, mmap: bool = False) -> np.ndarray:
    """``np.load`` with the user errors (missing, truncated, not an array) as one DataError line."""
    if not path.is_file():
        raise DataError(f"{path} is missing: {redo}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable array ({str(exc).splitlines()[0][:120]}): {redo}") from None


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    if frame.shape[0] == size:
        return np.asarray(frame)
    interp = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(np.asarray(frame), (size, size), interpolation=interp)


def colour_jitter(frames: list[np.ndarray], aug: Augmentation, rng: random.Random) -> list[np.ndarray]:
    """The same random brightness/contrast/saturation/hue change on every frame (float32 [0,1] H×W×3)."""
    if not (aug.brightness or aug.contrast or aug.saturation or aug.hue):
        return frames
    b = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    s = rng.uniform(1 - aug.saturation, 1 + aug.saturation)
    h = rng.uniform(-aug.hue, aug.hue)
    out = []
    for f in frames:
        f = np.clip(f * b, 0, 1)
        grey = (f @ np.float32([0.299, 0.587, 0.114]))[..., None]
        f = np.clip((f - grey.mean()) * c + grey.mean(), 0, 1)
        grey = (f @ np.float32([0.299, 0.587, 0.114]))[..., None]
        f = np.clip((f - grey) * s + grey, 0, 1).astype(np.float32)
        if h:
            hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + h * 360.0) % 360.0
            f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out.append(np.clip(f, 0, 1))
    return out


class PairDataset(Dataset):
    """(source, driving) pairs from one clip, ``num_repeats`` × number of clips per epoch.

    Item: dict with ``source``, ``driving`` (3,S,S) float32 in [0,1]; ``source_landmarks``,
    ``driving_landmarks`` (468,2) float32 in [-1,1] grid coordinates, NaN when unknown or when the
    pair was flipped and no ``mirror`` map is given (mirroring swaps the landmark identities: with
    ``mirror``, landmark i of the flipped frame is the mirrored landmark ``mirror[i]``).

    ``require_landmarks``: pairs are drawn only from frames the face mesh found (landmark configs
    drive their networks with the landmarks); ``still_p``: share of pairs whose driving frame is the
    source frame itself (a still face must come back intact).
    """

    def __init__(self, clips: list[Clip], image_size: int, num_repeats: int = 1,
                 augmentation: Augmentation | None = None, seed: int = 0, mirror: np.ndarray | None = None,
                 require_landmarks: bool = False, still_p: float = 0.0):
        self.clips = clips
        self.image_size = image_size
        self.num_repeats = max(1, int(num_repeats))
        self.aug = augmentation or Augmentation.none()
        self.seed = seed
        self.epoch = 0
        self.mirror = mirror
        self.still_p = float(still_p)
        self.valid = None
        if require_landmarks:
            self.valid = [np.flatnonzero(np.isfinite(c.landmarks).all(axis=(1, 2))) if c.landmarks is not None
                          else np.zeros(0, np.int64) for c in clips]
            empty = [c.name for c, v in zip(clips, self.valid) if len(v) == 0]
            if empty:
                raise DataError(f"clips without face-mesh landmarks cannot train a landmark config: {', '.join(empty[:3])} "
                                f"(run prepare-data without --no-landmarks, or leave them out)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips) * self.num_repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = random.Random(hash((self.seed, self.epoch, index)) & 0xFFFFFFFF)
        c = index % len(self.clips)
        clip = self.clips[c]
        n = len(clip.frames)
        if self.valid is not None:
            i, j = sorted(int(self.valid[c][rng.randrange(len(self.valid[c]))]) for _ in range(2))
        else:
            i, j = sorted(rng.randrange(n) for _ in range(2))
        if self.aug.time_flip and rng.random() < 0.5:
            i, j = j, i
        if self.still_p and rng.random() < self.still_p:
            j = i
        flip = self.aug.horizontal_flip and rng.random() < 0.5
        size = self.image_size
        raw = [clip.frames[k] for k in (i, j)]
        raw_lms = [None if clip.landmarks is None else clip.landmarks[k] for k in (i, j)]
        if self.aug.affine:
            raw, raw_lms = warp_pair(raw, raw_lms, random_similarity(self.aug, clip.frames.shape[1], rng))
        frames = [_resize(f, size).astype(np.float32) / 255.0 for f in raw]
        if flip:
            frames = [f[:, ::-1] for f in frames]
        frames = colour_jitter(frames, self.aug, rng)
        lms = []
        for raw_lm in raw_lms:
            if raw_lm is None or (flip and self.mirror is None):
                lms.append(np.full((468, 2), np.nan, np.float32))
            else:
                # mediapipe pixel coordinates (pixel centres at +0.5) → [-1,1] grid (align_corners)
                lm = landmarks_to_grid(raw_lm, clip.frames.shape[1])
                if flip:
                    lm = lm[self.mirror] * np.float32([-1.0, 1.0])
                lms.append(lm.astype(np.float32))
        t = [torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1))) for f in frames]
        return {"source": t[0], "driving": t[1],
                "source_landmarks": torch.from_numpy(lms[0]), "driving_landmarks": torch.from_numpy(lms[1])}
