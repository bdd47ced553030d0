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


def register(subparsers) -> None:
    """Add the ``export`` subcommand to the main ``splinecam`` parser."""
    from splinecam.engines.model_options import add_model_arguments

    p = subparsers.add_parser(
        "export", help="export the networks to ONNX (and TensorRT plans with --tensorrt)",
        description="Export keypoint, source-encoder, generator and background graphs as static-shape ONNX "
                    "(opset 17, TensorRT's operator set, TPS solved on the host) with a manifest; "
                    "--tensorrt also builds cached TensorRT plans on this machine's GPU.")
    add_model_arguments(p, backends=False)
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the .onnx files and manifest.json")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"),
                   help="graph precision: fp32, or fp16 networks with float32 TPS/Gaussian maths (default fp32)")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build TensorRT plans (needs an NVIDIA GPU and TensorRT 10.12+)")
    p.add_argument("--engine-cache", metavar="DIR",
                   help="where TensorRT plans are kept (default $SPLINECAM_CACHE/tensorrt or ~/.cache/splinecam/tensorrt)")
    p.set_defaults(func=run_export)

    from splinecam.engines.remote.cli import add_worker_command

    add_worker_command(subparsers)


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_export(args: argparse.Namespace) -> int:
    from splinecam.engines.export.onnx_export import export_onnx
    from splinecam.engines.model_options import load_model_from_args

    if args.tensorrt:  # check first: no point exporting for minutes to fail at the end
        from splinecam.engines.backends.tensorrt_runner import require_tensorrt

        require_tensorrt("export --tensorrt", "run export without --tensorrt for the ONNX graphs alone")
    from splinecam.engines.outputs import check_output

    out = check_output(args.out, "--out", kind="dir", inputs=[getattr(args, "checkpoint", None)])  # before any work
    loaded = load_model_from_args(args)
    _say(f"exporting {loaded.config.name} ({args.precision}) from {loaded.path or 'random weights'} to {out}")
    manifest = export_onnx(loaded, out, args.precision, progress=_say)
    _say(f"wrote {len(manifest.graphs)} graphs and {out / 'manifest.json'} (model {manifest.model_hash[:12]}…)")
    if args.tensorrt:
        from splinecam.engines.backends.tensorrt_runner import ensure_plans

        ensure_plans(loaded, args.precision, onnx_dir=out, cache_dir=args.engine_cache, progress=_say)
        _say("TensorRT plans ready")
    return 0
