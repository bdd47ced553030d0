"""Black holes in an output video: frames with a solid dark region the avatar does not have.

    python -m splinecam.benchmarks.black_regions OUT.mp4 --avatar IMG [--compose pad|none] [--json R.json]
    python -m splinecam.benchmarks.black_regions --sweep AVATARS_DIR --driving CLIP [CLIP …] [--keep DIR] [--json R.json]
                                                 [-- ANIMATE_FLAGS …]

The second form runs ``splinecam animate`` (the real command, bundled weights unless the flags after
``--`` say otherwise) for every portrait in AVATARS_DIR driven by every CLIP, and checks each output.

The definition (issue 12): an 8-connected region of pixels whose brightest channel is below 12, larger
than the avatar's own largest such region by more than 0.1 % of the frame. The avatar's own largest
region is measured on the avatar as it appears in the output when nothing moves: with ``--compose
pad`` (what ``splinecam demo`` / ``live`` write) the avatar is face-cropped and composed at the video's
frame size exactly as the live loop composes it; with ``--compose none`` (``animate`` output: the face
crop itself, upscaled) the avatar's face crop is resized to the frame size. Areas are compared as
fractions of the frame. Exit code 1 when any frame is flagged (so scripts and CI can use it).

``--backend auto`` (animate's default) picks by a timing round at start-up, so two sweeps can run different
backends and precisions, and the rule's count moves with them (the same weights flagged 0 and 4 frames of one
animation under two picks). Each report records the backend its animate ran; to compare weights, pin it
(``-- --backend openvino --precision bf16``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

DARK = 12            # a pixel is dark when its brightest channel is below this (0..255)
#: the avatar's own dark region is measured at DARK + this: H.264 (CRF 18) and the resizes move near-black
#: pixels by a level or two, which made whole dark suits / backgrounds "new" dark regions from frame 0 (the
#: still face itself): einstein.jpg's suit is 11.6 in the reference and 10.7 in the animate output. A hole
#: from sampling outside the source is 0-valued and far below either threshold.
REFERENCE_SLACK = 2
MARGIN = 0.001       # flagged when the largest dark region exceeds the avatar's by 0.1 % of the frame


def largest_region(mask: np.ndarray) -> np.ndarray:
    """(H,W) bool: the largest 8-connected region of ``mask`` (H,W bool; all False when it has none)."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def largest_dark_mask(frame_rgb: np.ndarray, dark: int = DARK) -> np.ndarray:
    """(H,W) bool: the largest 8-connected region of ``frame_rgb`` (H,W,3 uint8) whose max channel < ``dark``."""
    return largest_region(frame_rgb.max(axis=2) < dark)


def largest_dark_region(frame_rgb: np.ndarray, dark: int = DARK) -> int:
    """Pixels in the largest 8-connected region of ``frame_rgb`` (H,W,3 uint8) whose max channel < ``dark``."""
    return int(largest_dark_mask(frame_rgb, dark).sum())


@dataclass
class BlackRegionReport:
    """Per-video result: ``flagged`` frame indices and each one's excess (fraction of the frame)."""

    video: str
    frames: int
    reference_fraction: float
    flagged: list[int] = field(default_factory=list)
    excess: list[float] = field(default_factory=list)
    worst_pixels: int = 0
    backend: str = ""    # what the animate run used (``--sweep``), as its last line names it; "" when not known

    @property
    def ok(self) -> bool:
        return not self.flagged


def check_frames(frames, reference_fraction: float, name: str = "", margin: float = MARGIN) -> BlackRegionReport:
    """Check an iterable of (H,W,3) uint8 RGB frames against the avatar's own dark-region fraction."""
    report = BlackRegionReport(name, 0, reference_fraction)
    for i, frame in enumerate(frames):
        report.frames += 1
        px = largest_dark_region(frame)
        excess = px / (frame.shape[0] * frame.shape[1]) - reference_fraction
        if excess > margin:
            report.flagged.append(i)
            report.excess.append(round(float(excess), 5))
            report.worst_pixels = max(report.worst_pixels, px)
    return report


def reference_frame(avatar_rgb: np.ndarray, size: tuple[int, int], compose: str = "pad") -> np.ndarray:
    """The avatar as it appears in an output of ``size`` (W, H) when nothing moves (see the module doc)."""
    from splinecam.engines.faces.detection import find_face
    from splinecam.engines.faces.geometry import crop_box_for_face, crop_image

    crop_box = crop_box_for_face(find_face(avatar_rgb, "the avatar"))
    face = crop_image(avatar_rgb, crop_box, 256)
    if compose == "none":
        return cv2.resize(face, size, interpolation=cv2.INTER_LINEAR)
    from splinecam.live.compose import ComposeOptions, Composer

    return Composer(ComposeOptions(size, "pad", "blur"), avatar_rgb, crop_box).compose(face)


def check_video(path: str, avatar_rgb: np.ndarray, compose: str = "pad") -> BlackRegionReport:
    from splinecam.engines.media import VideoReader

    reader = VideoReader(path)
    frames = iter(reader)
    first = next(frames)
    ref = reference_frame(avatar_rgb, (first.shape[1], first.shape[0]), compose)
    fraction = largest_dark_region(ref, DARK + REFERENCE_SLACK) / (ref.shape[0] * ref.shape[1])

    def all_frames():
        yield first
        yield from frames

    return check_frames(all_frames(), fraction, str(path))


def animate_backend(animate_stdout: str) -> str:
    """The backend ``splinecam animate`` names on its last line ("… backend openvino/cpu/bf16)"), or ""."""
    m = re.search(r"backend ([\w.-]+/[\w.-]+/[\w.-]+)\)", animate_stdout)
    return m.group(1) if m else ""


def sweep(avatars_dir: str, clips: list[str], animate_flags: list[str], say=print,
          keep: str | None = None) -> list[BlackRegionReport]:
    """``splinecam animate`` of every portrait in ``avatars_dir`` × every clip, each output checked; the
    animations are written to ``keep`` (kept, to look at) or to a temporary folder (deleted)."""
    import contextlib
    import subprocess
    import tempfile
    from pathlib import Path

    from splinecam.engines.media import read_image
    from splinecam.engines.outputs import IMAGE_SUFFIXES

    if not Path(avatars_dir).is_dir():
        raise SystemExit(f"--sweep {avatars_dir}: not a folder of portraits")
    avatars = sorted(p for p in Path(avatars_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not avatars:
        raise SystemExit(f"no portraits in {avatars_dir}")
    reports = []
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="splinecam-black-")) as tmp:
        for clip in clips:
            for avatar in avatars:
                out = Path(tmp) / f"{avatar.stem}-{Path(clip).stem}.mp4"
                cmd = [sys.executable, "-m", "splinecam.cli", "animate", "--source", str(avatar), "--driving", clip,
                       "--out", str(out), *animate_flags]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"animate {avatar.name} × {clip} failed: {(done.stderr or done.stdout).strip()[-300:]}")
                report = check_video(str(out), read_image(avatar), "none")
                report.video = f"{avatar.name} × {Path(clip).name}"
                report.backend = animate_backend(done.stdout)
                say(f"{report.video} ({report.backend or 'backend not named'}): "
                    f"{len(report.flagged)} of {report.frames} frames flagged")
                reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    from splinecam.engines.media import read_image

    argv = list(sys.argv[1:] if argv is None else argv)
    animate_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m splinecam.benchmarks.black_regions", description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", help="output videos to check")
    ap.add_argument("--avatar", help="the avatar image the videos animate")
    ap.add_argument("--compose", choices=("pad", "none"), default="pad",
                    help="pad: live/demo output (default); none: animate output (the face crop)")
    ap.add_argument("--sweep", metavar="AVATARS_DIR", help="animate every portrait in this folder and check each")
    ap.add_argument("--driving", nargs="+", default=[], metavar="CLIP", help="with --sweep: the driving clips")
    ap.add_argument("--keep", metavar="DIR", help="with --sweep: keep the animations in this folder (to look at them)")
    ap.add_argument("--json", help="write the reports as JSON")
    args = ap.parse_args(argv)
    if args.sweep:
        if not args.driving:
            ap.error("--sweep needs --driving CLIP [CLIP …]")
        reports = sweep(args.sweep, args.driving, animate_flags, keep=args.keep)
    else:
        if not args.videos or not args.avatar:
            ap.error("give the videos and --avatar, or --sweep AVATARS_DIR --driving CLIP …")
        avatar = read_image(args.avatar)
        reports = [check_video(v, avatar, args.compose) for v in args.videos]
    if not args.sweep:   # (the sweep printed each animation as it went)
        for r in reports:
            print(f"{r.video}{f' ({r.backend})' if r.backend else ''}: {len(r.flagged)} of {r.frames} frames with a black region "
                  f"(avatar's own: {100 * r.reference_fraction:.3f} % of the frame)"
                  + (f"; frames {r.flagged[:20]}{' …' if len(r.flagged) > 20 else ''}, worst {r.worst_pixels} px" if r.flagged else ""))
    else:
        flagged = [r for r in reports if not r.ok]
        print(f"sweep: {sum(len(r.flagged) for r in reports)} of {sum(r.frames for r in reports)} frames flagged in "
              f"{len(flagged)} of {len(reports)} animations" + (f" ({', '.join(r.video for r in flagged)})" if flagged else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**asdict(r), "ok": r.ok} for r in reports], f, indent=1)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
