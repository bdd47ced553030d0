"""TensorRT graph runner (GPU): plans built from the exported ONNX graphs, run on torch CUDA tensors.

Targets TensorRT 10.12+ and 11.x alike, kept thin and conventional:

* strongly typed networks only — on 10.x the network is created with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; on 11.x every network is strongly typed (11.0 /
  11.1 keep that flag, value 0, deprecated and ignored, so nothing is passed) and ``BuilderFlag.FP16``
  is gone, so precision is the exported graph's: ``fp16`` graphs (float32 islands for keypoints, the
  background affine, instance norms, TPS grids and Gaussians) or ``fp32`` graphs;
* TF32 off (it is on by default in both versions): float32 layers — every layer of an fp32 plan,
  the float32 islands of an fp16 one — run in float32, not with 10-bit mantissas;
* ``builder.build_serialized_network`` with a progress monitor; plans cached by
  :mod:`splinecam.engines.engine_cache` (GPU model / compute capability, TensorRT version, precision, model
  hash, ONNX checksum, :class:`BuilderSettings`) — a stale or corrupt plan is rebuilt, never loaded;
* one process-wide ``trt.Logger`` (:func:`trt_logger`) for every builder, parser and runtime;
* execution with ``set_tensor_address`` + ``execute_async_v3``, one execution context per CUDA stream
  (:class:`TrtEngine`; a context must never be used by two streams at once); every tensor addressed
  by its name, checked before binding (device, shape, dtype, contiguity, 256-byte alignment) and every
  binding's result checked; device buffers are torch CUDA tensors (no extra CUDA Python dependency);
* streams, blocking events and buffers through :class:`splinecam.engines.cuda_pipeline.StreamDevice`,
  so the same code runs on the CPU against a fake ``tensorrt`` module and the recording device
  (tests/test_tensorrt.py); buffers used on a stream other than the one they were allocated for are
  ``record_stream``-ed, and ``close()`` waits for every stream before the engines go.

NOT RUN on a GPU: the machines splinecam is developed on have no GPU and cannot install TensorRT.
What the CPU tests cover and what only the tests marked ``tensorrt`` would (skipped here) is listed in
README.md, "TensorRT: what has and has not run".
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from splinecam.engines.backends.base import GraphRunner
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.cuda_pipeline import ADDRESS_ALIGNMENT, OverlappedPipeline, Stream, StreamDevice
from splinecam.engines.engine_cache import PlanKey, PlanStatus, lookup_plan, plan_dir, store_plan
from splinecam.engines.errors import BackendUnavailableError, EngineCacheError
from splinecam.engines.tpsmm.checkpoint import LoadedModel
from splinecam.engines.tpsmm.config import ModelConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuilderSettings:
    """Every builder setting a plan depends on; :meth:`describe` is part of its cache key.

    tf32: allow TF32 for float32 layers (TensorRT's default is on; ours is off); workspace_bytes: the
    workspace memory pool limit; optimization_level: ``builder_optimization_level`` (TensorRT's default
    3, set explicitly so the key says what was used); strongly_typed: the network's typing (always).
    """

    tf32: bool = False
    workspace_bytes: int = 2 << 30
    optimization_level: int = 3
    strongly_typed: bool = True

    def describe(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


DEFAULT_BUILDER = BuilderSettings()

_LOGGER = None
_LOGGER_LOCK = threading.Lock()


def trt_logger():
    """The one ``trt.Logger`` of this process. TensorRT keeps a single logger pointer and warns when a
    builder or runtime is created with another one while an object made with the first still lives."""
    global _LOGGER
    import tensorrt as trt

    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = trt.Logger(trt.Logger.WARNING)
        return _LOGGER


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else a one-line reason."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "torch is not installed"
    try:
        import tensorrt as trt
    except ImportError:
        return "TensorRT is not installed (pip install 'tensorrt>=10.12' on a machine with an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return "TensorRT needs an NVIDIA GPU with CUDA and none is visible"
    major = int(trt.__version__.split(".")[0])
    minor = int(trt.__version__.split(".")[1])
    if (major, minor) < (10, 12):
        return f"TensorRT {trt.__version__} is too old: splinecam needs 10.12 or newer"
    return None


def require_tensorrt(what: str = "--backend tensorrt", hint: str = "use --backend onnxruntime or torch") -> None:
    """Raise BackendUnavailableError with one line (``<what>: <reason>; <hint>``) when TensorRT cannot run."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"{what}: {reason}; {hint}")


def gpu_identity(device_index: int = 0) -> tuple[str, str]:
    """(GPU model name, compute capability "major.minor") of a CUDA device."""
    import torch

    major, minor = torch.cuda.get_device_capability(device_index)
    return torch.cuda.get_device_name(device_index), f"{major}.{minor}"


def plan_key(graph: str, model_hash: str, precision: str, onnx_sha256: str,
             settings: BuilderSettings = DEFAULT_BUILDER, device_index: int = 0) -> PlanKey:
    import tensorrt as trt

    name, cc = gpu_identity(device_index)
    return PlanKey(graph=graph, model_hash=model_hash, precision=precision, gpu_name=name, compute_capability=cc,
                   tensorrt_version=trt.__version__, onnx_sha256=onnx_sha256, builder_settings=settings.describe())


def _network_flags(trt) -> int:
    """10.x: ``1 << STRONGLY_TYPED`` (networks are weakly typed unless asked). 11.x: 0 — every network
    is strongly typed; 11.0 / 11.1 still define ``STRONGLY_TYPED`` (value 0, deprecated, ignored)."""
    major = int(str(trt.__version__).split(".")[0])
    if major >= 11:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise EngineCacheError(f"TensorRT {trt.__version__} has no STRONGLY_TYPED network flag; splinecam needs "
                               f"10.12 or newer")
    return 1 << int(flag)


def apply_builder_settings(trt, config, settings: BuilderSettings) -> None:
    """Put ``settings`` on a builder config, and check that it holds them (the cache key says so)."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    if settings.tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    config.builder_optimization_level = settings.optimization_level
    if bool(config.get_flag(trt.BuilderFlag.TF32)) != settings.tf32:
        raise EngineCacheError(f"TensorRT {trt.__version__} did not take TF32={settings.tf32}")


def build_plan(onnx_path: str | Path, settings: BuilderSettings = DEFAULT_BUILDER,
               progress: Progress | None = None) -> bytes:
    """Parse an ONNX graph into a strongly typed network and build a serialized plan with ``settings``."""
    import tensorrt as trt

    if not settings.strongly_typed:
        raise EngineCacheError("splinecam builds strongly typed networks only (precision is the graph's)")
    say = progress or (lambda _m: None)
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineCacheError(f"TensorRT could not parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    apply_builder_settings(trt, config, settings)
    monitor = _progress_monitor(trt, say)
    if monitor is not None:
        config.progress_monitor = monitor
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineCacheError(f"TensorRT failed to build a plan from {onnx_path} (see the messages above)")
    say(f"built {Path(onnx_path).name} in {time.perf_counter() - t0:.0f} s")
    return bytes(serialized)


def _progress_monitor(trt, say: Progress):
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.steps[phase_name] = num_steps
            if parent_phase is None:
                say(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            self.steps.pop(phase_name, None)

    return Monitor()


def ensure_plans(loaded: LoadedModel, precision: str, onnx_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, progress: Progress | None = None,
                 settings: BuilderSettings = DEFAULT_BUILDER) -> dict[str, bytes]:
    """Plans for every exported graph: loaded from the cache when VALID, otherwise (re)built and stored."""
    from splinecam.engines.backends.onnxruntime_runner import ensure_export

    require_tensorrt()
    say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
    directory, manifest = ensure_export(loaded, precision, onnx_dir, say)
    where = Path(cache_dir) if cache_dir else plan_dir()
    return plans_for(manifest, directory, loaded.model_hash, precision, where, settings, say)


def plans_for(manifest, directory: Path, model_hash: str, precision: str, where: Path,
              settings: BuilderSettings, say: Progress) -> dict[str, bytes]:
    """The cache lookup / build loop of :func:`ensure_plans`: one key and one build per graph, both from
    the same ``settings`` (so a plan's key always says how it was built)."""
    plans = {}
    for name, info in manifest.graphs.items():
        key = plan_key(name, model_hash, precision, info.sha256, settings)
        status, reason, data = lookup_plan(key, where)
        if status is not PlanStatus.VALID:
            say(f"building TensorRT plan for {name} ({precision}; cached plan {status.value}: {reason}) …")
            data = build_plan(manifest.graph_path(directory, name), settings, say)
            say(f"  stored {store_plan(key, data, where)}")
        plans[name] = data
    return plans


# ----------------------------------------------------------------------------- running a plan


def check_binding(graph: str, name: str, tensor, shape: tuple[int, ...], dtype, device,
                  alignment: int = ADDRESS_ALIGNMENT) -> None:
    """Refuse (EngineCacheError, one line) a tensor a plan must not be given: missing, on another device
    (a CPU tensor, another GPU), of another shape or dtype, not contiguous, or at an address that is not
    ``alignment``-byte aligned (a view into another tensor)."""
    if tensor is None:
        raise EngineCacheError(f"{graph}: no tensor for {name}")
    if tensor.device != device:
        raise EngineCacheError(f"{graph}: tensor {name} is on {tensor.device}, the plan runs on {device}")
    if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype or not tensor.is_contiguous():
        raise EngineCacheError(f"{graph}: tensor {name} is {tuple(tensor.shape)} {tensor.dtype}"
                               f"{'' if tensor.is_contiguous() else ' (not contiguous)'}, the plan expects "
                               f"{tuple(shape)} {dtype}")
    if tensor.data_ptr() % alignment:
        raise EngineCacheError(f"{graph}: tensor {name} at {tensor.data_ptr():#x} is not {alignment}-byte aligned "
                               f"(a view into another buffer?)")


class TrtEngine:
    """One deserialized plan; one execution context per CUDA stream it runs on; I/O tensors by name.

    A context holds the bindings and activation memory of the inference in flight on its stream, so
    two streams never share one (TensorRT: undefined behaviour). Contexts are made on first use of a
    stream and released with :meth:`release` (the pipeline's streams) or :meth:`close`.
    """

    def __init__(self, runtime, plan: bytes, name: str, device):
        import tensorrt as trt
        import torch

        self.name = name
        self.device = device
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineCacheError(f"TensorRT could not load the {name} plan: delete the cache and build again")
        self._contexts: dict[int, Any] = {}
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                  trt.int64: torch.int64, trt.uint8: torch.uint8}
        if hasattr(trt, "bfloat16"):
            dtypes[trt.bfloat16] = torch.bfloat16
        self.inputs: dict[str, tuple[tuple[int, ...], Any]] = {}
        self.outputs: dict[str, tuple[tuple[int, ...], Any]] = {}
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            spec = (tuple(self.engine.get_tensor_shape(tname)), dtypes[self.engine.get_tensor_dtype(tname)])
            is_input = self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs)[tname] = spec

    def context_for(self, stream: Stream):
        """The execution context of ``stream`` (made on first use)."""
        ctx = self._contexts.get(stream.handle)
        if ctx is None:
            ctx = self.engine.create_execution_context()
            if ctx is None:
                raise EngineCacheError(f"TensorRT could not create an execution context for {self.name} "
                                       f"(out of GPU memory?)")
            self._contexts[stream.handle] = ctx
        return ctx

    def new_outputs(self, streams: StreamDevice, stream: Stream | None = None) -> dict:
        """Fresh, aligned device buffers for every output, allocated for ``stream``."""
        return {n: streams.empty(shape, dt, stream) for n, (shape, dt) in self.outputs.items()}

    def enqueue(self, tensors: dict, stream: Stream) -> None:
        """Bind every I/O tensor by name (each checked, each binding's result checked) on the stream's
        own context and enqueue on the stream (no synchronisation)."""
        ctx = self.context_for(stream)
        for tname, (shape, dtype) in (*self.inputs.items(), *self.outputs.items()):
            t = tensors.get(tname)
            check_binding(self.name, tname, t, shape, dtype, self.device)
            if not ctx.set_tensor_address(tname, t.data_ptr()):
                raise EngineCacheError(f"{self.name}: TensorRT refused the address of tensor {tname}")
        if not ctx.execute_async_v3(stream.handle):
            raise EngineCacheError(f"TensorRT failed to run the {self.name} plan")

    def release(self, stream: Stream) -> None:
        """Drop the context of ``stream`` (nothing may be in flight on it)."""
        self._contexts.pop(stream.handle, None)

    def close(self) -> None:
        self._contexts.clear()
        self.engine = None


#: what the synchronous calls copy in and out, per graph (the generator's source inputs stay on the device)
#: (TPSMM's generator takes tps_theta / tps_params / bg_param, FOMM's kp_jacobian; a name a plan lacks is skipped)
SYNC_IO = {"keypoints": ("image", "kp"),
           "generator": ("kp_driving", "tps_theta", "tps_params", "bg_param", "kp_jacobian", "prediction"),
           "background": ("source", "driving", "bg_param")}


class TensorRTGraphs(GraphRunner):
    """The four graphs as TensorRT plans. The synchronous calls (``encode_source``, ``keypoints``,
    ``generate``, ``background``) run on one stream and wait on a blocking event; :meth:`overlapped`
    makes the two-stream pipeline the live loop uses."""

    engine = "tensorrt"

    def __init__(self, loaded: LoadedModel, device: str, precision: str, options: BackendOptions):
        require_tensorrt()
        from splinecam.engines.cuda_pipeline import CudaStreamDevice

        plans = ensure_plans(loaded, precision, options.onnx_dir, options.cache_dir, options.progress)
        self._setup(loaded.config, precision, plans, CudaStreamDevice("cuda"))

    @classmethod
    def from_plans(cls, config: ModelConfig, precision: str, plans: dict[str, bytes],
                   streams: StreamDevice) -> "TensorRTGraphs":
        """A runner over already built ``plans`` on ``streams`` (what ``__init__`` does once the plans are
        there; the tests build one from a fake ``tensorrt`` module on the recording device)."""
        self = cls.__new__(cls)
        self._setup(config, precision, plans, streams)
        return self

    def _setup(self, config: ModelConfig, precision: str, plans: dict[str, bytes], streams: StreamDevice) -> None:
        import tensorrt as trt
        import torch

        self.device, self.precision, self.config = "cuda", precision, config
        self.streams = streams
        self.torch_device = streams.torch_device
        self.runtime = trt.Runtime(trt_logger())
        self.engines = {name: TrtEngine(self.runtime, plan, name, self.torch_device) for name, plan in plans.items()}
        self.stream = streams.new_stream("sync")
        self._done = streams.new_event("sync_done")
        self._pipelines: list[OverlappedPipeline] = []
        # the synchronous calls' buffers: device inputs/outputs made once, pinned host ends for the copies
        self._dev: dict[str, dict] = {}
        self._host: dict[str, dict] = {}
        for graph, names in SYNC_IO.items():
            if graph in self.engines:
                eng = self.engines[graph]
                specs = {n: spec for n, spec in {**eng.inputs, **eng.outputs}.items() if n in names}
                self._dev[graph] = {n: streams.empty(shape, dt, self.stream) for n, (shape, dt) in specs.items()}
                self._host[graph] = {n: streams.pinned_tensor(shape, dt) for n, (shape, dt) in specs.items()}
        self._torch = torch

    # ------------------------------------------------------------ the synchronous calls

    def _run_sync(self, label: str, graph: str, feeds: dict[str, np.ndarray], fetch: tuple[str, ...],
                  bound: dict | None = None) -> dict[str, np.ndarray]:
        """Host arrays → pinned → device (non-blocking), the plan, device → pinned, one blocking wait."""
        torch = self._torch
        dev, host = self._dev[graph], self._host[graph]

        def work():
            for name, value in feeds.items():
                host[name].copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)).view(host[name].shape))
                dev[name].copy_(host[name], non_blocking=True)
            self.engines[graph].enqueue({**dev, **(bound or {})}, self.stream)
            for name in fetch:
                host[name].copy_(dev[name], non_blocking=True)

        self.streams.launch(self.stream, label, work)
        self._wait(label)
        return {name: host[name].float().numpy().copy() for name in fetch}

    def _wait(self, label: str) -> None:
        self._done.record(self.stream, label)
        self._done.synchronize(label)

    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None):
        torch = self._torch
        eng = self.engines["source_encoder"]
        shape, dtype = eng.inputs["source"]
        tensors = {"source": self.streams.empty(shape, dtype, self.stream)}  # new buffers per avatar
        if kp_source is not None:
            tensors["kp_source_in"] = self.streams.empty(*eng.inputs["kp_source_in"], self.stream)
        tensors.update(eng.new_outputs(self.streams, self.stream))
        kp_host = self.streams.pinned_tensor(*eng.outputs["kp_source"])
        staged = {"source": source} if kp_source is None else {"source": source, "kp_source_in": kp_source}
        host = {n: self.streams.pinned_tensor(*eng.inputs[n]) for n in staged}

        def work():
            for name, value in staged.items():
                host[name].copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)).view(host[name].shape))
                tensors[name].copy_(host[name], non_blocking=True)
            eng.enqueue(tensors, self.stream)
            kp_host.copy_(tensors["kp_source"], non_blocking=True)

        self.streams.launch(self.stream, "source_encoder", work)
        self._wait("source_encoder")
        kp = kp_host.float().numpy().copy()
        tensors.pop("kp_source")
        tensors.pop("kp_source_in", None)
        # kept: the generator's source inputs, and "source" (float32), the background graph's input
        return kp, tensors

    def keypoints(self, image: np.ndarray) -> np.ndarray:
        return self._run_sync("keypoints", "keypoints", {"image": image}, ("kp",))["kp"]

    def generate(self, source: dict, feeds: dict[str, np.ndarray]) -> np.ndarray:
        gen = self.engines["generator"]
        frame = {name: value for name, value in feeds.items() if name in gen.inputs}
        return self._run_sync("generator", "generator", frame, ("prediction",), bound=_bound(source, frame))["prediction"]

    def background(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray | None:
        if "background" not in self.engines:
            return None
        return self._run_sync("background", "background", {"source": source, "driving": driving}, ("bg_param",))["bg_param"]

    # ------------------------------------------------------------ the overlapped pipeline

    def overlapped(self, host_step: Callable[[Any, np.ndarray], dict[str, np.ndarray]], background: bool = False,
                   depth: int = 2) -> OverlappedPipeline:
        """An :class:`splinecam.engines.cuda_pipeline.OverlappedPipeline` over these plans: keypoints of
        frame N+1 (and, with ``background``, the background graph) on one stream while the generator of
        frame N runs on another. ``host_step(source_state, kp_driving)`` is the model family's per-frame
        host work (``Backend.frame_feeds``: the TPS solve); every ticket names its avatar's SourceState."""
        if "keypoints" not in self.engines:
            raise BackendUnavailableError("this model has no keypoint graph (landmark keypoints): no GPU pipeline")
        stages = _TrtStages(self, host_step, background and "background" in self.engines)
        pipe = OverlappedPipeline(self.streams, stages, depth)
        self._pipelines.append(pipe)
        return pipe

    def close(self) -> None:
        """Wait for every stream of ours (pipelines first), then drop contexts, engines and the runtime."""
        for pipe in self._pipelines:
            pipe.close()
        self._pipelines.clear()
        if getattr(self, "engines", None):
            self.streams.drain(self.stream, "close")
            for eng in self.engines.values():
                eng.close()
            self.engines.clear()


def _bound(source: Any, skip: dict) -> dict:
    """The cached source tensors of a SourceState (or its tensors dict), minus names ``skip`` binds."""
    tensors = getattr(source, "tensors", source) or {}
    return {k: v for k, v in tensors.items() if k not in skip}


class _TrtStages:
    """Per-slot pinned host buffers and device buffers, and the enqueued work of each stage
    (:class:`splinecam.engines.cuda_pipeline.PipelineStages`).

    Buffers are allocated for the stream that writes them (kp stream: input, preprocessed image,
    keypoints, background motion; generator stream: TPS feeds, prediction, output frame). Buffers read
    on the other stream — the background motion, the avatar's source tensors (made on the runner's
    own stream) — are ``keep_alive``-d (``record_stream``) for it.
    """

    def __init__(self, runner: TensorRTGraphs, host_step, background: bool):
        self.r, self.host_step, self.background = runner, host_step, background

    def bind(self, device: StreamDevice, kp_stream: Stream, gen_stream: Stream, depth: int) -> None:
        import torch

        self.device, self.kp_stream, self.gen_stream = device, kp_stream, gen_stream
        cfg, eng = self.r.config, self.r.engines
        s = cfg.image_size
        self.torch = torch
        self.h_in = [device.pinned_tensor((s, s, 3), torch.uint8) for _ in range(depth)]
        self.h_kp = [device.pinned_tensor(*eng["keypoints"].outputs["kp"]) for _ in range(depth)]
        self.h_out = [device.pinned_tensor((s, s, 3), torch.uint8) for _ in range(depth)]
        from splinecam.engines.family import family_of

        # the model family's per-frame feeds (TPSMM: TPS parameters; FOMM: jacobians), bg_param bound apart
        feeds = tuple(n for n in family_of(cfg).host().FRAME_INPUTS if n != "bg_param")
        gen_inputs = eng["generator"].inputs
        self.h_gen = [{n: device.pinned_tensor(*gen_inputs[n]) for n in feeds} for _ in range(depth)]
        self.d_in = [device.empty((s, s, 3), torch.uint8, kp_stream) for _ in range(depth)]
        self.d_img = [device.empty(*eng["keypoints"].inputs["image"], kp_stream) for _ in range(depth)]
        self.d_kp = [eng["keypoints"].new_outputs(device, kp_stream) for _ in range(depth)]
        self.d_bg = []
        if self.background:
            self.d_bg = [eng["background"].new_outputs(device, kp_stream)["bg_param"] for _ in range(depth)]
            for t in self.d_bg:
                device.keep_alive(t, gen_stream)  # written on the kp stream, read by the generator
        self.d_gen = [{n: device.empty(*gen_inputs[n], gen_stream) for n in feeds} for _ in range(depth)]
        self.d_pred = [eng["generator"].new_outputs(device, gen_stream) for _ in range(depth)]
        self.d_frame = [device.empty((s, s, 3), torch.uint8, gen_stream) for _ in range(depth)]
        self.identity = None  # FOMM's generator has no background input
        if "bg_param" in gen_inputs:
            self.identity = device.empty(*gen_inputs["bg_param"], gen_stream)
            # a blocking copy from pageable memory: complete when it returns, before any stream reads it
            self.identity.copy_(torch.eye(3, dtype=self.identity.dtype).view(self.identity.shape))
        self.slot_source: list[Any] = [None] * depth
        self.slot_bg: list[bool] = [False] * depth

    def host_input(self, slot: int) -> np.ndarray:
        return self.h_in[slot].numpy()

    def enqueue_upload(self, slot: int) -> None:
        self.d_in[slot].copy_(self.h_in[slot], non_blocking=True)
        # (S,S,3) uint8 → (1,3,S,S) float32 in [0,1]: x / 255 in float32, as image_to_nchw computes it
        self.torch.div(self.d_in[slot].permute(2, 0, 1).unsqueeze(0), 255.0, out=self.d_img[slot])

    def enqueue_keypoints(self, slot: int, source: Any) -> None:
        if self.background and source is None:
            raise EngineCacheError("the background graph needs the avatar: pass its SourceState with the frame")
        eng = self.r.engines
        eng["keypoints"].enqueue({"image": self.d_img[slot], **self.d_kp[slot]}, self.kp_stream)
        self.h_kp[slot].copy_(self.d_kp[slot]["kp"], non_blocking=True)
        if self.background:
            src = _bound(source, {})["source"]
            self.device.keep_alive(src, self.kp_stream)
            eng["background"].enqueue({"source": src, "driving": self.d_img[slot], "bg_param": self.d_bg[slot]},
                                      self.kp_stream)

    def host_keypoints(self, slot: int) -> np.ndarray:
        return self.h_kp[slot][0].float().numpy()

    def solve(self, slot: int, kp: np.ndarray, source: Any, from_frame: bool) -> None:
        if source is None:
            raise EngineCacheError("the generator needs the avatar: pass its SourceState with the frame")
        feeds = self.host_step(source, kp)
        for name, host in self.h_gen[slot].items():
            host.copy_(self.torch.from_numpy(np.ascontiguousarray(feeds[name])).view(host.shape))
        self.slot_source[slot] = source
        self.slot_bg[slot] = self.background and from_frame

    def enqueue_generator(self, slot: int) -> None:
        d_gen = self.d_gen[slot]
        for name, host in self.h_gen[slot].items():
            d_gen[name].copy_(host, non_blocking=True)
        source = _bound(self.slot_source[slot], d_gen)
        for t in source.values():
            self.device.keep_alive(t, self.gen_stream)  # made on the runner's stream, read on this one
        bg = self.d_bg[slot] if self.slot_bg[slot] else self.identity
        pred = self.d_pred[slot]
        extra = {} if self.identity is None else {"bg_param": bg}
        self.r.engines["generator"].enqueue({**source, **d_gen, **extra, **pred}, self.gen_stream)
        # (1,3,S,S) float in [0,1] → (S,S,3) uint8, as nchw_to_image computes it (×255, round half even, clip)
        frame = self.torch.round(pred["prediction"][0].float() * 255.0).clamp_(0, 255).permute(1, 2, 0)
        self.d_frame[slot].copy_(frame)
        self.h_out[slot].copy_(self.d_frame[slot], non_blocking=True)

    def host_output(self, slot: int) -> np.ndarray:
        return self.h_out[slot].numpy()

    def close(self) -> None:
        for eng in self.r.engines.values():
            eng.release(self.kp_stream)
            eng.release(self.gen_stream)
        for name in ("h_in", "h_kp", "h_out", "h_gen", "d_in", "d_img", "d_kp", "d_bg", "d_gen", "d_pred", "d_frame"):
            setattr(self, name, [])
        self.slot_source = []
