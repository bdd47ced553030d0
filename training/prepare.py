"""``prepare-data``: raw talking-head videos → face-cropped training clips.

Each video is split into shots (a cut = a large jump of the mean absolute difference between
consecutive downscaled grey frames); each shot gets ONE stable square crop
(:func:`splinecam.engines.faces.detection.stable_crop_for_frames`, the framing the live loop and ``animate`` use),
moved or shrunk to lie inside the video frame (``--crop inside``, the default: no made-up pixels; see
:func:`crop_frames`), and is written as

- ``<video>--<shot>.npy``: uint8 (T, S, S, 3) RGB frames (memory-mappable: fast to load);
- ``<video>--<shot>.landmarks.npy``: float32 (T, 468, 2) mediapipe face-mesh landmarks in pixels of
  the crop, NaN where the mesh found no face (keypoint warm start, AKD);

plus ``manifest.json`` listing the clips, their source video, shot range and crop box. Videos (or
shots) without a face are reported and skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from splinecam.engines.errors import FaceNotFoundError, MediaError, SplinecamError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
MIN_SHOT_FRAMES = 8
MIN_MESH_SHARE = 0.5  # a shot is kept if the face mesh finds a face in at least half its frames


@dataclass
class PreparedClip:
    """One written clip: ``frames`` (T,S,S,3) uint8 at ``path``; crop = (cx, cy, side) in source pixels."""

    name: str
    video: str
    path: str
    landmarks_path: str | None
    first_frame: int
    num_frames: int
    crop: tuple[float, float, float]
    fps: float


@dataclass
class PrepareReport:
    """What ``prepare-data`` did: written clips and skipped videos/shots with the reason."""

    clips: list[PreparedClip]
    skipped: list[tuple[str, str]]


def list_videos(directory: Path) -> list[Path]:
    """Video files directly in ``directory`` (or ``directory`` itself if it is a file), sorted."""
    directory = Path(directory)
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise MediaError(f"video directory {directory} does not exist: give a folder of .mp4 clips")
    videos = sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise MediaError(f"no videos in {directory}: expected .mp4/.mov/.mkv/.avi/.webm files")
    return videos


def split_shots(frames: list[np.ndarray], threshold: float = 40.0) -> list[tuple[int, int]]:
    """Shot boundaries as [start, end) ranges: a cut where the mean absolute difference of 64×64
    grey thumbnails of consecutive frames exceeds ``threshold`` (0..255 scale)."""
    if not frames:
        return []
    thumbs = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
              for f in frames]
    cuts = [0]
    for i in range(1, len(thumbs)):
        if float(np.abs(thumbs[i] - thumbs[i - 1]).mean()) > threshold:
            cuts.append(i)
    cuts.append(len(frames))
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


CROP_MODES = ("inside", "pad")  # the first is the default (prepare-data / evaluate --crop)


def crop_frames(frames: list[np.ndarray], size: int, what: str,
                mode: str = "inside") -> tuple[np.ndarray, tuple[float, float, float]]:
    """One stable crop for ``frames`` (H×W×3 uint8) → (T, size, size, 3) uint8 and (cx, cy, side).

    ``mode="inside"`` (the default): the crop is moved — and, where it is larger than the frame's short side,
    shrunk — to lie inside the frame (:meth:`CropBox.clamped`), so every pixel of a clip is a pixel of the
    video. Most talking-head clips are already tight face crops (VoxCeleb 224², HDTF 512², MEAD 256²): the
    framing crop (1.85 face sizes) reached past the edges of 28 of the 36 training clips by 3–48 % of its
    area, and the replicated edge rows there — streaks that change from frame to frame with whatever touches
    the edge — would be trained on and scored as if they were video. ``mode="pad"``: the crop as it was before 2026-12-07 (it may extend past
    the frame, whose edge pixels are replicated; kept to reproduce older data and figures).
    """
    from splinecam.engines.faces.detection import stable_crop_for_frames
    from splinecam.engines.faces.geometry import crop_image

    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    box = stable_crop_for_frames(frames, sample_every=max(1, min(5, len(frames) // 4)), what=what)
    if mode == "inside":
        h, w = frames[0].shape[:2]
        box = box.clamped(w, h)
    out = np.stack([crop_image(f, box, size) for f in frames])
    return out, (float(box.cx), float(box.cy), float(box.size))


def face_landmarks(frames: np.ndarray) -> np.ndarray:
    """mediapipe face-mesh landmarks of every frame: (T,S,S,3) uint8 → (T,468,2) float32, NaN if none."""
    from splinecam.engines.faces.mesh import FaceMesh

    out = np.full((len(frames), 468, 2), np.nan, dtype=np.float32)
    with FaceMesh(static=False) as mesh:
        for i, frame in enumerate(frames):
            pts = mesh.landmarks(frame)
            if pts is not None:
                out[i] = pts
    return out


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (H×W×3 uint8 RGB) and the frame rate of a video."""
    from splinecam.engines.media import VideoReader

    reader = VideoReader(path)
    return reader.read_all(), reader.fps


def prepare_videos(videos_dir: Path, out_dir: Path, size: int = 256, landmarks: bool = True,
                   progress=print, crop_mode: str = "inside") -> PrepareReport:
    """Crop every video of ``videos_dir`` into clips in ``out_dir`` (see the module docstring)."""
    videos = list_videos(Path(videos_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PrepareReport([], [])
    for video in videos:
        try:
            frames, fps = read_video(video)
        except MediaError as exc:
            report.skipped.append((video.name, str(exc)))
            progress(f"skip {video.name}: {exc}")
            continue
        shots = split_shots(frames)
        found = 0
        for k, (a, b) in enumerate(shots):
            if b - a < MIN_SHOT_FRAMES:
                report.skipped.append((f"{video.name}[{a}:{b}]", f"shot shorter than {MIN_SHOT_FRAMES} frames"))
                continue
            name = f"{video.stem}--{k:03d}"
            try:
                clip, crop = crop_frames(frames[a:b], size, f"{video.name} frames {a}-{b}", crop_mode)
            except FaceNotFoundError:
                report.skipped.append((f"{video.name}[{a}:{b}]", "no face found"))
                continue
            lm = None
            if landmarks:
                lm = face_landmarks(clip)
                found_share = float(np.isfinite(lm).all(axis=(1, 2)).mean())
                if found_share < MIN_MESH_SHARE:
                    report.skipped.append((f"{video.name}[{a}:{b}]",
                                           f"no face (face mesh found one in {100 * found_share:.0f}% of the frames)"))
                    continue
            path = out_dir / f"{name}.npy"
            _save_npy_atomic(path, clip)
            lm_path = None
            if lm is not None:
                lm_path = out_dir / f"{name}.landmarks.npy"
                _save_npy_atomic(lm_path, lm)
            report.clips.append(PreparedClip(name, video.name, path.name, lm_path.name if lm_path else None,
                                             a, b - a, crop, fps))
            found += 1
            progress(f"{video.name}: shot {k} frames {a}-{b} → {path.name} ({b - a} frames, crop side {crop[2]:.0f}px)")
        if not found:
            report.skipped.append((video.name, "no face found in any shot"))
            progress(f"skip {video.name}: no face found")
    manifest = {"size": size, "clips": [asdict(c) for c in report.clips],
                "skipped": [{"what": w, "why": y} for w, y in report.skipped]}
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out_dir / "manifest.json")
    if not report.clips:
        raise FaceNotFoundError(f"no face found in any video of {videos_dir}: nothing to train on")
    return report


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def run(args) -> int:
    """CLI entry of ``prepare-data``."""
    if args.size < 32:
        raise SplinecamError(f"--size {args.size} is too small: use 64 or more (256 for the bundled configs)")
    report = prepare_videos(Path(args.videos), Path(args.out), args.size, landmarks=not args.no_landmarks,
                            crop_mode=getattr(args, "crop", "inside"))
    total = sum(c.num_frames for c in report.clips)
    print(f"prepared {len(report.clips)} clips ({total} frames) in {args.out}; skipped {len(report.skipped)}")
    for what, why in report.skipped:
        print(f"  skipped {what}: {why}")
    return 0
