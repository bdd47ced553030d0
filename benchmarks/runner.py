"""Row runners and the interleaved measurement.

A runner turns one (S,S,3) uint8 driving frame into one (S,S,3) uint8 output frame and says how
long each stage took. Two kinds:

- :class:`OfficialBaseline`: the official demo's per-frame work — ``TPSMM.kp_detector(driving)``
  then ``TPSMM.animate`` (dense motion + the whole inpainting network, source encoder included),
  torch float32 eager, uncached; source keypoints once; no background. ``animate``'s two calls are
  made (and timed) one after the other: ``dense_motion`` and ``inpainting`` stages.
- :class:`BackendRunner`: a splinecam backend from ``create_backend`` — ``keypoints`` + ``generate``
  (host TPS solve, dense motion, inpainting decoder on the cached source).

Both normalise keypoints the same way (relative mode, ``splinecam.live.normalise.KeypointNormaliser``,
reference = the first frame), so outputs are comparable frame for frame. :func:`measure`
interleaves the rows frame by frame in a rotating order, so drift and neighbours' load hit every
row alike.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from splinecam.engines.tpsmm.checkpoint import LoadedModel
from splinecam.live.normalise import KeypointNormaliser

Stages = dict[str, float]


def say(msg: str) -> None:
    """Progress for the person running a benchmark (stderr, so JSON on stdout stays clean)."""
    print(msg, file=sys.stderr, flush=True)


def unavailable_reason(backend: str, err: Exception) -> str:
    """The one-line reason a row cannot run; for TensorRT the root cause (not installed / no GPU)."""
    if backend == "tensorrt":
        from splinecam.engines.backends.tensorrt_runner import tensorrt_unavailable_reason

        return tensorrt_unavailable_reason() or str(err)
    return str(err)


@dataclass
class RowSpec:
    """What to run: backend name ("torch-official" for the baseline), precision, device."""

    backend: str
    precision: str
    device: str
    baseline: bool = False


class Runner:
    """Base: ``setup`` once, then ``frame`` per driving frame."""

    spec: RowSpec
    variant: str = ""

    def setup(self, source: np.ndarray, reference: np.ndarray) -> None:
        """source (S,S,3) uint8 avatar; reference (S,S,3) uint8 calibration frame (relative mode)."""
        raise NotImplementedError

    def frame(self, driving: np.ndarray) -> tuple[np.ndarray, Stages]:
        """(S,S,3) uint8 → ((S,S,3) uint8 output, {stage: ms})."""
        raise NotImplementedError

    def generate_kp(self, kp_driving: np.ndarray) -> np.ndarray:
        """Generator only, for given normalised driving keypoints (K,2) → (S,S,3) uint8."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def large_motion_keypoints(kp_source: np.ndarray, seed: int = 0) -> np.ndarray:
    """Source keypoints (K,D) under a seeded large motion: zoom ±5 %, a common shift ~0.05 and
    per-point jitter ~0.03 (of the [-1,1] frame) — random-weight keypoint detectors barely move
    on real frames, so this exercises the warps the way a real head turn does. Keypoints with
    jacobians (FOMM's (K,6)) also get each jacobian multiplied by I + N(0, 0.05²)."""
    rng = np.random.default_rng(seed)
    kp = np.asarray(kp_source, np.float32)
    pos = kp[..., :2]
    shift = rng.normal(0, 0.05, size=(1, 2)) + rng.normal(0, 0.03, size=pos.shape)
    moved = np.clip(pos * (1 + rng.normal(0, 0.05)) + shift, -1, 1).astype(np.float32)
    if kp.shape[-1] == 2:
        return moved
    out = kp.copy()
    out[..., :2] = moved
    jac = kp[..., 2:6].reshape(-1, 2, 2)
    change = np.eye(2) + rng.normal(0, 0.05, size=jac.shape)
    out[..., 2:6] = np.matmul(change, jac).reshape(kp[..., 2:6].shape)
    return out.astype(np.float32)


def _nchw(image: np.ndarray, device="cpu"):
    """(S,S,3) uint8 → contiguous (1,3,S,S) float32 in [0,1]. Contiguous NCHW matters: a permuted
    view would run the float32 network in channels_last, many times slower on CPU."""
    import torch

    from splinecam.engines.backends.base import image_to_nchw

    return torch.from_numpy(image_to_nchw(image)).to(device)


class OfficialBaseline(Runner):
    """torch fp32 eager, uncached: kp_detector + dense motion + inpainting every frame.

    ``device``: cpu, or cuda on a GPU machine (where the official demo runs). On CUDA each stage
    ends with a synchronize so its time is its own.
    """

    variant = ("torch fp32 eager, uncached: TPSMM.kp_detector (or, for landmark configs, the face mesh) + "
               "TPSMM.animate per frame (official demo)")

    def __init__(self, loaded: LoadedModel, device: str = "cpu"):
        import torch

        from splinecam.benchmarks.results import BASELINE_BACKEND

        self.spec = RowSpec(BASELINE_BACKEND, "fp32", device, baseline=True)
        self.device = torch.device(device)
        self.model = copy.deepcopy(loaded.model).float().to(self.device).eval()
        self._sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

    def _keypoints(self, image: np.ndarray, source: bool = False) -> np.ndarray:
        """(K,2) keypoints of an (S,S,3) uint8 image: the keypoint detector's, or for landmark configs
        (no keypoint network) the face mesh's (static for the avatar, tracking for the driving frames)."""
        if self.landmarks is not None:
            return self.landmarks.source(image) if source else self.landmarks.driving(image)
        return self.model.kp_detector(_nchw(image, self.device))[0].cpu().numpy()

    def setup(self, source, reference):
        import torch

        self.landmarks = None
        if self.model.kp_detector is None:
            from splinecam.engines.tpsmm.landmarks import LandmarkKeypoints

            self.landmarks = LandmarkKeypoints(self.model.config)
        with torch.inference_mode():
            self.source = _nchw(source, self.device)
            self.kp_source = torch.from_numpy(self._keypoints(source, source=True))[None].to(self.device)
            kp_ref = self._keypoints(reference)
        self.normaliser = KeypointNormaliser(self.kp_source[0].cpu().numpy(), "relative")
        self.normaliser.calibrate(kp_ref)

    def frame(self, driving):
        import torch

        with torch.inference_mode():
            t0 = time.perf_counter()
            kp = self._keypoints(driving)
            t1 = time.perf_counter()
            kp_norm = torch.from_numpy(self.normaliser(kp))[None].to(self.device)
            t2 = time.perf_counter()
            # TPSMM.animate, its two calls timed apart
            motion = self.model.dense_motion_network(self.source, kp_norm, self.kp_source, None)
            self._sync()
            t3 = time.perf_counter()
            pred = self.model.inpainting_network(self.source, motion).prediction
            out = pred[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            t4 = time.perf_counter()
        return out, {"keypoints": (t1 - t0) * 1e3, "normalise": (t2 - t1) * 1e3,
                     "dense_motion": (t3 - t2) * 1e3, "inpainting": (t4 - t3) * 1e3}

    def generate_kp(self, kp_driving: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            kp = torch.from_numpy(np.asarray(kp_driving, np.float32))[None].to(self.device)
            pred = self.model.animate(self.source, self.kp_source, kp)
            return pred[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()

    def source_keypoints(self) -> np.ndarray:
        return self.kp_source[0].cpu().numpy()


class BackendRunner(Runner):
    """A backend built by ``splinecam.engines.backends.create_backend`` on a private copy of the model."""

    def __init__(self, spec: RowSpec, loaded: LoadedModel, options=None):
        from splinecam.engines.backends import BackendOptions, create_backend

        self.spec = spec
        self.backend = create_backend(loaded, spec.backend, spec.device, spec.precision, options or BackendOptions())
        self.variant = self.backend.describe()

    def setup(self, source, reference):
        self.state = self.backend.prepare_source(source)
        self.normaliser = KeypointNormaliser(self.state.kp, "relative")
        self.normaliser.calibrate(self.backend.keypoints(reference))

    def frame(self, driving):
        t0 = time.perf_counter()
        kp = self.backend.keypoints(driving)
        t1 = time.perf_counter()
        kp_norm = self.normaliser(kp)
        t2 = time.perf_counter()
        out = self.backend.generate(self.state, kp_norm)
        t3 = time.perf_counter()
        return out, {"keypoints": (t1 - t0) * 1e3, "normalise": (t2 - t1) * 1e3, "generate": (t3 - t2) * 1e3}

    def generate_kp(self, kp_driving: np.ndarray) -> np.ndarray:
        return self.backend.generate(self.state, kp_driving)

    def close(self):
        self.backend.close()


@dataclass
class Measurement:
    """Per-frame totals (ms), per-stage times (ms) and outputs ((S,S,3) uint8) of one runner."""

    ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    outputs: list[np.ndarray] = field(default_factory=list)
    error: str | None = None

    def stage_means(self) -> dict[str, float]:
        return {k: round(float(np.mean(v)), 3) for k, v in self.stages.items()}


def measure(runners: list[Runner], frames: list[np.ndarray], warmup: int,
            tick: Callable[[str], None] | None = None) -> list[Measurement]:
    """Warm up, then time every runner on every frame, interleaved in a rotating order.

    Frame i is run by all runners before frame i+1, starting with runner i mod R. A runner that
    raises is recorded (``error``) and dropped from later rounds; the others go on.
    """
    results = [Measurement() for _ in runners]
    n = len(runners)
    alive = list(range(n))
    schedule = [(True, frames[w % len(frames)]) for w in range(warmup)] + [(False, f) for f in frames]
    for k, (is_warmup, frame) in enumerate(schedule):
        order = [alive[(j + k) % len(alive)] for j in range(len(alive))] if alive else []
        for idx in order:
            runner, m = runners[idx], results[idx]
            try:
                t0 = time.perf_counter()
                out, stages = runner.frame(frame)
                ms = (time.perf_counter() - t0) * 1e3
            except Exception as exc:  # reported in the row, the run goes on
                m.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                alive.remove(idx)
                continue
            if not is_warmup:
                m.ms.append(ms)
                m.outputs.append(out)
                for name, v in stages.items():
                    m.stages.setdefault(name, []).append(v)
            if tick:
                tick(runner.spec.backend + " " + runner.spec.precision)
    return results
