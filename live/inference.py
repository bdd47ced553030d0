"""How the live loop runs the networks: at once (every backend), or overlapped on two CUDA streams
(the TensorRT backend on CUDA), one frame later.

:class:`FrameProcessor` (live/pipeline.py) does, per frame with a face: ``keypoints(crop, source)`` →
raw keypoints; its own host work (One-Euro smoothing, calibration, normalisation, best-frame search,
the fallback's memory); ``generate(source, kp)`` → the face, or a ticket for it; per frame without a
face, ``pose(source, kp)`` (hold / ease) likewise; and ``resolve(face)`` → the (S,S,3) image.

:class:`OverlappedInference` (``lag`` 1) hands the frame to the backend's
:class:`splinecam.engines.cuda_pipeline.OverlappedPipeline`: ``keypoints`` waits for this frame's
keypoints only, ``generate`` / ``pose`` enqueue the generator and return at once, and the processor
resolves (waits for, composes and returns) the frame one call later — so tracking and the host work of
frame N+1, and its keypoint engine on the GPU, overlap the generator of frame N. Both run the same
host steps, so the overlapped loop gives the same frames as the direct one, one call later
(tests/test_live_gpu.py, on the CPU with a fake TensorRT and the recording stream device).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class DirectInference:
    """The backend's own calls, results at once (``lag`` 0)."""

    lag = 0

    def __init__(self, backend):
        self.backend = backend

    def keypoints(self, crop: np.ndarray, source) -> np.ndarray:
        return self.backend.keypoints(crop)

    def generate(self, source, kp: np.ndarray) -> np.ndarray:
        return self.backend.generate(source, kp)

    def pose(self, source, kp: np.ndarray) -> np.ndarray:
        return self.backend.generate(source, kp)

    def resolve(self, face: Any) -> np.ndarray:
        return face

    def close(self) -> None:
        pass


class OverlappedInference:
    """The two-stream GPU pipeline: a frame's face is a ticket, resolved one call later (``lag`` 1)."""

    lag = 1

    def __init__(self, backend, pipeline):
        self.backend, self.pipeline = backend, pipeline
        self._ticket = None

    def keypoints(self, crop: np.ndarray, source) -> np.ndarray:
        self._ticket = self.pipeline.keypoints(crop, source)
        return self._ticket.kp

    def generate(self, source, kp: np.ndarray):
        ticket, self._ticket = self._ticket, None
        self.pipeline.generate(ticket, kp)
        return ticket

    def pose(self, source, kp: np.ndarray):
        return self.pipeline.pose(kp, source)

    def resolve(self, face: Any) -> np.ndarray:
        return face if isinstance(face, np.ndarray) else self.pipeline.collect(face).frame

    def close(self) -> None:
        self.pipeline.close()


def inference_for(backend) -> DirectInference | OverlappedInference:
    """Overlapped where the backend has a GPU pipeline (TensorRT on CUDA, keypoints from a graph), else direct."""
    make = getattr(backend, "overlapped", None)
    pipeline = make() if make is not None else None
    return DirectInference(backend) if pipeline is None else OverlappedInference(backend, pipeline)
