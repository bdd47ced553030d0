"""The live subcommands: ``live`` (webcam → avatar → virtual camera), ``demo``, ``cameras``.

``add_live_commands(subparsers)`` is called by live/cli.py's ``register``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from splinecam.engines.errors import SplinecamError
from splinecam.engines.model_options import (add_model_arguments, add_relative_jacobian_argument, avatar_sample,
                                             backend_from_args, load_model_from_args)
from splinecam.engines.validate import FPS, number_arg, positive_int
from splinecam.live.compose import COMPOSE_MODES, parse_size
from splinecam.live.normalise import MODES
from splinecam.live.smoothing import BETA, CUTOFF, DEFAULT_BETA, DEFAULT_MIN_CUTOFF

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_AVATAR = ASSETS / "mona.jpg"
DEMO_CLIP = ASSETS / "webcam.mp4"
DEMO_OUT = "splinecam-demo.mp4"


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_output_arguments(p: argparse.ArgumentParser, record: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--output-size", type=_size, default=(1280, 720), metavar="WxH",
                   help="size of the frames sent and recorded (default 1280x720)")
    g.add_argument("--fps", type=number_arg(FPS), metavar="N",
                   help="frames per second sent to the virtual camera / recorded (default: the camera's or file's)")
    g.add_argument("--compose", choices=COMPOSE_MODES, default="pad",
                   help="pad: the 256x256 result scaled to the output height over a background (default); "
                        "paste: pasted back into the avatar's full picture")
    g.add_argument("--background", default="blur", metavar="blur|COLOUR",
                   help="pad background: the avatar blurred (default), black, white, green, grey or #RRGGBB")
    g.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                   help="flip the output left-right (default: off, or as last time)")
    if record:
        g.add_argument("--record", type=Path, metavar="OUT.mp4", help="also record the output (H.264 mp4)")
    g.add_argument("--max-frames", type=positive_int(), metavar="N", help="stop after N output frames")
    g.add_argument("--metrics", type=Path, metavar="OUT.json",
                   help="write frame counts, FPS, latency p50/p95/max and per-stage ms as JSON")


def _add_driving_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("driving")
    g.add_argument("--mode", choices=MODES, default=None,
                   help="keypoint normalisation: relative (default), avd (checkpoints with an AVD network), standard")
    g.add_argument("--crop", choices=("auto", "none"), default="auto",
                   help="face-crop the avatar (auto, default) or take it whole (none: already a face crop)")
    g.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                   help="One-Euro smoothing of the driving keypoints (default on)")
    g.add_argument("--smooth-min-cutoff", type=number_arg(CUTOFF), metavar="HZ",
                   help=f"smoothing cut-off when still: lower = steadier (default {DEFAULT_MIN_CUTOFF:g})")
    g.add_argument("--smooth-beta", type=number_arg(BETA), metavar="B",
                   help=f"how fast the cut-off rises with speed: higher = less lag (default {DEFAULT_BETA:g})")
    add_relative_jacobian_argument(g)


SERVE_TOKEN_ENV = "SPLINECAM_SERVE_TOKEN"
REMOTE_TOKEN_ENV = "SPLINECAM_TOKEN"


def _add_stream_and_remote_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stream without a driver (live/README.md, 'Browser stream')")
    g.add_argument("--serve", metavar="[HOST:]PORT",
                   help="also serve the output over HTTP: http://HOST:PORT/ (the stream full-window, for OBS's "
                        "Browser Source), /stream.mjpg (MJPEG) and /control (the hotkeys' actions); host "
                        "127.0.0.1 unless given (0.0.0.0:PORT: every interface, other machines need the token)")
    g.add_argument("--serve-token", metavar="TOKEN",
                   help=f"the token requests from other machines must carry (default ${SERVE_TOKEN_ENV}, else one is "
                        f"made and printed when serving beyond this machine)")
    g = p.add_argument_group("networks on another machine (`splinecam worker` there)")
    g.add_argument("--remote", metavar="HOST:PORT",
                   help="run the networks on a `splinecam worker` at HOST:PORT; capture, tracking, composition, "
                        "preview and sinks stay here (no --checkpoint / --backend: those are the worker's)")
    g.add_argument("--token", metavar="TOKEN", help=f"the worker's token (default ${REMOTE_TOKEN_ENV})")
    g.add_argument("--remote-codec", choices=("jpeg", "png", "raw"), default="jpeg",
                   help="how images cross the wire: jpeg (default), png or raw (exact, ~6x the bytes)")
    g.add_argument("--remote-quality", type=number_arg(int, 1, 100), default=90, metavar="Q",
                   help="JPEG quality of the images on the wire, 1-100 (default 90)")


def add_live_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help="drive an avatar from your webcam, live, into a virtual camera",
        description="Webcam → face tracking → TPSMM → a virtual camera (Zoom, Meet, Teams, OBS), a preview window "
                    "with overlays and hotkeys (H for help), and optionally a recording. The camera image never "
                    "reaches the virtual camera, except while you toggle pass-through (P). The last avatar, "
                    "camera, calibration and smoothing are remembered.")
    p.add_argument("--avatar", metavar="IMG|DIR",
                   help="a portrait, or a folder of them (switch with 1-9, A/D); default: the last one")
    g = p.add_argument_group("camera")
    g.add_argument("--camera", metavar="INDEX|NAME|PATH|URL",
                   help="camera index, name (see `splinecam cameras`), video file or stream URL (default: last, or 0)")
    g.add_argument("--camera-size", type=_size, default=(1280, 720), metavar="WxH",
                   help="capture size asked of the camera (default 1280x720)")
    g.add_argument("--camera-fps", type=number_arg(FPS), default=30.0, metavar="N",
                   help="capture rate asked of the camera (default 30)")
    g.add_argument("--realtime", action="store_true",
                   help="play a video file at its own fps, newest frame wins, like a camera "
                        "(default: every frame, as fast as they are processed)")
    g.add_argument("--loop", action="store_true", help="repeat a video file")
    _add_driving_arguments(p)
    _add_output_arguments(p)
    g = p.add_argument_group("sinks")
    g.add_argument("--virtual-camera", action=argparse.BooleanOptionalAction, default=True,
                   help="send to a virtual camera (default on; without a device one line says how to get one)")
    g.add_argument("--virtual-camera-device", metavar="DEV", help="e.g. /dev/video10 (default: the first loopback)")
    g.add_argument("--preview", action=argparse.BooleanOptionalAction, default=True,
                   help="show the preview window with overlays and hotkeys (default on when there is a display)")
    _add_stream_and_remote_arguments(p)
    p.add_argument("--remember", action=argparse.BooleanOptionalAction, default=True,
                   help="use and update the remembered settings (~/.config/splinecam/state.json)")
    add_model_arguments(p)
    p.set_defaults(func=run_live)

    d = subparsers.add_parser(
        "demo", help="the whole live loop on a bundled avatar and clip: writes ./splinecam-demo.mp4",
        description="Runs the live pipeline with the bundled avatar (the Mona Lisa) driven by a bundled webcam "
                    "clip, on the bundled weights, and writes splinecam-demo.mp4 in the current folder; prints "
                    "FPS, latency and per-stage times.")
    d.add_argument("--out", type=Path, default=Path(DEMO_OUT), metavar="OUT.mp4",
                   help=f"where to write the result (default ./{DEMO_OUT})")
    d.add_argument("--avatar", metavar="IMG|DIR", help="another avatar (default: the bundled one)")
    d.add_argument("--realtime", action="store_true", help="play the clip in real time (drops frames if slow)")
    d.add_argument("--preview", action=argparse.BooleanOptionalAction, default=False,
                   help="also show the preview window (default off)")
    d.add_argument("--virtual-camera", action=argparse.BooleanOptionalAction, default=False,
                   help="also send to the virtual camera (default off)")
    _add_driving_arguments(d)
    _add_output_arguments(d, record=False)
    add_model_arguments(d)
    d.set_defaults(func=run_demo, device="cpu")

    c = subparsers.add_parser("cameras", help="list the cameras --camera can name",
                              description="Lists cameras by index and name (Linux: /dev/video* and their sysfs names).")
    c.set_defaults(func=run_cameras)


# ----------------------------------------------------------------------------- running


def _quiet_libraries() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="splinecam: %(message)s")


def options_from_args(args: argparse.Namespace, state=None):
    """LiveOptions from the parsed flags, remembered values filling what was not given."""
    import numpy as np

    from splinecam.live.pipeline import LiveOptions
    from splinecam.live.smoothing import SmoothingSettings
    from splinecam.live.state import LiveState

    st = state or LiveState()
    avatar = args.avatar or st.avatar
    if not avatar:
        raise SplinecamError("--avatar IMG|DIR is needed (nothing remembered from a previous run)")
    camera = getattr(args, "camera", None) or st.camera or "0"
    if Path(str(camera)).expanduser().is_file():
        camera = str(Path(camera).expanduser().resolve())
    smoothing = SmoothingSettings(
        enabled=args.smooth if args.smooth is not None else (st.smoothing if st.smoothing is not None else True),
        min_cutoff=args.smooth_min_cutoff or st.smooth_min_cutoff or DEFAULT_MIN_CUTOFF,
        beta=args.smooth_beta if args.smooth_beta is not None else (
            st.smooth_beta if st.smooth_beta is not None else DEFAULT_BETA))
    serve = None
    if getattr(args, "serve", None):
        from splinecam.engines.remote.protocol import parse_address

        try:
            serve = parse_address(args.serve, flag="--serve")
        except ValueError as err:
            raise SplinecamError(str(err)) from None
    same_avatar = args.avatar is None or (st.avatar and Path(args.avatar).expanduser().resolve() == Path(st.avatar))
    calibration = np.asarray(st.calibration, np.float32) if st.calibration else None
    return LiveOptions(
        avatar=str(avatar), camera=str(camera),
        camera_size=getattr(args, "camera_size", None), camera_fps=getattr(args, "camera_fps", None),
        output_size=args.output_size, fps=args.fps, mode=args.mode or st.mode or "relative",
        compose=args.compose, background=args.background,
        mirror=args.mirror if args.mirror is not None else bool(st.mirror),
        crop=args.crop, avatar_start=st.avatar_name if same_avatar else None,
        virtual_camera=args.virtual_camera, virtual_camera_device=getattr(args, "virtual_camera_device", None),
        preview=args.preview, record=args.record, max_frames=args.max_frames, metrics=args.metrics,
        realtime=args.realtime, loop=getattr(args, "loop", False), smoothing=smoothing, calibration=calibration,
        serve=serve, serve_token=getattr(args, "serve_token", None) or os.environ.get(SERVE_TOKEN_ENV) or None,
        relative_jacobian=getattr(args, "relative_jacobian", True))


def _remote_backend(args: argparse.Namespace, say):
    """The RemoteBackend of --remote HOST:PORT --token T (one-line errors for what cannot work)."""
    from splinecam.engines.remote.client import RemoteBackend
    from splinecam.engines.remote.protocol import parse_address

    given = [f for f, v in (("--checkpoint", args.checkpoint), ("--config", args.config),
                            ("--backend", args.backend != "auto"), ("--device", args.device != "auto"),
                            ("--precision", args.precision != "auto"), ("--no-compile", args.no_compile),
                            ("--retune", getattr(args, "retune", False))) if v]
    if given:
        raise SplinecamError(f"{', '.join(given)} with --remote: the model is the worker's, give "
                             f"{'it' if len(given) == 1 else 'them'} to `splinecam worker`")
    try:
        host, port = parse_address(args.remote, flag="--remote")
    except ValueError as err:
        raise SplinecamError(str(err)) from None
    if ":" not in args.remote or port == 0:
        raise SplinecamError(f"--remote {args.remote}: give HOST:PORT, e.g. 192.168.1.20:7860")
    if not 1 <= args.remote_quality <= 100:
        raise SplinecamError(f"--remote-quality {args.remote_quality}: must be 1-100")
    token = args.token or os.environ.get(REMOTE_TOKEN_ENV, "")
    if not token:
        raise SplinecamError(f"--remote needs the worker's token: --token TOKEN or ${REMOTE_TOKEN_ENV} "
                             f"(`splinecam worker` printed it when it started)")
    backend = RemoteBackend(host, port, token, args.remote_codec, args.remote_quality, say=say)
    say(f"splinecam: networks on the worker at {backend.address} ({backend.graphs.worker_describe}, "
        f"model {backend.config.name}); keypoints on the {backend.keypoints_where}")
    return backend


def _serve_token(options, say):
    """--serve beyond this machine: said on start-up, and it needs a token (made here when none was given)."""
    from splinecam.engines.remote.protocol import is_loopback

    host, port = options.serve
    if is_loopback(host):
        return options
    from dataclasses import replace
    import secrets

    token = options.serve_token
    made = not token
    if made:
        token = secrets.token_urlsafe(12)
    say(f"splinecam: --serve {host}:{port} listens beyond this machine: other machines need the token "
        f"(…/?token=TOKEN){'' if not made else '; made one for this run: ' + token}")
    return replace(options, serve_token=token)


def check_outputs(options, record_flag: str = "--record") -> None:
    """The recording and the metrics file, checked before anything is loaded (engines/outputs.py):
    not a folder, writable, a container splinecam writes, and none of the inputs."""
    from splinecam.engines.media import ffmpeg_exe
    from splinecam.engines.outputs import check_output

    camera = options.camera if Path(str(options.camera)).exists() else None
    if options.record is not None:
        options.record = check_output(options.record, record_flag, kind="video",
                                      inputs=[camera, options.avatar])
        ffmpeg_exe()  # a broken IMAGEIO_FFMPEG_EXE fails now, not after the model is built
    if options.metrics is not None:
        options.metrics = check_output(options.metrics, "--metrics", inputs=[camera, options.avatar, options.record])


def _run(options, args, say=print, on_finish=None, record_flag: str = "--record") -> tuple[object, object]:
    """Run the live pipeline for ``options``; ``on_finish(pipeline)`` runs once the pipeline has
    stopped, whatever stopped it (live: remember the settings). A signal that stopped the run is
    raised again (as :class:`~splinecam.engines.interrupts.Interrupted`) after everything was
    written and said."""
    from splinecam.live.metrics import format_summary
    from splinecam.live.pipeline import LivePipeline

    _quiet_libraries()
    try:
        from splinecam.live.compose import ComposeOptions

        ComposeOptions(options.output_size, options.compose, options.background)
    except ValueError as err:
        raise SplinecamError(str(err)) from None
    check_outputs(options, record_flag)
    from splinecam.live.capture import open_source

    source = open_source(options.camera, options.camera_size, options.camera_fps)  # a wrong camera fails first
    remote = None
    if options.serve is not None:
        options = _serve_token(options, say)
    try:
        if getattr(args, "remote", None):
            backend = remote = _remote_backend(args, say)
        else:
            loaded = load_model_from_args(args)
            backend = backend_from_args(args, loaded, avatar_sample(options.avatar, loaded.config.image_size), say=say)
        if options.mode == "avd" and not backend.has_avd:
            from splinecam.engines.family import avd_refusal

            raise SplinecamError(avd_refusal(loaded))
        pipeline = LivePipeline.build(options, backend, source=source, say=say)
    except BaseException:
        source.close()
        if remote is not None:
            remote.close()
        raise
    hint = "press H in the preview for the hotkeys, " if pipeline.preview is not None else ""
    say(f"splinecam: {backend.describe()}, output {options.output_size[0]}x{options.output_size[1]} "
        f"at {pipeline.fps:g} fps, mode {options.mode}; {hint}Ctrl-C to stop")
    if pipeline.stream is not None:
        url = pipeline.stream.url
        say(f"splinecam: stream on {url} (OBS: add a Browser Source with this URL, {options.output_size[0]}x"
            f"{options.output_size[1]}), MJPEG at {url}stream.mjpg, controls at {url}control")
    try:
        summary = pipeline.run()
    finally:
        if remote is not None:
            remote.close()
        if on_finish is not None:
            on_finish(pipeline)
    say(format_summary(summary))
    if options.record is not None and pipeline.recorded is not None:
        say(f"splinecam: recorded {options.record} ({pipeline.recorded} frames)")
    if options.metrics is not None:
        say(f"splinecam: metrics in {options.metrics}")
    if pipeline.interrupt is not None:
        raise pipeline.interrupt
    refused = summary.frames.get("bad_output", 0)
    if refused and not pipeline.processor.generated_ok:
        raise SplinecamError(f"every generated frame ({refused}) was refused by the output guard (non-finite or "
                             f"black): the avatar was held throughout; see the first error above for the fix")
    return summary, pipeline


def run_live(args: argparse.Namespace) -> int:
    from splinecam.live.state import LiveState, load_state, save_state

    state = load_state() if args.remember else None
    options = options_from_args(args, state)

    def remember(pipeline) -> None:
        if args.remember:
            save_state(pipeline.state(state or LiveState()))

    _run(options, args, on_finish=remember)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    for f in (DEMO_AVATAR, DEMO_CLIP):
        if not f.is_file():
            raise SplinecamError(f"the demo's bundled {f.name} is missing from this install ({f}): reinstall splinecam")
    args.camera = str(DEMO_CLIP)
    args.avatar = args.avatar or str(DEMO_AVATAR)
    args.record = args.out
    args.camera_size = None
    args.camera_fps = None
    args.loop = False
    options = options_from_args(args, None)
    _run(options, args, record_flag="--out")
    return 0


def run_cameras(args: argparse.Namespace) -> int:
    from splinecam.live.capture import list_cameras

    cams = list_cameras()
    if not cams:
        print("no camera found" + (" (/dev/video* is empty)" if sys.platform.startswith("linux") else "")
              + ": plug one in, or pass a video file or stream URL to --camera")
        return 0
    for cam in cams:
        print(f"{cam.index}\t{cam.name}\t{cam.path}")
    return 0
