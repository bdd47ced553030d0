"""The narrow interface between the live loop / offline animation and wherever the networks run.

    backend = create_backend(loaded_model, backend="auto", device="cpu", precision="auto")
    state   = backend.prepare_source(avatar_256)        # once per avatar (cached tensors)
    kp      = backend.keypoints(frame_256)              # per frame: (K, 2) float32 in [-1, 1]
    kp_norm = normaliser(kp)                            # live/normalise.py, on the host
    frame   = backend.generate(state, kp_norm)          # per frame: (S, S, 3) uint8 RGB

Images cross the interface as RGB numpy arrays of the model's size S (256): uint8, or float32 in
[0, 1] (what the official demo feeds, for exact ``--crop none`` output); results are uint8. Keypoints as
float32 numpy (K, 2) arrays, (x, y) in [-1, 1]. Switching avatars only calls ``prepare_source``
again: no engine is rebuilt. The TPS systems are solved on the host in float32 (``solve_tps``),
so no exported graph needs a matrix inverse.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splinecam.engines.tpsmm.config import ModelConfig

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class SourceState:
    """Everything the generator needs from one avatar, computed once.

    image: (S,S,3) uint8 RGB; kp: (K,2) float32 source keypoints; tensors: backend-specific
    cached inputs of the generator (the source (1,3,S,S), its anti-aliased (1,3,s,s) copy, the
    source Gaussians (1,K,s,s), the inpainting-encoder features), in whatever form the backend
    keeps them (torch tensors, numpy arrays, device buffers).
    """

    image: np.ndarray
    kp: np.ndarray
    tensors: Any = None


@dataclass
class StageTimer:
    """Accumulates wall time per named stage (ms), for the bench and the live metrics."""

    totals_ms: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    last_ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        ms = seconds * 1000.0
        self.totals_ms[stage] = self.totals_ms.get(stage, 0.0) + ms
        self.counts[stage] = self.counts.get(stage, 0) + 1
        self.last_ms[stage] = ms

    def time(self, stage: str):
        return _Timed(self, stage)

    def mean_ms(self) -> dict[str, float]:
        return {k: self.totals_ms[k] / max(1, self.counts[k]) for k in self.totals_ms}


class _Timed:
    def __init__(self, timer: StageTimer, stage: str):
        self.timer, self.stage = timer, stage

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timer.add(self.stage, time.perf_counter() - self.t0)
        return False


class Backend(abc.ABC):
    """Where the networks run. Subclasses: TorchBackend, OnnxRuntimeBackend, TensorRTBackend."""

    name: str = "abstract"

    def __init__(self, config: ModelConfig, device: str, precision: str, has_avd: bool):
        self.config = config
        self.device = device
        self.precision = precision
        self.has_avd = has_avd
        self.timer = StageTimer()

    @property
    def size(self) -> int:
        """S: the square image size the networks take and return."""
        return self.config.image_size

    def describe(self) -> str:
        return f"{self.name}/{self.device}/{self.precision}"

    @abc.abstractmethod
    def prepare_source(self, image: np.ndarray) -> SourceState:
        """(S,S,3) uint8 RGB avatar → cached SourceState."""

    @abc.abstractmethod
    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        """(S,S,3) uint8 RGB frame → (K,2) float32 keypoints."""

    @abc.abstractmethod
    def generate(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        """Normalised driving keypoints (K,2) [+ background (3,3)] → (S,S,3) uint8 RGB frame."""

    def avd(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        """AVD normalisation (K,2),(K,2) → (K,2): a small MLP, run in torch float32 on the host for
        every backend (subclasses keep their LoadedModel as ``self.loaded``)."""
        import torch

        from splinecam.engines.errors import BackendUnavailableError

        if not self.has_avd:
            raise BackendUnavailableError("this checkpoint has no AVD network: use --mode relative or standard")
        with torch.inference_mode():
            ks = torch.from_numpy(np.asarray(kp_source, np.float32))[None]
            kd = torch.from_numpy(np.asarray(kp_driving, np.float32))[None]
            return self.loaded.model.avd_network(ks, kd)[0].float().numpy()

    def background(self, source: SourceState, frame: np.ndarray) -> np.ndarray:
        """Background affine motion of a driving frame: (3,3) float32."""
        raise NotImplementedError

    def close(self) -> None:
        """Release device memory / sessions."""
