"""Image and video input/output.

Frames are ``H×W×3 uint8`` RGB arrays everywhere. Reading uses OpenCV (its pip wheels decode
every common format); writing uses the FFmpeg executable shipped by ``imageio-ffmpeg``, because
pip's OpenCV cannot encode H.264 and there is no system FFmpeg. Videos are written as H.264
(libx264, yuv420p, CRF 18, ``+faststart``) in the container the extension names (.mp4, .mov, .mkv,
.m4v; others are refused), atomically: to a hidden temporary file next to the target, moved into
place by ``close()`` — also after Ctrl-C, with the frames written so far (engines/outputs.py has the
rules every output follows, engines/interrupts.py the signals).

Every failure a user can cause raises :class:`splinecam.engines.errors.MediaError` with a one-line message
naming the file.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from splinecam.engines.errors import MediaError
from splinecam.engines.interrupts import child_process_kwargs, deferred
from splinecam.engines.outputs import check_output, finalise, temp_path_beside
from splinecam.engines.validate import FPS, Range

PathLike = str | os.PathLike


def ffmpeg_exe() -> str:
    """Path of the FFmpeg executable (``IMAGEIO_FFMPEG_EXE`` if set, else the one bundled with
    imageio-ffmpeg); raises :class:`MediaError` naming the fix if there is none that can run."""
    env = os.environ.get("IMAGEIO_FFMPEG_EXE")
    try:
        import imageio_ffmpeg
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError) as err:  # pragma: no cover - broken install
        raise MediaError(f"FFmpeg is not available ({err}): reinstall with "
                         f"`pip install --force-reinstall imageio-ffmpeg`") from None
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        if env:
            raise MediaError(f"IMAGEIO_FFMPEG_EXE={env} is not an FFmpeg executable: unset it "
                             f"(splinecam brings its own) or point it at ffmpeg")
        raise MediaError(f"FFmpeg ({exe}) is missing: reinstall with "
                         f"`pip install --force-reinstall imageio-ffmpeg`")  # pragma: no cover
    return exe


def _run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    """Run FFmpeg to completion in its own process group (a Ctrl-C reaches splinecam only)."""
    try:
        return subprocess.run([ffmpeg_exe(), *args], capture_output=True, text=True, errors="replace",
                              **child_process_kwargs())
    except OSError as err:
        raise MediaError(f"cannot run FFmpeg: {err.strerror or err}") from None


# ----------------------------------------------------------------------------- images


def read_image(path: PathLike) -> np.ndarray:
    """Read a picture as an ``H×W×3 uint8`` RGB array.

    Alpha is dropped, grey becomes RGB, 16-bit pictures are scaled to 8 bits and the EXIF
    orientation is applied. Raises :class:`MediaError` if the file is missing or not a picture.
    """
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"image not found: {p} (check the path)")
    try:
        data = np.fromfile(str(p), dtype=np.uint8)  # works with non-ASCII paths too
    except OSError as err:
        raise MediaError(f"cannot read image {p}: {err.strerror or err}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    if img is None:
        raise MediaError(f"cannot read image {p}: not a picture OpenCV can decode "
                         f"(use a PNG or JPEG file)")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0) + 0.5,
                      0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image(path: PathLike, image_rgb: np.ndarray, flag: str = "output") -> None:
    """Write an ``H×W×3 uint8`` RGB array as a picture (format from the extension: ``IMAGE_SUFFIXES``),
    through a temporary file beside it; the folder is created if missing. Raises :class:`MediaError`
    (an :class:`~splinecam.engines.outputs.OutputError` for an unusable path) if it cannot be written."""
    _check_frame(image_rgb)
    p = check_output(path, flag, kind="image")
    ok, buf = False, None
    try:
        ok, buf = cv2.imencode(p.suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise MediaError(f"cannot write image {p}: OpenCV cannot encode {p.suffix!r} (use .png or .jpg)")
    try:
        tmp = temp_path_beside(p)
        try:
            buf.tofile(str(tmp))
            finalise(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        raise MediaError(f"cannot write image {p}: {err.strerror or err}") from None


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None = None) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 \
            or frame.dtype != np.uint8:
        desc = (f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray)
                else type(frame).__name__)
        raise ValueError(f"expected an H×W×3 uint8 RGB frame, got {desc}")
    if size is not None and (frame.shape[1], frame.shape[0]) != tuple(size):
        raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]} but the video is "
                         f"{size[0]}x{size[1]}: resize frames to the writer's size")


# ----------------------------------------------------------------------------- probing


def probe(path: PathLike) -> dict:
    """What FFmpeg says about a media file's container (nothing is decoded):
    ``{"video": bool, "audio": bool, "duration": float | None (s), "fps": float | None}``.
    Raises :class:`MediaError` if the file is missing or FFmpeg finds no stream in it."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"file not found: {p} (check the path)")
    res = _run_ffmpeg(["-hide_banner", "-nostdin", "-i", str(p)])
    text = res.stderr
    streams = [ln for ln in text.splitlines() if ln.lstrip().startswith("Stream #")]
    if not streams:
        last = text.strip().splitlines()[-1] if text.strip() else "no streams"
        raise MediaError(f"cannot read {p}: FFmpeg says {last.strip()!r} "
                         f"(is it a video or audio file?)")
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    fps = re.search(r" (\d+(?:\.\d+)?) fps", text)
    return {
        "video": any(" Video: " in ln for ln in streams),
        "audio": any(" Audio: " in ln for ln in streams),
        "duration": (int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3])) if dur else None,
        "fps": float(fps[1]) if fps else None,
    }


def count_frames(path: PathLike) -> int:
    """The exact number of video frames of ``path`` (FFmpeg reads every packet)."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"video not found: {p} (check the path)")
    import imageio_ffmpeg

    try:
        return int(imageio_ffmpeg.count_frames_and_secs(str(p))[0])
    except Exception:
        raise MediaError(f"cannot count the frames of {p}: not a video FFmpeg can read "
                         f"(use an MP4, MOV, MKV, AVI or WebM file)") from None


# ----------------------------------------------------------------------------- reading


class VideoReader:
    """Frames of a video file as ``H×W×3 uint8`` RGB arrays.

    Iterating starts from the first frame each time. ``fps`` (frames/s; 25 when the file does
    not say), ``size`` ``(width, height)`` and ``num_frames`` (the container's count, an
    estimate; None when unknown — use :func:`count_frames` for an exact one) come from OpenCV;
    ``has_audio`` from FFmpeg. Raises :class:`MediaError` if the file is missing or not a
    readable video.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MediaError(f"video not found: {self.path} (check the path)")
        cap = self._open()
        try:
            ok, frame = cap.read()
            if not ok or frame is None:
                raise MediaError(f"cannot read video {self.path}: no frame could be decoded "
                                 f"(is it a video? use an MP4, MOV, MKV, AVI or WebM file)")
            self.size: tuple[int, int] = (frame.shape[1], frame.shape[0])
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps: float = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else 25.0
            n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.num_frames: int | None = int(n) if n and np.isfinite(n) and n > 0 else None
        finally:
            cap.release()
        self._has_audio: bool | None = None

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise MediaError(f"cannot open video {self.path}: not a video OpenCV can read "
                             f"(use an MP4, MOV, MKV, AVI or WebM file)")
        return cap

    @property
    def has_audio(self) -> bool:
        """Whether the file has an audio stream (asks FFmpeg once)."""
        if self._has_audio is None:
            self._has_audio = probe(self.path)["audio"]
        return self._has_audio

    def __iter__(self) -> Iterator[np.ndarray]:
        cap = self._open()
        try:
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError("the number of frames is unknown; use count_frames()")
        return self.num_frames

    def read_all(self, max_frames: int | None = None) -> list[np.ndarray]:
        """The first ``max_frames`` frames (all when None), as a list of RGB arrays."""
        frames = []
        for frame in self:
            if max_frames is not None and len(frames) >= max_frames:
                break
            frames.append(frame)
        return frames

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, size={self.size}, fps={self.fps:g}, "
                f"num_frames={self.num_frames})")


# ----------------------------------------------------------------------------- writing


SIDE = Range(int, low=1, high=8192)


class VideoWriter:
    """Write ``H×W×3 uint8`` RGB frames to an H.264 video (libx264, yuv420p, CRF ``crf``).

    ``path``'s extension picks the container (``.mp4``, ``.mov``, ``.mkv``, ``.m4v``); any other is
    refused, like a folder, an unwritable place or one of ``inputs`` (the checks of
    :func:`splinecam.engines.outputs.check_output`, made here before FFmpeg starts; ``flag`` names the
    option in the messages). ``size`` is ``(width, height)`` of the frames given to :meth:`write`; a
    frame of another size raises ``ValueError``. yuv420p needs even sides: an odd width or height is
    padded by repeating the last column / row, so the file is at most one pixel wider / taller
    (``output_size``). With ``audio_from``, ``close()`` copies the audio of that file (if it has
    any) into the result, re-encoded as AAC and cut to the video's length.

    ``preset`` / ``threads``: libx264's speed preset and its thread count (None: FFmpeg's choice, one per
    core; the live recorder asks for one thread, so the encoder never competes with the networks for
    every core). ``nice``: added to FFmpeg's scheduling nice value (the live recorder: 19, the lowest
    priority — :mod:`splinecam.engines.priority`), set before the first frame, so before libx264 starts
    its threads.

    The video goes to a hidden temporary file next to ``path`` and replaces ``path`` when closed,
    with ordinary file permissions. FFmpeg runs in its own process group, so a Ctrl-C in the
    terminal reaches splinecam only; leaving the ``with`` block on an exception (Ctrl-C included)
    still finalises the frames written so far into a playable file.
    """

    def __init__(self, path: PathLike, fps: float, size: tuple[int, int], *,
                 audio_from: PathLike | None = None, crf: int = 18,
                 preset: str = "medium", threads: int | None = None, nice: int = 0, flag: str = "output",
                 inputs=()) -> None:
        try:
            w, h = SIDE.check(size[0], "video width"), SIDE.check(size[1], "video height")
            self.fps = float(FPS.check(fps, "fps"))
        except (TypeError, IndexError):
            raise ValueError(f"video size must be (width, height), got {size!r}") from None
        self.path = check_output(path, flag, kind="video", inputs=[*inputs, audio_from])
        self.size = (w, h)
        self.output_size = (w + w % 2, h + h % 2)
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.frames_written = 0
        exe = ffmpeg_exe()
        try:
            self._tmp = temp_path_beside(self.path)
        except OSError as err:
            raise MediaError(f"cannot write {flag} {self.path}: {err.strerror or err}") from None
        self._log = tempfile.TemporaryFile()
        rate = str(Fraction(self.fps).limit_denominator(100000))
        cmd = [exe, "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.output_size[0]}x"
               f"{self.output_size[1]}", "-r", rate, "-i", "-", "-an",
               "-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)),
               *(["-threads", str(int(threads))] if threads else []),
               "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(self._tmp)]
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
                **child_process_kwargs())
        except OSError as err:
            self._cleanup()
            raise MediaError(f"cannot start FFmpeg to write {self.path}: {err}") from None
        if nice:
            from splinecam.engines.priority import lower_process_priority

            lower_process_priority(self._proc.pid, nice)

    def write(self, frame_rgb: np.ndarray) -> None:
        """Append one ``H×W×3 uint8`` RGB frame of the writer's ``size``."""
        if self._proc is None:
            raise MediaError(f"cannot write to {self.path}: the video is already closed")
        _check_frame(frame_rgb, self.size)
        if self.output_size != self.size:
            frame_rgb = np.pad(frame_rgb, ((0, self.output_size[1] - self.size[1]),
                                           (0, self.output_size[0] - self.size[0]), (0, 0)),
                               mode="edge")
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame_rgb)).cast("B"))  # no copy
        except (BrokenPipeError, OSError):
            self._abort()
            raise MediaError(f"cannot write video {self.path}: FFmpeg stopped "
                             f"({self._ffmpeg_said()})") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (and mux the audio); raises :class:`MediaError` on failure or if no
        frame was written. Calling it again does nothing. A first signal arriving meanwhile is
        raised once the file is complete (:func:`splinecam.engines.interrupts.deferred`)."""
        if self._proc is None:
            return
        with deferred():
            self._close()

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        try:
            proc.stdin.close()
        except OSError:
            pass
        code, pending = _wait(proc)
        self._finish(code)
        if pending is not None:
            raise pending

    def _finish(self, code: int) -> None:
        if self.frames_written == 0:
            self._cleanup()
            raise MediaError(f"no frames were written to {self.path}: nothing to save")
        if code != 0:
            said = self._ffmpeg_said()
            kept = _decodable_frames(self._tmp)
            if kept:  # stopped from outside (a signal to FFmpeg itself): keep what it finished
                finalise(self._tmp, self.path)
                self._cleanup()
                raise MediaError(f"FFmpeg stopped early ({said}): kept the {kept} frames it finished "
                                 f"in {self.path}")
            self._cleanup()
            raise MediaError(f"cannot write video {self.path}: FFmpeg failed ({said})")
        try:
            if self.audio_from is not None and probe(self.audio_from)["audio"]:
                self._mux_audio()
            finalise(self._tmp, self.path)
        except OSError as err:
            raise MediaError(f"cannot write video {self.path}: {err.strerror or err}") from None
        finally:
            self._cleanup()

    def _mux_audio(self) -> None:
        muxed = self._tmp.with_name(self._tmp.name.replace(".part", ".mux"))
        res = _run_ffmpeg(["-y", "-hide_banner", "-nostdin", "-loglevel", "error",
                           "-i", str(self._tmp), "-t", f"{self.frames_written / self.fps:.6f}",
                           "-i", str(self.audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                           "-c:a", "aac", "-movflags", "+faststart", str(muxed)])
        if res.returncode != 0:
            muxed.unlink(missing_ok=True)
            said = (res.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise MediaError(f"cannot add the audio of {self.audio_from} to {self.path}: "
                             f"{said}")
        os.replace(muxed, self._tmp)

    def _ffmpeg_said(self) -> str:
        try:
            self._log.seek(0)
            lines = self._log.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            lines = []
        return lines[-1] if lines else "no message"

    def _abort(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._cleanup(keep_log=True)

    def _cleanup(self, keep_log: bool = False) -> None:
        self._tmp.unlink(missing_ok=True)
        if not keep_log:
            self._log.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # keep what was recorded, without hiding the original error
            self.close()
        except MediaError:
            pass

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:  # never closed: do not leave FFmpeg or the temp file behind
            try:
                proc.kill()
                proc.wait()
                self._cleanup()
            except Exception:
                pass


def _wait(proc: subprocess.Popen) -> tuple[int, KeyboardInterrupt | None]:
    """``proc.wait()`` that a plain KeyboardInterrupt (no handlers installed) cannot cut short:
    returns (exit code, the interrupt to re-raise once the file is finalised, or None)."""
    pending = None
    while True:
        try:
            return proc.wait(), pending
        except KeyboardInterrupt as err:
            pending = err


def _decodable_frames(path: Path) -> int:
    """How many frames OpenCV decodes from ``path`` (0 for a file that is not a playable video)."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.isOpened():
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
    finally:
        cap.release()
    return n


def picture_paths(path: PathLike, flag: str) -> list[Path]:
    """A picture, or the pictures of a folder (``engines.outputs.IMAGE_SUFFIXES``, sorted by name,
    case-insensitively): the avatar library's order, so its first picture is the one shown first.
    Raises MediaError naming ``flag`` when there is none."""
    from splinecam.engines.outputs import IMAGE_SUFFIXES

    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                       key=lambda f: f.name.lower())
        if not files:
            raise MediaError(f"{flag} {p}: the folder has no pictures ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not p.exists():
        raise MediaError(f"{flag} {p}: no such picture or folder (check the path)")
    return [p]
