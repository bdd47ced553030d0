"""``splinecam export``: the networks as ONNX graphs (and, with --tensorrt, TensorRT plans).

    splinecam export --checkpoint vox.pth.tar --out engines/vox --precision fp16 [--tensorrt]

Writes keypoints / source_encoder / generator / background ``.onnx`` files and ``manifest.json``
(inputs, outputs, shapes, dtypes, opset, model hash, config, splinecam version). ``--tensorrt``
also builds a plan per graph into the engine cache (keyed by GPU, compute capability, TensorRT
version, precision and model hash); it needs an NVIDIA GPU and TensorRT, and says so in one line
otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``export`` subcommand to the main ``splinecam`` parser."""
    from splinecam.engines.model_options import add_calibration_argument, add_model_arguments

    p = subparsers.add_parser(
        "export", help="export the networks to ONNX (and TensorRT plans with --tensorrt)",
        description="Export keypoint, source-encoder, generator and background graphs as static-shape ONNX "
                    "(opset 17, TensorRT's operator set, TPS solved on the host) with a manifest; "
                    "--tensorrt also builds cached TensorRT plans on this machine's GPU.")
    add_model_arguments(p, backends=False)
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the .onnx files and manifest.json")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="graph precision: fp32; fp16 networks with float32 TPS/Gaussian maths (converted from the "
                        "fp32 graphs); int8: the per-frame generator's convolutions quantized (QDQ, calibrated on "
                        "--calibration or the bundled clip), for ONNX Runtime / OpenVINO on the CPU (default fp32)")
    add_calibration_argument(p)
    p.add_argument("--tensorrt", action="store_true",
                   help="also build TensorRT plans (needs an NVIDIA GPU and TensorRT 10.12+)")
    p.add_argument("--engine-cache", metavar="DIR",
                   help="where TensorRT plans are kept (default $SPLINECAM_CACHE/tensorrt or ~/.cache/splinecam/tensorrt)")
    p.set_defaults(func=run_export)

    from splinecam.engines.remote.cli import add_worker_command

    add_worker_command(subparsers)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _export_int8(loaded, out: Path, calibration: str | None):
    """The fp32 graphs (shipped, cached or exported now) → calibration through their fp32 runner → the
    quantized export in ``out``."""
    from splinecam.engines.backends import BackendOptions, create_backend
    from splinecam.engines.backends.onnxruntime_runner import ensure_export
    from splinecam.engines.export.quantize import Calibration, calibration_feeds, write_int8_export

    cal = Calibration.from_video(calibration)
    fp32_dir, _ = ensure_export(loaded, "fp32", progress=_say)
    fp32 = create_backend(loaded, "onnxruntime", "cpu", "fp32", BackendOptions(onnx_dir=fp32_dir, progress=_say))
    try:
        feeds = calibration_feeds(fp32, cal)
    finally:
        fp32.close()
    return write_int8_export(fp32_dir, out, feeds, cal, progress=_say)


def run_export(args: argparse.Namespace) -> int:
    from splinecam.engines.export.onnx_export import export_onnx
    from splinecam.engines.model_options import load_model_from_args

    if args.tensorrt:  # check first: no point exporting for minutes to fail at the end
        from splinecam.engines.backends.tensorrt_runner import require_tensorrt

        require_tensorrt("export --tensorrt", "run export without --tensorrt for the ONNX graphs alone")
    if args.tensorrt and args.precision == "int8":
        from splinecam.engines.errors import SplinecamError

        raise SplinecamError("--tensorrt builds plans from fp32 or fp16 graphs; int8 graphs are for the CPU engines")
    from splinecam.engines.outputs import check_output

    out = check_output(args.out, "--out", kind="dir", inputs=[getattr(args, "checkpoint", None)])  # before any work
    loaded = load_model_from_args(args)
    _say(f"exporting {loaded.config.name} ({args.precision}) from {loaded.path or 'random weights'} to {out}")
    if args.precision == "int8":
        manifest = _export_int8(loaded, out, args.calibration)
    else:
        manifest = export_onnx(loaded, out, args.precision, progress=_say)
    _say(f"wrote {len(manifest.graphs)} graphs and {out / 'manifest.json'} (model {manifest.model_hash[:12]}…)")
    if args.tensorrt:
        from splinecam.engines.backends.tensorrt_runner import ensure_plans

        ensure_plans(loaded, args.precision, onnx_dir=out, cache_dir=args.engine_cache, progress=_say)
        _say("TensorRT plans ready")
    return 0
