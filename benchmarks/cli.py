"""The benchmarks package's subcommand: ``splinecam bench``."""

from __future__ import annotations

import argparse
import shlex
import sys

from splinecam.engines.errors import SplinecamError
from splinecam.engines.validate import SEED, THREADS, non_negative_int, number_arg, positive_int

DEFAULT_FRAMES = 30


def _list(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of {', '.join(allowed)}")
        return items
    return parse


def _without_token(argv: list[str]) -> list[str]:
    """The command line as kept in the JSON: a --token's value is not (it is a secret)."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append("TOKEN")
            hide = False
        elif a == "--token":
            out.append(a)
            hide = True
        elif a.startswith("--token="):
            out.append("--token=TOKEN")
        else:
            out.append(a)
    return out


def register(subparsers) -> None:
    from splinecam.engines.backends import BACKENDS, DEVICE_CHOICES, PRECISIONS
    from splinecam.engines.model_options import add_calibration_argument, add_compile_argument, add_model_arguments

    p = subparsers.add_parser(
        "bench", help="frames per second per backend, precision and stage, against the official demo",
        description="Measure every backend and precision this machine can run (others are listed as unavailable, "
                    "with the reason) on the same driving frames, interleaved frame by frame, against the official "
                    "demo's per-frame work (torch fp32 eager, uncached) measured in the same run. Prints a table; "
                    "--json keeps the run (device, model, per-row ms/frame, fps, stages, PSNR vs fp32, speed-up). "
                    "--config alone benchmarks random weights with perturbed norm layers; with neither --config "
                    "nor --checkpoint, the bundled weights. --pipeline CLIP measures the whole live pipeline "
                    "instead, with the clip as the camera.")
    add_model_arguments(p, backends=False)
    g = p.add_argument_group("what to run")
    g.add_argument("--backends", type=_list(BACKENDS), metavar="LIST",
                   help=f"comma-separated, from {','.join(BACKENDS)} (default: all)")
    g.add_argument("--precisions", type=_list(PRECISIONS + ("auto",)), metavar="LIST",
                   help=f"comma-separated, from {','.join(PRECISIONS)} (default: every one a backend has)")
    g.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="device of torch / onnxruntime rows and of the baseline (default: cuda when available)")
    g.add_argument("--frames", type=positive_int(), metavar="N",
                   help=f"timed frames per row (default {DEFAULT_FRAMES}); with --pipeline: stop after N output "
                        f"frames (default: the whole clip)")
    g.add_argument("--warmup", type=non_negative_int(), default=3, metavar="N", help="untimed frames per row first (default 3)")
    g.add_argument("--threads", type=number_arg(THREADS), metavar="N", help="torch / onnxruntime threads (default: all cores)")
    g.add_argument("--driving", metavar="VIDEO",
                   help="driving frames from this video, resized to the model size (default: the bundled webcam "
                        "clip, or synthetic frames)")
    g.add_argument("--source", metavar="IMG", help="the avatar (default: the bundled one, or the first frame)")
    g.add_argument("--pipeline", metavar="CLIP",
                   help="run the whole live pipeline (tracking, networks, composition) on CLIP as the camera and "
                        "report its fps and end-to-end latency percentiles")
    g.add_argument("--pipeline-unpaced", action="store_true",
                   help="with --pipeline: read every frame as fast as processed (default: paced like a camera, "
                        "frames dropped when processing is slower)")
    g.add_argument("--pipeline-no-record", action="store_true",
                   help="with --pipeline: leave the recorder off (default on, into a throw-away file, as `demo` runs)")
    g.add_argument("--output-size", default="1280x720", metavar="WxH", help="with --pipeline: output size")
    g.add_argument("--remote", metavar="HOST:PORT",
                   help="with --pipeline: run the networks on a `splinecam worker` (the model is the worker's) and "
                        "report the round trip split into network, worker and inference time, and bytes per frame")
    g.add_argument("--token", metavar="TOKEN", help="with --remote: the worker's token (default $SPLINECAM_TOKEN)")
    g.add_argument("--remote-codec", choices=("jpeg", "png", "raw"), default="jpeg",
                   help="with --remote: how images cross the wire (default jpeg)")
    g.add_argument("--remote-quality", type=number_arg(int, 1, 100), default=90, metavar="Q", help="with --remote: JPEG quality")
    g.add_argument("--ort-sweep", action="store_true",
                   help="measure ONNX Runtime's CPU session settings instead (graph optimisation level, NCHWc layout, "
                        "inter/intra-op threads, spinning, memory pattern, arena), one change at a time against the "
                        "defaults, at --precisions (default fp32)")
    g.add_argument("--seed", type=number_arg(SEED), default=0, help="seed of the random weights with --config alone")
    add_compile_argument(g)
    add_calibration_argument(g)
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    o.add_argument("--plot", metavar="OUT.png", help="write a PNG chart of the results")
    o.add_argument("--note", default="", help="measurement conditions to keep with the JSON "
                                              "(e.g. 'background training paused')")
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from splinecam.benchmarks.bench import BenchOptions, run_bench
    from splinecam.benchmarks.report import format_table

    for name in ("frames", "warmup", "threads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise SplinecamError(f"--{name} {value}: must be {'≥ 0' if name == 'warmup' else 'at least 1'}")
    if args.precisions and "auto" in args.precisions and not args.pipeline:
        raise SplinecamError("--precisions auto is for --pipeline; name the precisions to measure")
    if args.ort_sweep:
        return _ort_sweep(args)
    remote, token = None, ""
    if args.remote:
        import os

        from splinecam.engines.remote.protocol import parse_address

        if not args.pipeline:
            raise SplinecamError("--remote measures the live pipeline: give --pipeline CLIP too")
        try:
            remote = parse_address(args.remote, flag="--remote")
        except ValueError as err:
            raise SplinecamError(str(err)) from None
        token = args.token or os.environ.get("SPLINECAM_TOKEN", "")
        if not token:
            raise SplinecamError("--remote needs the worker's token: --token TOKEN or $SPLINECAM_TOKEN")
        if not 1 <= args.remote_quality <= 100:
            raise SplinecamError(f"--remote-quality {args.remote_quality}: must be 1-100")
    size = (1280, 720)
    if args.pipeline:
        from splinecam.live.compose import parse_size

        size = parse_size(args.output_size)
    opts = BenchOptions(
        checkpoint=args.checkpoint, config=args.config, backends=args.backends, precisions=args.precisions,
        device=args.device, frames=args.frames or DEFAULT_FRAMES, warmup=args.warmup, threads=args.threads,
        driving=args.driving, source=args.source, seed=args.seed, note=args.note,
        command="splinecam " + " ".join(shlex.quote(a) for a in _without_token(sys.argv[1:]))
        if sys.argv[1:2] == ["bench"] else "splinecam bench",
        pipeline=args.pipeline, pipeline_frames=args.frames, pipeline_unpaced=args.pipeline_unpaced,
        pipeline_no_record=args.pipeline_no_record,
        output_size=size, compile=not args.no_compile, remote=remote, token=token, remote_codec=args.remote_codec,
        remote_quality=args.remote_quality, calibration=args.calibration)
    result = run_bench(opts)
    data = result.to_dict()
    print(format_table(data))
    if args.json:
        print(f"wrote {result.write(args.json)}")
    if args.plot:
        from splinecam.benchmarks.plot import plot_result

        print(f"wrote {plot_result(data, args.plot)}")
    return 0


def _ort_sweep(args: argparse.Namespace) -> int:
    import os
    import time

    import torch

    from splinecam.benchmarks.bench import BenchOptions, _conditions, load_bench_model
    from splinecam.benchmarks.device_info import collect_device_info
    from splinecam.benchmarks.inputs import load_inputs
    from splinecam.benchmarks.ort_sweep import format_sweep, run_ort_sweep, write_sweep

    precisions = [p for p in (args.precisions or ["fp32"]) if p in ("fp32", "fp16", "int8")]
    if not precisions:
        raise SplinecamError("--ort-sweep measures ONNX Runtime at fp32, fp16 or int8")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    opts = BenchOptions(checkpoint=args.checkpoint, config=args.config, seed=args.seed)
    loaded, source = load_bench_model(opts)
    inputs = load_inputs(loaded.config.image_size, args.frames or DEFAULT_FRAMES, args.driving, args.source)
    device = collect_device_info(threads)
    print(f"splinecam bench --ort-sweep: {device.label}; {loaded.config.name} ({source}); {threads} threads; "
          f"{len(inputs.frames)} frames", flush=True)
    before = _conditions()
    rows = run_ort_sweep(loaded, inputs, threads, precisions, warmup=args.warmup, calibration=args.calibration)
    print(format_sweep(rows))
    if args.json:
        header = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "note": args.note, "device": device.to_dict(),
                  "model": {"config": loaded.config.name, "source": source, "model_hash": loaded.model_hash},
                  "inputs": inputs.to_dict(), "conditions": {"start": before, "end": _conditions()}}
        print(f"wrote {write_sweep(args.json, rows, header)}")
    return 0
