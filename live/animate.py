"""Offline animation: a portrait driven by a video, written as H.264 mp4 (``splinecam animate``).

What the official ``demo.py`` does, and more: face crops (``--crop face``, default) or the
official whole-frame resize (``--crop none``: same frames as the official demo for the same
inputs), relative / avd / standard normalisation, best-frame search, progress, the driving
video's frame rate and audio.

Frames are streamed: the prediction for each driving frame depends only on its keypoints and the
reference frame's, so the official backward/forward pass around the best frame gives the same
frames as one pass in order with that reference.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from splinecam.engines.backends import Backend
from splinecam.engines.errors import SplinecamError
from splinecam.engines.faces.best_frame import find_best_frame
from splinecam.engines.faces.detection import find_face, stable_crop_for_frames
from splinecam.engines.faces.geometry import CropBox, crop_box_for_face, crop_image
from splinecam.engines.media import VideoReader, VideoWriter, read_image
from splinecam.engines.output_guard import GeneratorOutputError
from splinecam.engines.progress import Progress
from splinecam.engines.validate import COUNT, Range
from splinecam.live.normalise import KeypointNormaliser

CROPS = ("face", "none")
OUTPUT_SIZE = Range(int, 16, 4096)   # --output-size: pixels per side


@dataclass
class AnimateOptions:
    """What to animate and how. ``output_size`` applies to ``--crop face`` (the 256 result upscaled)."""

    source: Path
    driving: Path
    out: Path
    mode: str = "relative"
    find_best_frame: bool = False
    crop: str = "face"
    max_frames: int | None = None
    output_size: int = 512
    relative_jacobian: bool = True  # FOMM only: the official demo's relative jacobian (off: positions only)


@dataclass
class AnimateResult:
    frames: int
    fps: float
    size: tuple[int, int]
    reference_frame: int
    audio: bool
    out: Path


def official_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The official demo's preprocessing: skimage resize to size×size, [0,1] float32 RGB."""
    from skimage.transform import resize

    return resize(image, (size, size))[..., :3].astype(np.float32)


class _Frames:
    """The driving frames as the networks see them ((S,S,3) RGB), re-readable."""

    def __init__(self, reader: VideoReader, size: int, crop: CropBox | None, max_frames: int | None):
        self.reader, self.size, self.crop, self.max_frames = reader, size, crop, max_frames

    def __iter__(self):
        for i, frame in enumerate(self.reader):
            if self.max_frames is not None and i >= self.max_frames:
                return
            if self.crop is None:
                yield official_resize(frame, self.size)
            else:
                yield crop_image(frame, self.crop, self.size)

    def total(self) -> int | None:
        n = self.reader.num_frames
        if n is None:
            return self.max_frames
        return n if self.max_frames is None else min(n, self.max_frames)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


@dataclass
class AnimationInputs:
    """The checked inputs of one animation: the source as the networks see it ((S,S,3): uint8 face
    crop, or float32 [0,1] official resize) and the driving frames, same form, re-readable."""

    source: np.ndarray
    frames: _Frames
    fps: float
    has_audio: bool


def prepare_inputs(opts: AnimateOptions, size: int) -> AnimationInputs:
    """Read and crop the inputs at the model size S; raises the user errors (no face, unreadable
    file) before any network is built."""
    if opts.crop not in CROPS:
        raise SplinecamError(f"unknown --crop {opts.crop!r}: use face or none")
    OUTPUT_SIZE.check(opts.output_size, "--output-size")
    if opts.max_frames is not None:
        COUNT.check(opts.max_frames, "--max-frames")
    source_image = read_image(opts.source)
    reader = VideoReader(opts.driving)
    if opts.crop == "face":
        face = find_face(source_image, what=f"the source image {opts.source}")
        source = crop_image(source_image, crop_box_for_face(face), size)
        driving_crop = stable_crop_for_frames(reader, what=f"the driving video {opts.driving}")
    else:
        source = official_resize(source_image, size)
        driving_crop = None
    return AnimationInputs(source, _Frames(reader, size, driving_crop, opts.max_frames), reader.fps, reader.has_audio)


def animate(backend: Backend, opts: AnimateOptions, inputs: AnimationInputs | None = None) -> AnimateResult:
    """Animate ``opts.source`` with ``opts.driving`` into ``opts.out``; returns what was written."""
    size = backend.size
    inputs = inputs or prepare_inputs(opts, size)
    frames = inputs.frames

    state = backend.prepare_source(inputs.source)
    avd_fn = backend.avd if backend.has_avd else None
    normaliser = KeypointNormaliser(state.kp, opts.mode, avd_fn, opts.relative_jacobian)

    reference = 0
    if opts.find_best_frame:
        reference = find_best_frame(_to_uint8(inputs.source), (_to_uint8(f) for f in frames))
    for i, frame in enumerate(frames):
        if i == reference:
            normaliser.calibrate(backend.keypoints(frame))
            break
    if normaliser.calibration is None:
        raise SplinecamError(f"the driving video {opts.driving} has no frames to animate with")

    out_size = (opts.output_size, opts.output_size) if opts.crop == "face" else (size, size)
    written = 0
    try:
        with VideoWriter(opts.out, inputs.fps, out_size, audio_from=opts.driving, flag="--out",
                         inputs=[opts.source]) as writer, \
                Progress(f"animate {Path(opts.out).name}", frames.total()) as progress:
            for frame in frames:
                kp = normaliser(backend.keypoints(frame))
                try:
                    pred = backend.generate(state, kp)
                except GeneratorOutputError as err:
                    kept = f"; the {written} frames before it are kept in {opts.out}" if written else ""
                    raise GeneratorOutputError(f"driving frame {written}: {err}{kept}") from None
                if out_size != (size, size):
                    pred = cv2.resize(pred, out_size, interpolation=cv2.INTER_CUBIC)
                writer.write(pred)
                written += 1
                progress.update()
    except KeyboardInterrupt:  # the writer has finalised what it had: say where it is
        if written and Path(opts.out).is_file():
            print(f"splinecam: kept the {written} frames made so far in {opts.out}", file=sys.stderr, flush=True)
        raise
    return AnimateResult(written, inputs.fps, out_size, reference, inputs.has_audio, Path(opts.out))
