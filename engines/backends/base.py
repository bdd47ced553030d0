"""The narrow interface between the live loop / offline animation and wherever the networks run.

    backend = create_backend(loaded_model, backend="auto", device="cpu", precision="auto")
    state   = backend.prepare_source(avatar_256)        # once per avatar (cached tensors)
    kp      = backend.keypoints(frame_256)              # per frame: (K, D) float32, positions in [-1, 1]
    kp_norm = normaliser(kp)                            # live/normalise.py, on the host
    frame   = backend.generate(state, kp_norm)          # per frame: (S, S, 3) uint8 RGB

Two layers (see the repository's DESIGN.md, "Backends"):

* :class:`Backend` — the one model runner. It owns, once for every engine, what happens on the host:
  image conversions (:func:`image_to_nchw`, :func:`nchw_to_image`), the per-frame host step of the
  model family (:mod:`splinecam.engines.family`: for TPSMM the TPS solve,
  :func:`splinecam.engines.tpsmm.host.generator_feeds`; for FOMM the jacobians' 2×2 inverses,
  :func:`splinecam.engines.fomm.host.generator_feeds`), the AVD mapping (:meth:`Backend.avd`), the stage
  timer and the avatar's cached source state.
* :class:`GraphRunner` — a thin per-engine runner of the exported graphs (``keypoints``,
  ``source_encoder``, ``generator``, ``background``; contracts in :mod:`splinecam.engines.export.graphs`):
  torch eager, torch compiled, ONNX Runtime, TensorRT. It takes and returns host float32 arrays by
  tensor name, and keeps the avatar's source tensors wherever its engine wants them (device buffers …).

Images cross the interface as RGB numpy arrays of the model's size S: uint8, or float32 in [0, 1] (what
the official demo feeds, for exact ``--crop none`` output); results are uint8. Keypoints are float32
(K, D) arrays whose first two columns are (x, y) in [-1, 1]: D = 2 for TPSMM, D = 6 for FOMM (the 2×2
jacobian follows, row-major; :mod:`splinecam.engines.fomm.keypoints`). ``Backend.kp_width`` is D.
Switching avatars only calls ``prepare_source`` again: no engine is rebuilt.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from splinecam.engines.errors import BackendUnavailableError
from splinecam.engines.output_guard import check_prediction
from splinecam.engines.family import avd_refusal, family_of
from splinecam.engines.tpsmm.config import ModelConfig

if TYPE_CHECKING:
    from splinecam.engines.loaded_model import LoadedModel


# ----------------------------------------------------------------------------- conversions (the one place)


def image_to_nchw(image: np.ndarray) -> np.ndarray:
    """(S,S,3) RGB → (1,3,S,S) float32 in [0,1]: uint8 is scaled by 1/255, float32 taken as is."""
    x = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))[None]
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def nchw_to_image(pred: np.ndarray) -> np.ndarray:
    """(1,3,S,S) float in [0,1] → (S,S,3) uint8 RGB (rounded half to even, clipped)."""
    return np.clip(np.rint(np.asarray(pred, np.float32)[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- state and timing


@dataclass
class SourceState:
    """Everything the generator needs from one avatar, computed once.

    image: (S,S,3) uint8 (or float32 [0,1]) RGB as given; kp: (K,D) float32 source keypoints; tensors:
    the generator's cached source inputs (TPSMM: ``source_image``, ``source_small``, ``source_heat``,
    ``source_feat*``; FOMM: ``source_small``, ``source_heat``, ``source_feat0``, ``source_kp``) in whatever
    form the graph runner keeps them (torch tensors, numpy arrays, device buffers).
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


# ----------------------------------------------------------------------------- the per-engine layer


class GraphRunner(abc.ABC):
    """Runs one model's exported graphs on one engine. Host arrays in and out, tensors by name.

    Subclasses (one per registry row in :mod:`splinecam.engines.backends.registry`) set ``engine``,
    ``device`` and ``precision`` and implement the four calls; nothing else (no image conversion, no
    TPS, no AVD: :class:`Backend` does those once).
    """

    engine: str = "abstract"
    device: str = "cpu"
    precision: str = "fp32"

    def describe(self) -> str:
        return f"{self.engine}/{self.device}/{self.precision}"

    @abc.abstractmethod
    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """source (1,3,S,S) float32 [, kp_source (1,K,2): given for landmark configs, which have no keypoint
        graph] → (kp_source (1,K,D) float32, the cached source tensors)."""

    @abc.abstractmethod
    def keypoints(self, image: np.ndarray) -> np.ndarray:
        """image (1,3,S,S) float32 → kp (1,K,D) float32."""

    @abc.abstractmethod
    def generate(self, source: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Cached source tensors + the family's per-frame host feeds (TPSMM: ``kp_driving``, ``tps_theta``,
        ``tps_params``, ``bg_param``; FOMM: ``kp_driving``, ``kp_jacobian``) → prediction (1,3,S,S) float32
        in [0,1]."""

    def background(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray | None:
        """source, driving (1,3,S,S) float32 → bg_param (1,3,3) float32, or None without a background graph."""
        return None

    def close(self) -> None:
        """Release sessions / device memory."""


class ManifestGraphs(GraphRunner):
    """A runner of the exported ONNX graphs by their manifest names (``source_encoder``, ``keypoints``,
    ``generator``, optional ``background``): subclasses implement :meth:`run` and :meth:`has_graph`;
    the four calls are the same for every such engine (ONNX Runtime, OpenVINO)."""

    @abc.abstractmethod
    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph: feeds and results by tensor name (feeds the graph does not take are ignored)."""

    @abc.abstractmethod
    def has_graph(self, graph: str) -> bool:
        """Whether this export holds ``graph`` (the background graph is optional)."""

    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None):
        feeds = {"source": source} if kp_source is None else {"source": source, "kp_source_in": kp_source}
        out = self.run("source_encoder", feeds)
        return out.pop("kp_source"), out

    def keypoints(self, image: np.ndarray) -> np.ndarray:
        return self.run("keypoints", {"image": image})["kp"]

    def generate(self, source: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.run("generator", {**source, **feeds})["prediction"]

    def background(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray | None:
        if not self.has_graph("background"):
            return None
        return self.run("background", {"source": source, "driving": driving})["bg_param"]


# ----------------------------------------------------------------------------- AVD on the host

AvdMapping = Callable[[np.ndarray, np.ndarray], np.ndarray]


class TorchAvd:
    """The AVD MLP in torch float32 on the CPU: (K,2) source, (K,2) driving → (K,2). It uses the loaded
    model's own module, which no graph runner modifies."""

    def __init__(self, network):
        self.network = network

    def __call__(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ks = torch.from_numpy(kp_source.reshape(1, -1, 2))
            kd = torch.from_numpy(kp_driving.reshape(1, -1, 2))
            return self.network(ks, kd)[0].float().numpy()


# ----------------------------------------------------------------------------- the model runner


class Backend:
    """The one model runner over a :class:`GraphRunner` (see the module docstring).

    ``name`` / ``device`` / ``precision`` are the graph runner's; ``size`` is S.
    """

    def __init__(self, config: ModelConfig, graphs: GraphRunner, avd: AvdMapping | None = None, has_bg: bool = False):
        self.config = config
        self.family = family_of(config)
        self._generator_feeds = self.family.host().generator_feeds
        self.graphs = graphs
        self._avd = avd
        self.has_avd = avd is not None
        self.has_bg = has_bg
        self.timer = StageTimer()
        self.landmarks = None
        if config.landmark_keypoints:  # keypoints from the face mesh, not from a graph
            from splinecam.engines.tpsmm.landmarks import LandmarkKeypoints

            self.landmarks = LandmarkKeypoints(config)

    @classmethod
    def for_model(cls, loaded: "LoadedModel", graphs: GraphRunner) -> "Backend":
        """The model runner of a loaded checkpoint over ``graphs`` (AVD on the host when it has one)."""
        return cls(loaded.config, graphs, TorchAvd(loaded.model.avd_network) if loaded.has_avd else None,
                   loaded.has_bg)

    @property
    def name(self) -> str:
        return self.graphs.engine

    @property
    def device(self) -> str:
        return self.graphs.device

    @property
    def precision(self) -> str:
        return self.graphs.precision

    @property
    def size(self) -> int:
        """S: the square image size the networks take and return."""
        return self.config.image_size

    @property
    def kp_width(self) -> int:
        """D: columns of a keypoint row (2: x, y; 6 for FOMM: x, y and the 2×2 jacobian)."""
        return self.family.kp_width

    def describe(self) -> str:
        return self.graphs.describe()

    # ------------------------------------------------------------ float-level API (tests, bench, exact paths)

    def encode_source(self, source: np.ndarray, image: np.ndarray | None = None) -> SourceState:
        """(1,3,S,S) float32 in [0,1] → SourceState (``image`` kept for composition; derived when None)."""
        image = nchw_to_image(source) if image is None else image
        kp = None if self.landmarks is None else self.landmarks.source(image)[None]
        kp, tensors = self.graphs.encode_source(np.ascontiguousarray(source, np.float32), kp)
        return SourceState(image=image, kp=np.asarray(kp, np.float32).reshape(-1, self.kp_width), tensors=tensors)

    def keypoints_nchw(self, frame: np.ndarray) -> np.ndarray:
        """(1,3,S,S) float32 → (K,D) float32."""
        if self.landmarks is not None:
            return self.landmarks.driving(nchw_to_image(frame))
        kp = self.graphs.keypoints(np.ascontiguousarray(frame, np.float32))
        return np.asarray(kp, np.float32).reshape(-1, self.kp_width)

    def frame_feeds(self, source: SourceState, kp_driving: np.ndarray,
                    bg_param: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model family's per-frame host step (:mod:`splinecam.engines.family`): (K,D) normalised driving
        keypoints [+ (3,3) background] → the generator's per-frame feeds (TPSMM: the TPS solve,
        :func:`splinecam.engines.tpsmm.host.generator_feeds`; FOMM: ``J_src·J_drv⁻¹`` with the 2×2 inverses,
        :func:`splinecam.engines.fomm.host.generator_feeds`)."""
        return self._generator_feeds(self.config, kp_driving, source.kp, bg_param)

    def predict(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        """(K,D) normalised driving keypoints [+ (3,3) background] → (1,3,S,S) float32 prediction."""
        return self.graphs.generate(source.tensors, self.frame_feeds(source, kp_driving, bg_param))

    def overlapped(self, background: bool = False, depth: int = 2):
        """The graph runner's overlapped GPU pipeline (:class:`splinecam.engines.cuda_pipeline.OverlappedPipeline`:
        keypoints of frame N+1 on one CUDA stream while the generator of frame N runs on another), with this
        runner's host step; None where the runner has none (every engine but TensorRT) or the keypoints come
        from the face mesh. ``background``: run the background graph per frame (models that have one)."""
        make = getattr(self.graphs, "overlapped", None)
        if make is None or self.landmarks is not None:
            return None
        return make(self.frame_feeds, background and self.has_bg, depth)

    # ------------------------------------------------------------ the interface the live loop uses

    def prepare_source(self, image: np.ndarray) -> SourceState:
        """(S,S,3) uint8 (or float32 [0,1]) RGB avatar → cached SourceState."""
        with self.timer.time("prepare_source"):
            return self.encode_source(image_to_nchw(image), image)

    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        """(S,S,3) RGB frame → (K,D) float32 keypoints."""
        with self.timer.time("keypoints"):
            if self.landmarks is not None:
                return self.landmarks.driving(frame)
            return self.keypoints_nchw(image_to_nchw(frame))

    def generate(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        """Normalised driving keypoints (K,D) [+ background (3,3)] → (S,S,3) uint8 RGB frame. Raises
        :class:`~splinecam.engines.output_guard.GeneratorOutputError` for a non-finite or all-black frame."""
        with self.timer.time("generate"):
            pred = self.predict(source, kp_driving, bg_param)
            check_prediction(pred, source.image)  # never a silently black frame (engines/output_guard.py)
            return nchw_to_image(pred)

    def background(self, source: SourceState, frame: np.ndarray) -> np.ndarray:
        """Background affine motion of a driving frame: (3,3) float32 (identity without a background net)."""
        if not self.has_bg:
            return np.eye(3, dtype=np.float32)
        bg = self.graphs.background(image_to_nchw(source.image), image_to_nchw(frame))
        return np.eye(3, dtype=np.float32) if bg is None else np.asarray(bg, np.float32).reshape(3, 3)

    def avd(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        """AVD normalisation (K,2),(K,2) → (K,2), on the host for every engine."""
        if self._avd is None:
            raise BackendUnavailableError(avd_refusal(self.config))
        return self._avd(np.asarray(kp_source, np.float32), np.asarray(kp_driving, np.float32))

    def close(self) -> None:
        if self.landmarks is not None:
            self.landmarks.close()
        self.graphs.close()
