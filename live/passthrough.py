"""A backend without networks, for measuring and testing the live loop on its own.

``keypoints`` returns a fixed (K, 2) grid nudged by the crop's mean brightness (so it changes with
the input, at the cost of one mean); ``generate`` returns the avatar's own (S, S, 3) image. Every
stage of the loop around the networks — capture, tracking, crop, smoothing, normalisation,
composition, sinks — runs for real, and so does the model runner's host work (conversions, TPS solve).
"""

from __future__ import annotations

import numpy as np

from splinecam.engines.backends.base import Backend, GraphRunner
from splinecam.engines.tpsmm.config import ModelConfig


class PassThroughGraphs(GraphRunner):
    engine = "passthrough"

    def __init__(self, num_kp: int = 50):
        g = np.linspace(-0.6, 0.6, 10, dtype=np.float32)
        grid = np.stack(np.meshgrid(g, np.linspace(-0.6, 0.6, max(1, num_kp // 10), dtype=np.float32)), -1)
        self.grid = grid.reshape(-1, 2)[:num_kp].copy()
        self.calls = {"prepare_source": 0, "keypoints": 0, "generate": 0}

    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None):
        self.calls["prepare_source"] += 1
        return self.grid[None].copy(), source

    def keypoints(self, image: np.ndarray) -> np.ndarray:
        self.calls["keypoints"] += 1
        shift = np.float32(image[0, :, ::16, ::16].mean() - 0.5) * np.float32(0.1)
        return (self.grid + shift)[None]

    def generate(self, source: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.calls["generate"] += 1
        return source


class PassThroughBackend(Backend):
    """The model runner over :class:`PassThroughGraphs`; ``calls`` counts the graph calls."""

    def __init__(self, size: int = 256, num_kp: int = 50, has_avd: bool = False):
        config = ModelConfig(name="passthrough", num_tps=max(1, num_kp // 5), image_size=size, bg=False)
        super().__init__(config, PassThroughGraphs(num_kp), (lambda ks, kd: kd) if has_avd else None)

    @property
    def calls(self) -> dict[str, int]:
        return self.graphs.calls
