"""splinecam: drive a portrait from your webcam, live, into a video call (TPSMM).

Installed, the repository's top-level folders are this package's subpackages (setup.cfg's
``package_dir``): ``live/`` → :mod:`splinecam.live`, ``engines/`` → :mod:`splinecam.engines`,
``training/`` → :mod:`splinecam.training`, ``benchmarks/`` → :mod:`splinecam.benchmarks`.
This is the one place the version is written (setup.cfg reads it).
"""

__version__ = "0.2.0"
