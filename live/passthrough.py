"""A backend without networks, for measuring and testing the live loop on its own.

``keypoints`` returns a fixed (K, 2) grid nudged by the crop's mean brightness (so it changes with
the input, at the cost of one mean); ``generate`` returns the avatar's own (S, S, 3) image. Every
stage of the loop around the networks — capture, tracking, crop, smoothing, normalisation,
composition, sinks — runs for real.
"""

from __future__ import annotations

import numpy as np

from splinecam.engines.backends.base import Backend, SourceState


class PassThroughBackend(Backend):
    name = "passthrough"

    def __init__(self, size: int = 256, num_kp: int = 50, has_avd: bool = False):
        super().__init__(config=None, device="cpu", precision="fp32", has_avd=has_avd)  # type: ignore[arg-type]
        self._size = size
        g = np.linspace(-0.6, 0.6, 10, dtype=np.float32)
        grid = np.stack(np.meshgrid(g, np.linspace(-0.6, 0.6, max(1, num_kp // 10), dtype=np.float32)), -1)
        self._grid = grid.reshape(-1, 2)[:num_kp].copy()
        self.calls = {"prepare_source": 0, "keypoints": 0, "generate": 0}

    @property
    def size(self) -> int:
        return self._size

    def prepare_source(self, image: np.ndarray) -> SourceState:
        self.calls["prepare_source"] += 1
        return SourceState(image=image, kp=self._grid.copy())

    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        self.calls["keypoints"] += 1
        shift = np.float32(frame[::16, ::16].mean() / 255.0 - 0.5) * np.float32(0.1)
        return self._grid + shift

    def generate(self, source: SourceState, kp_driving: np.ndarray, bg_param=None) -> np.ndarray:
        self.calls["generate"] += 1
        return source.image

    def avd(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        return np.asarray(kp_driving, np.float32)
