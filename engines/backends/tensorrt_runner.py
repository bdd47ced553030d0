"""TensorRT graph runner (GPU): plans built from the exported ONNX graphs, run on torch CUDA tensors.

Targets TensorRT 10.12+ and 11.x alike, kept thin and conventional:

* strongly typed networks only — on 10.x the network is created with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11.x has no weak typing (and no
  ``BuilderFlag.FP16``), so precision is the exported graph's: ``fp16`` graphs (float32 islands
  for TPS grids and Gaussians) or ``fp32`` graphs;
* ``builder.build_serialized_network`` with a progress monitor; plans cached by
  :mod:`splinecam.engines.engine_cache` (GPU model / compute capability, TensorRT version, precision, model
  hash, ONNX checksum) — a stale or corrupt plan is rebuilt, never loaded;
* execution with ``set_tensor_address`` + ``execute_async_v3`` on a CUDA stream; every tensor is
  addressed by its name (from the manifest), never by position; device buffers are torch CUDA
  tensors (no extra CUDA Python dependency).

NOT RUN on the machines splinecam is developed on (no GPU, TensorRT not installable there): the
code path is exercised only by the tests marked ``tensorrt``, which are skipped without a GPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from splinecam.engines.backends.base import GraphRunner
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.engine_cache import PlanKey, PlanStatus, lookup_plan, plan_dir, store_plan
from splinecam.engines.errors import BackendUnavailableError, EngineCacheError
from splinecam.engines.tpsmm.checkpoint import LoadedModel

Progress = Callable[[str], None]
WORKSPACE_BYTES = 2 << 30


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


def plan_key(graph: str, model_hash: str, precision: str, onnx_sha256: str, device_index: int = 0) -> PlanKey:
    import tensorrt as trt

    name, cc = gpu_identity(device_index)
    return PlanKey(graph=graph, model_hash=model_hash, precision=precision, gpu_name=name, compute_capability=cc,
                   tensorrt_version=trt.__version__, onnx_sha256=onnx_sha256)


def _network_flags(trt) -> int:
    """STRONGLY_TYPED on 10.x; 11.x networks are always strongly typed (the flag may be gone)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_plan(onnx_path: str | Path, progress: Progress | None = None) -> bytes:
    """Parse an ONNX graph into a strongly typed network and build a serialized plan."""
    import tensorrt as trt

    say = progress or (lambda _m: None)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineCacheError(f"TensorRT could not parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
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
                 cache_dir: str | Path | None = None, progress: Progress | None = None) -> dict[str, bytes]:
    """Plans for every exported graph: loaded from the cache when VALID, otherwise (re)built and stored."""
    from splinecam.engines.backends.onnxruntime_runner import ensure_export

    require_tensorrt()
    say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
    directory, manifest = ensure_export(loaded, precision, onnx_dir, say)
    where = Path(cache_dir) if cache_dir else plan_dir()
    plans = {}
    for name, info in manifest.graphs.items():
        key = plan_key(name, loaded.model_hash, precision, info.sha256)
        status, reason, data = lookup_plan(key, where)
        if status is not PlanStatus.VALID:
            say(f"building TensorRT plan for {name} ({precision}; cached plan {status.value}: {reason}) …")
            data = build_plan(manifest.graph_path(directory, name), say)
            say(f"  stored {store_plan(key, data, where)}")
        plans[name] = data
    return plans


class TrtEngine:
    """One deserialized plan with its execution context; I/O tensors addressed by name."""

    def __init__(self, runtime, plan: bytes, name: str):
        import tensorrt as trt
        import torch

        self.name = name
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineCacheError(f"TensorRT could not load the {name} plan: delete the cache and build again")
        self.context = self.engine.create_execution_context()
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                  trt.int64: torch.int64, trt.uint8: torch.uint8}
        if hasattr(trt, "bfloat16"):
            dtypes[trt.bfloat16] = torch.bfloat16
        self.inputs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self.outputs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            spec = (tuple(self.engine.get_tensor_shape(tname)), dtypes[self.engine.get_tensor_dtype(tname)])
            is_input = self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs)[tname] = spec

    def new_outputs(self, device) -> dict:
        import torch

        return {n: torch.empty(shape, dtype=dt, device=device) for n, (shape, dt) in self.outputs.items()}

    def enqueue(self, tensors: dict, stream_handle: int) -> None:
        """Bind every I/O tensor by name and enqueue on the CUDA stream (no synchronisation)."""
        for tname in (*self.inputs, *self.outputs):
            t = tensors[tname]
            want_shape, want_dtype = (self.inputs.get(tname) or self.outputs[tname])
            if tuple(t.shape) != want_shape or t.dtype != want_dtype or not t.is_contiguous():
                raise EngineCacheError(f"{self.name}: tensor {tname} is {tuple(t.shape)} {t.dtype}, the plan expects "
                                       f"{want_shape} {want_dtype}")
            self.context.set_tensor_address(tname, t.data_ptr())
        if not self.context.execute_async_v3(stream_handle):
            raise EngineCacheError(f"TensorRT failed to run the {self.name} plan")


class TensorRTGraphs(GraphRunner):
    engine = "tensorrt"

    def __init__(self, loaded: LoadedModel, device: str, precision: str, options: BackendOptions):
        require_tensorrt()
        import tensorrt as trt
        import torch

        self.device, self.precision = device, precision
        self.config = loaded.config
        self.torch_device = torch.device("cuda")
        plans = ensure_plans(loaded, precision, options.onnx_dir, options.cache_dir, options.progress)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        self.engines = {name: TrtEngine(self.runtime, plan, name) for name, plan in plans.items()}
        self.stream = torch.cuda.Stream()
        self._kp_out = self.engines["keypoints"].new_outputs(self.torch_device)
        self._gen_out = self.engines["generator"].new_outputs(self.torch_device)

    def upload(self, array: np.ndarray):
        """A host float32 array as a contiguous CUDA tensor."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(self.torch_device).contiguous()

    def _run(self, graph: str, tensors: dict) -> None:
        self.engines[graph].enqueue(tensors, self.stream.cuda_stream)

    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None):
        import torch

        with torch.cuda.stream(self.stream):
            feeds = {"source": self.upload(source)}
            if kp_source is not None:
                feeds["kp_source_in"] = self.upload(kp_source)
            outputs = self.engines["source_encoder"].new_outputs(self.torch_device)  # new buffers per avatar
            self._run("source_encoder", {**feeds, **outputs})
        self.stream.synchronize()
        kp = outputs.pop("kp_source")
        return kp.float().cpu().numpy(), outputs

    def keypoints(self, image: np.ndarray) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            self._run("keypoints", {"image": self.upload(image), **self._kp_out})
            kp = self._kp_out["kp"].to("cpu", non_blocking=False)
        return kp.numpy()

    def generate(self, source: dict, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            dev = {name: self.upload(value) for name, value in feeds.items()}
            self._run("generator", {**source, **dev, **self._gen_out})
            out = self._gen_out["prediction"].float().cpu()
        return out.numpy()

    def background(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray | None:
        import torch

        if "background" not in self.engines:
            return None
        with torch.cuda.stream(self.stream):
            out = self.engines["background"].new_outputs(self.torch_device)
            self._run("background", {"source": self.upload(source), "driving": self.upload(driving), **out})
            bg = out["bg_param"].cpu()
        return bg.numpy()

    def overlapped(self, source, normalise: Callable[[np.ndarray], np.ndarray] | None = None, depth: int = 2):
        """An :class:`splinecam.engines.cuda_pipeline.OverlappedPipeline` for this avatar (a SourceState):
        keypoints of frame N+1 overlap the generator of frame N. ``normalise`` maps driving keypoints
        (K,2) to the generator's (relative / avd …) on the host; identity when None."""
        from splinecam.engines.cuda_pipeline import CudaStreamDevice, OverlappedPipeline

        device = CudaStreamDevice()
        return OverlappedPipeline(device, _TrtStages(self, source, normalise, depth), depth)

    def close(self) -> None:
        self.engines.clear()


class _TrtStages:
    """Per-slot pinned host buffers and device buffers, and the enqueued work of each stage."""

    def __init__(self, backend: "TensorRTGraphs", source, normalise, depth: int):
        import torch

        self.b, self.source, self.normalise = backend, source, normalise
        cfg = backend.config
        s, k, t = cfg.image_size, cfg.num_kp, cfg.num_tps
        dev = backend.torch_device

        def pinned(shape, dtype):
            return [torch.zeros(shape, dtype=dtype).pin_memory() for _ in range(depth)]

        self.h_in, self.h_kp, self.h_out = pinned((s, s, 3), torch.uint8), pinned((1, k, 2), torch.float32), \
            pinned((s, s, 3), torch.uint8)
        self.h_gen = [{"kp_driving": torch.zeros(1, k, 2).pin_memory(), "tps_theta": torch.zeros(1, t, 2, 3).pin_memory(),
                       "tps_params": torch.zeros(1, t, 5, 2).pin_memory(),
                       "bg_param": torch.eye(3).view(1, 3, 3).pin_memory()} for _ in range(depth)]
        self.d_in = [torch.empty(s, s, 3, dtype=torch.uint8, device=dev) for _ in range(depth)]
        self.d_img = [torch.empty(1, 3, s, s, device=dev) for _ in range(depth)]
        self.d_kp = [backend.engines["keypoints"].new_outputs(dev) for _ in range(depth)]
        self.d_gen = [{n: torch.empty_like(v, device=dev) for n, v in h.items()} for h in self.h_gen]
        self.d_pred = [backend.engines["generator"].new_outputs(dev) for _ in range(depth)]

    @staticmethod
    def _stream_handle() -> int:
        import torch

        return torch.cuda.current_stream().cuda_stream

    def host_input(self, slot: int) -> np.ndarray:
        return self.h_in[slot].numpy()

    def enqueue_upload(self, slot: int) -> None:
        self.d_in[slot].copy_(self.h_in[slot], non_blocking=True)
        self.d_img[slot].copy_(self.d_in[slot].permute(2, 0, 1).unsqueeze(0).float().div_(255.0))

    def enqueue_keypoints(self, slot: int) -> None:
        self.b.engines["keypoints"].enqueue({"image": self.d_img[slot], **self.d_kp[slot]}, self._stream_handle())
        self.h_kp[slot].copy_(self.d_kp[slot]["kp"], non_blocking=True)

    def host_keypoints(self, slot: int) -> np.ndarray:
        return self.h_kp[slot][0].numpy()

    def solve(self, slot: int, kp: np.ndarray) -> None:
        import torch

        from splinecam.engines.tpsmm.host import generator_feeds

        kp_n = np.asarray(self.normalise(kp) if self.normalise else kp, np.float32)
        feeds = generator_feeds(self.b.config, kp_n, self.source.kp)
        h = self.h_gen[slot]
        for name in ("kp_driving", "tps_theta", "tps_params"):
            h[name].copy_(torch.from_numpy(feeds[name]))

    def enqueue_generator(self, slot: int) -> None:
        for name, host in self.h_gen[slot].items():
            self.d_gen[slot][name].copy_(host, non_blocking=True)
        pred = self.d_pred[slot]
        self.b.engines["generator"].enqueue({**self.source.tensors, **self.d_gen[slot], **pred}, self._stream_handle())
        frame = pred["prediction"][0].clamp(0, 1).mul(255).round().to(torch_uint8()).permute(1, 2, 0).contiguous()
        self.h_out[slot].copy_(frame, non_blocking=True)

    def host_output(self, slot: int) -> np.ndarray:
        return self.h_out[slot].numpy()


def torch_uint8():
    import torch

    return torch.uint8
