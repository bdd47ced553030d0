"""The networks on another machine: ``splinecam worker`` serves them, :class:`RemoteBackend` uses them.

    splinecam worker --listen 0.0.0.0:7860 --token T          # on the GPU box
    splinecam live --remote gpu-box:7860 --token T …          # on the laptop

:mod:`.protocol` is the wire format (length-prefixed binary over TCP), :mod:`.worker` the server,
:mod:`.client` the :class:`~splinecam.engines.backends.base.Backend` that talks to it. Nothing here
imports the live loop: the live loop sees a Backend like any other, which raises
:class:`~splinecam.engines.errors.BackendOffline` while the worker is away.
"""

from splinecam.engines.remote.protocol import VERSION, parse_address

__all__ = ["VERSION", "parse_address"]
