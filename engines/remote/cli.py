"""``splinecam worker``: run the networks for ``splinecam live --remote`` on another machine."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from splinecam.engines.errors import SplinecamError
from splinecam.engines.interrupts import as_interrupted
from splinecam.engines.validate import number_arg

DEFAULT_PORT = 7860
TOKEN_ENV = "SPLINECAM_TOKEN"


def add_worker_command(subparsers) -> None:
    from splinecam.engines.model_options import add_model_arguments

    p = subparsers.add_parser(
        "worker", help="run the networks for `splinecam live --remote` (e.g. on a GPU box)",
        description="Loads the model and serves its networks over TCP to `splinecam live --remote HOST:PORT "
                    "--token TOKEN`, which keeps the camera, tracking, composition, preview and sinks on its own "
                    "machine and sends the worker the avatar once and keypoints (or the face crop) per frame. "
                    "Clients must hold the token; without --token (or $SPLINECAM_TOKEN) one is made and printed "
                    "once. Listens on 127.0.0.1 unless a host is given. Traffic is not encrypted: across an "
                    "untrusted network use an SSH tunnel or a VPN.")
    p.add_argument("--listen", default=str(DEFAULT_PORT), metavar="[HOST:]PORT",
                   help=f"where to listen (default 127.0.0.1:{DEFAULT_PORT}; 0.0.0.0:PORT for every interface, "
                        f"port 0 for any free one)")
    p.add_argument("--token", metavar="TOKEN",
                   help=f"the token clients must hold (default ${TOKEN_ENV}, else a new one, printed once)")
    p.add_argument("--max-clients", type=number_arg(int, 1, 1024), default=8, metavar="N",
                   help="clients served at once (default 8)")
    add_model_arguments(p)
    p.set_defaults(func=run_worker)


def _warm_up(backend) -> None:
    """One prepare + keypoints + generate on a synthetic avatar, so that compiling / engine building happens
    before the first client waits for it."""
    import numpy as np

    from splinecam.engines.backends.base import SourceState, image_to_nchw

    S, K = backend.size, backend.config.num_kp
    yy, xx = np.mgrid[0:S, 0:S]
    image = np.stack([xx * 255 // S, yy * 255 // S, np.full_like(xx, 128)], -1).astype(np.uint8)
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 10), np.linspace(-0.5, 0.5, max(1, K // 10))), -1)
    grid = grid.reshape(-1, 2)[:K].astype(np.float32)
    kp_given = grid[None] if backend.landmarks is not None else None
    kp, tensors = backend.graphs.encode_source(image_to_nchw(image), kp_given)
    state = SourceState(image=image, kp=np.asarray(kp, np.float32).reshape(-1, backend.kp_width), tensors=tensors)
    if backend.landmarks is None:
        backend.keypoints(image)
    backend.generate(state, state.kp)


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_worker(args: argparse.Namespace) -> int:
    from splinecam.engines.model_options import backend_from_args, load_model_from_args
    from splinecam.engines.remote.protocol import is_loopback, parse_address
    from splinecam.engines.remote.worker import WorkerServer, make_token

    try:
        host, port = parse_address(args.listen, flag="--listen")
    except ValueError as err:
        raise SplinecamError(str(err)) from None
    if args.max_clients < 1:
        raise SplinecamError(f"--max-clients {args.max_clients}: must be at least 1")
    token = args.token or os.environ.get(TOKEN_ENV, "")
    made = not token
    wlog = logging.getLogger("splinecam.worker")
    if not wlog.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("splinecam worker: %(message)s"))
        wlog.addHandler(handler)
        wlog.propagate = False
    wlog.setLevel(logging.INFO)

    loaded = load_model_from_args(args)
    backend = backend_from_args(args, loaded)
    try:
        _say(f"splinecam: worker warming up {loaded.config.name} on {backend.describe()} …")
        _warm_up(backend)
        if made:
            token = make_token()
        try:
            server = WorkerServer(backend, token, host, port, max_clients=args.max_clients,
                                  model_hash=loaded.model_hash, weights=loaded.path.name if loaded.path else "")
        except OSError as err:
            raise SplinecamError(f"--listen {args.listen}: cannot listen there ({err.strerror or err})") from None
        bound_host, bound_port = server.address
        shown = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        if made:
            _say(f"splinecam: worker token (give it to `splinecam live --remote … --token`): {token}")
        _say(f"splinecam: worker ready on {shown}: {loaded.config.name} on {backend.describe()}"
             f"{', keypoints from the clients face mesh' if backend.landmarks is not None else ''}; Ctrl-C to stop")
        if not is_loopback(bound_host):
            _say(f"splinecam: listening beyond this machine on {shown}: anyone who can reach the port and holds the "
                 f"token can use the worker; frames are not encrypted (across untrusted networks use an SSH "
                 f"tunnel or a VPN)")

        stopped = None  # SIGINT / SIGTERM / SIGHUP (splinecam/cli.py: engines/interrupts.py) end the serving
        try:
            server.serve_forever()
        except KeyboardInterrupt as exc:
            stopped = as_interrupted(exc)
        finally:
            server.close()
        c = server.counts
        _say(f"splinecam: worker stopped: {c['frames_generated']} frames for {c['clients']} clients, "
             f"{c['refused']} refused")
    finally:
        backend.close()
    if stopped is not None:  # exit 128 + the signal, like every command
        raise stopped
    return 0
