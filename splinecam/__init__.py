"""splinecam: drive a portrait from your webcam, live, into a video call (TPSMM)."""

__version__ = "0.1.0"
