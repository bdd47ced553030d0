"""The live package's subcommands: ``animate`` (offline), and the live ones."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from splinecam.engines.model_options import (add_model_arguments, add_relative_jacobian_argument, backend_from_args,
                                             load_model_from_args)
from splinecam.engines.validate import number_arg, positive_int
from splinecam.live.normalise import MODES

OUTPUT_SIDE = (16, 4096)  # --output-size: pixels per side of the animate output

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "animate", help="animate a portrait with a driving video, offline (like the official demo.py)",
        description="Animate SOURCE with the motion of DRIVING and write an H.264 mp4 at the driving video's "
                    "frame rate, with its audio. --crop face (default) face-crops both and writes the animated "
                    "crop at --output-size; --crop none resizes whole frames to the model size exactly as the "
                    "official demo does and writes its 256x256 prediction.")
    p.add_argument("--source", required=True, metavar="IMG", help="the portrait to animate")
    p.add_argument("--driving", required=True, metavar="VIDEO", help="the video whose motion drives it")
    p.add_argument("--out", required=True, metavar="OUT.mp4", help="where to write the result")
    p.add_argument("--mode", default="relative", choices=MODES,
                   help="keypoint normalisation: relative (default; motion relative to the reference frame, "
                        "scaled to the source), avd (needs a checkpoint with an AVD network), standard (raw)")
    p.add_argument("--find-best-frame", action="store_true",
                   help="use as reference the driving frame whose face landmarks best match the source")
    p.add_argument("--crop", default="face", choices=("face", "none"), help="face-crop inputs (default) or not")
    p.add_argument("--max-frames", type=positive_int(), metavar="N", help="animate at most the first N driving frames")
    p.add_argument("--output-size", type=number_arg(int, *OUTPUT_SIDE), default=512, metavar="PX",
                   help=f"side of the output video with --crop face, {OUTPUT_SIDE[0]} to {OUTPUT_SIDE[1]} "
                        f"(default 512)")
    add_relative_jacobian_argument(p)
    add_model_arguments(p)
    p.set_defaults(func=run_animate)

    from splinecam.live.commands import add_live_commands

    add_live_commands(subparsers)  # live, demo, cameras


def run_animate(args: argparse.Namespace) -> int:
    from splinecam.engines.errors import SplinecamError
    from splinecam.engines.media import ffmpeg_exe
    from splinecam.engines.outputs import check_output
    from splinecam.engines.family import avd_refusal
    from splinecam.live.animate import AnimateOptions, animate, prepare_inputs

    # the output first: a folder, an unwritable place, an input or an unknown container fails before any work
    args.out = check_output(args.out, "--out", kind="video", inputs=[args.source, args.driving])
    ffmpeg_exe()
    loaded = load_model_from_args(args)
    if args.mode == "avd" and not loaded.has_avd:
        raise SplinecamError(avd_refusal(loaded, str(loaded.path)))
    opts = AnimateOptions(Path(args.source), Path(args.driving), Path(args.out), args.mode, args.find_best_frame,
                          args.crop, args.max_frames, args.output_size, args.relative_jacobian)
    inputs = prepare_inputs(opts, loaded.config.image_size)  # user errors before any compiling
    sample = inputs.source if inputs.source.dtype == np.uint8 else None
    backend = backend_from_args(args, loaded, sample)
    result = animate(backend, opts, inputs)
    print(f"wrote {result.out}: {result.frames} frames of {result.size[0]}x{result.size[1]} at {result.fps:g} fps"
          f"{' with audio' if result.audio else ''} (reference frame {result.reference_frame}, "
          f"backend {backend.describe()})")
    return 0
