"""Where the dark pixels of an animation come from: carried from the avatar's own dark pixels, or new.

``black_regions.py`` applies the issue's rule (#12): a frame is flagged when its largest near-black region is
larger than the avatar's own by more than 0.1 % of the frame. The rule cannot tell a hole (sampling outside
the source, an empty warp, a refinement that paints black) from the avatar's own dark hair or clothing
growing as the head moves toward the camera or turns: both enlarge the largest dark region. This tool
tells them apart with the model's own motion field. It animates ``--source`` with ``--driving`` as
``splinecam animate`` does (relative keypoints, face crop, the same backend choice, at the model's size
before animate's resize and encoding), and for every
output pixel of the largest dark region looks up where the dense motion samples the source from: a pixel
whose sample lands on a dark source pixel (max channel < ``SOURCE_DARK``) is *carried*; any other is *new*
(a hole in the issue's sense). Per frame it reports the rule's excess and the largest 8-connected region of
new dark pixels.

    python -m splinecam.benchmarks.dark_provenance --source ../shared/data/avatars/lp-s4.jpg \\
        --driving ../shared/data/samples/driving.mp4 [--json out.json]

``--encodings yuv420p,yuv420p-lossless,yuv444p`` also counts the rule's flags after each encoding of the
generated frames, and the avatar's still crop's largest dark region after each: the rule measured on an
encoded video counts what 4:2:0 chroma subsampling does to dark saturated pixels too.

Needs torch (the motion field is the torch model's). Figures are at the model's size (256²), where the
rule's 0.1 % is 66 pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from splinecam.benchmarks.black_regions import (DARK, MARGIN, REFERENCE_SLACK, largest_dark_mask, largest_dark_region,
                                                largest_region)

#: a source pixel counts as dark below this: above the output's DARK, since bilinear sampling and the
#: refinement blend move a dark pixel's value by a few levels
SOURCE_DARK = 24


@dataclass
class FrameProvenance:
    """One frame: the rule's ``excess`` (fraction of the frame over the avatar's own largest dark region),
    the largest dark region's ``dark_px``, how many of its pixels are ``carried`` from dark source pixels,
    and ``largest_new`` (pixels in the largest 8-connected region of new dark pixels)."""

    index: int
    excess: float
    dark_px: int
    carried: int
    largest_new: int


@dataclass
class ProvenanceReport:
    source: str
    driving: str
    size: int
    reference_fraction: float
    frames: list[FrameProvenance] = field(default_factory=list)
    backend: str = ""
    flagged_after_encoding: dict[str, int] = field(default_factory=dict)  # --encodings: name → frames flagged
    #: --encodings: name → the largest dark region (fraction of the frame) of a still video of the avatar's crop
    still_dark_after_encoding: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> list[FrameProvenance]:
        return [f for f in self.frames if f.excess > MARGIN]

    @property
    def worst_new_fraction(self) -> float:
        return max((f.largest_new for f in self.frames), default=0) / self.size ** 2

    @property
    def carried_share(self) -> float | None:
        """Of all frames' largest-dark-region pixels, the share sampled from dark avatar pixels (None: no
        frame has a dark pixel)."""
        dark = sum(f.dark_px for f in self.frames)
        return sum(f.carried for f in self.frames) / dark if dark else None

    def summary(self) -> str:
        return (f"{Path(self.source).name} × {Path(self.driving).name} ({self.backend}): {len(self.flagged)} of "
                f"{len(self.frames)} frames over the rule's margin (before encoding); "
                + ("no dark pixel in any frame; " if self.carried_share is None else
                   f"of every frame's largest dark region {100 * self.carried_share:.2f} % of the pixels sample dark "
                   f"avatar pixels; ")
                + f"the largest new dark region in any frame is {max((f.largest_new for f in self.frames), default=0)} px "
                f"({100 * self.worst_new_fraction:.3f} % of the frame; the rule's margin: {100 * MARGIN:.1f} %)")


def new_dark_mask(output: np.ndarray, source: np.ndarray, deformation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dark, carried) boolean masks (S,S) of an output frame (S,S,3 uint8): dark = its largest dark region;
    carried = those of its pixels whose sampling position ``deformation`` (S,S,2; grid coordinates in [-1,1],
    align_corners, x then y) lands on a source pixel (S,S,3 uint8) darker than SOURCE_DARK."""
    size = output.shape[0]
    dark = largest_dark_mask(output)
    src_dark = (source.max(axis=2) < SOURCE_DARK).astype(np.float32)
    pos = (np.clip(deformation, -1, 1) + 1) / 2 * (size - 1)
    sampled = cv2.remap(src_dark, pos[..., 0].astype(np.float32), pos[..., 1].astype(np.float32),
                        cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return dark, dark & (sampled > 0.5)


#: ``--encodings``: FFmpeg's pixel format and extra libx264 flags per name (CRF 18 as every output)
ENCODINGS = {"yuv420p": ("yuv420p", ()), "yuv420p-lossless": ("yuv420p", ("-qp", "0")), "yuv444p": ("yuv444p", ())}


def encode_decode(frames: list[np.ndarray], encoding: str) -> list[np.ndarray]:
    """Frames (S,S,3 uint8 RGB) through libx264 with ``encoding`` (:data:`ENCODINGS`) and back."""
    import subprocess
    import tempfile

    from splinecam.engines.media import VideoReader, ffmpeg_exe

    pix_fmt, extra = ENCODINGS[encoding]
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory(prefix="splinecam-enc-") as tmp:
        out = Path(tmp) / "encoded.mp4"
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", "25", "-i", "-", "-c:v", "libx264", "-preset", "medium", "-crf", "18", *extra,
               "-pix_fmt", pix_fmt, str(out)]
        subprocess.run(cmd, input=np.stack(frames).tobytes(), check=True)
        return list(VideoReader(out))


def flagged_after(frames: list[np.ndarray], reference_fraction: float, encoding: str | None) -> int:
    """Frames the area rule flags (largest dark region over ``reference_fraction`` + MARGIN) after
    ``encoding`` (None: as generated)."""
    coded = frames if encoding is None else encode_decode(frames, encoding)
    return sum(largest_dark_region(f) / f[..., 0].size - reference_fraction > MARGIN for f in coded)


def trace(source_path: str, driving_path: str, checkpoint: str | None = None, max_frames: int | None = None,
          backend_name: str = "auto", say=print, outputs: list[np.ndarray] | None = None) -> ProvenanceReport:
    """Animate as ``splinecam animate`` does (relative mode, face crop, ``backend_name`` as ``--backend``:
    the output is the backend's, the motion field the torch model's for the same keypoints) and trace each
    frame's dark pixels. ``outputs``: a list that receives the generated frames (S,S,3 uint8)."""
    import torch

    from splinecam.benchmarks.animated_motion import AnimatedMotion

    # as animate's flags --backend NAME --precision auto: auto is the measured choice on this avatar crop
    anim = AnimatedMotion.open(source_path, driving_path, checkpoint, max_frames, backend_name, tool="dark_provenance")
    size, src_u8 = anim.size, anim.source
    ref = largest_dark_region(src_u8, DARK + REFERENCE_SLACK) / size ** 2
    report = ProvenanceReport(str(source_path), str(driving_path), size, ref, backend=anim.backend.describe())
    for i, (kp, motion) in enumerate(anim):
        out = anim.backend.generate(anim.state, kp)
        if outputs is not None:
            outputs.append(out)
        deformation = torch.nn.functional.interpolate(motion.deformation.permute(0, 3, 1, 2), size=(size, size),
                                                      mode="bilinear", align_corners=True)
        dark, carried = new_dark_mask(out, src_u8, deformation[0].permute(1, 2, 0).numpy())
        largest_new = int(largest_region(dark & ~carried).sum())
        report.frames.append(FrameProvenance(i, round(float(dark.sum() / size ** 2 - ref), 5), int(dark.sum()),
                                             int(carried.sum()), largest_new))
    say(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splinecam.benchmarks.dark_provenance",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, action="append", help="avatar image (repeatable)")
    ap.add_argument("--driving", required=True, action="append", help="driving clip (repeatable)")
    ap.add_argument("--checkpoint", help="weights (default: the bundled ones)")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--backend", default="auto", help="the backend whose output is traced, as animate's --backend")
    ap.add_argument("--encodings", metavar="LIST",
                    help=f"also count the rule's flags after encoding the frames, comma-separated from {', '.join(ENCODINGS)}")
    ap.add_argument("--json", help="write the per-frame reports here")
    args = ap.parse_args(argv)
    for p in [*args.source, *args.driving]:
        if not Path(p).is_file():
            print(f"dark_provenance: error: {p} is not a file", file=sys.stderr)
            return 2
    from splinecam.benchmarks.animated_motion import animation_inputs, animation_uint8
    from splinecam.engines.errors import SplinecamError

    encodings = [e for e in (args.encodings or "").split(",") if e]
    unknown = [e for e in encodings if e not in ENCODINGS]
    if unknown:
        print(f"dark_provenance: error: --encodings {','.join(unknown)}: choose from {', '.join(ENCODINGS)}",
              file=sys.stderr)
        return 2
    reports = []
    try:
        for d in args.driving:
            for s in args.source:
                outputs: list[np.ndarray] | None = [] if encodings else None
                report = trace(s, d, args.checkpoint, args.max_frames, args.backend, outputs=outputs)
                if encodings:
                    still = [animation_uint8(animation_inputs(s, d, report.size).source)] * 3  # the avatar's crop, not moving
                    for e in encodings:
                        report.flagged_after_encoding[e] = flagged_after(outputs, report.reference_fraction, e)
                        report.still_dark_after_encoding[e] = largest_dark_region(encode_decode(still, e)[-1]) / report.size ** 2
                    print(f"  flagged by the rule: {len(report.flagged)} unencoded, "
                          + ", ".join(f"{n} as {e}" for e, n in report.flagged_after_encoding.items())
                          + f"; the still crop's largest dark region {100 * largest_dark_region(still[0]) / report.size ** 2:.1f} %"
                          + "".join(f", {100 * v:.1f} % as {e}" for e, v in report.still_dark_after_encoding.items()))
                reports.append(report)
    except SplinecamError as err:  # no face in a source, an unreadable clip or checkpoint: one line
        print(f"dark_provenance: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps([{**asdict(r), "carried_share": r.carried_share,
                                                 "worst_new_fraction": r.worst_new_fraction, "summary": r.summary()}
                                                for r in reports], separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
