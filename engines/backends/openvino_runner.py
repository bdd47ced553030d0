"""OpenVINO graph runner: the exported ONNX graphs compiled by OpenVINO for the CPU or an Intel GPU.

Devices: ``cpu`` (OpenVINO's CPU plugin, oneDNN JIT kernels chosen for the CPU it finds) and
``intel-gpu`` (the GPU plugin: the integrated graphics of most Intel laptops; NOT RUN here — no Intel
GPU on the machines splinecam is developed on, so only its device check is tested).

Precisions are set explicitly with OpenVINO's ``INFERENCE_PRECISION_HINT`` (its CPU plugin would
otherwise silently run bf16 on CPUs that have it): ``fp32`` = f32 everywhere; ``bf16`` = bf16 on CPUs
with AVX-512 bf16 / AMX; ``fp16`` = f16 on the Intel GPU; ``int8`` (CPU) = the QDQ-quantized export
(:mod:`splinecam.engines.export.quantize`, the same graphs ONNX Runtime's int8 runs), compiled with an f32
hint so that only the quantized convolutions run int8 — the runner reads the runtime precision of every
convolution in OpenVINO's execution graph and refuses to start when none runs on I8/U8 data. The graphs are the same fp32 ONNX export the
other engines use (:func:`~splinecam.engines.backends.onnxruntime_runner.ensure_export`); OpenVINO
lowers precision inside its own graph (keeping the TPS/Gaussian maths as the plugin decides — which is
why every reduced precision is measured against fp32 by ``splinecam bench``).

Compiled models are cached on disk (OpenVINO's ``CACHE_DIR``) in a directory keyed like the TensorRT
plans: device, OpenVINO version, precision, model hash (:func:`compiled_cache_dir`), so a cache made
for another device, runtime or model is never reused; the directory is a verified cache entry
(engines/cache_store.py: sealed with each blob's sha256, recompiled when damaged).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splinecam.engines.backends.base import ManifestGraphs
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.cache_store import CacheDir
from splinecam.engines.loaded_model import LoadedModel

#: splinecam device name → OpenVINO device name
OV_DEVICES = {"cpu": "CPU", "intel-gpu": "GPU"}
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def openvino_unavailable_reason(device: str = "cpu") -> str | None:
    """None when OpenVINO can run on ``device`` here, else a one-line reason."""
    try:
        import openvino as ov
    except ImportError:
        return "OpenVINO is not installed (pip install openvino)"
    if device == "intel-gpu" and "GPU" not in ov.Core().available_devices:
        return "OpenVINO sees no Intel GPU here (its GPU plugin needs Intel graphics and its driver)"
    return None


def compiled_cache_dir(model_hash: str, device: str, precision: str, root: Path | None = None) -> Path:
    """Where OpenVINO keeps this model's compiled blobs: keyed by device, OpenVINO version, precision, model."""
    import openvino as ov

    from splinecam.engines.engine_cache import cache_root

    version = ov.get_version().split("-")[0]
    return (root or cache_root()) / "openvino" / f"{model_hash[:16]}-{device}-{precision}-ov{version}"


class OpenVinoGraphs(ManifestGraphs):
    engine = "openvino"

    def __init__(self, loaded: LoadedModel, device: str, precision: str, options: BackendOptions):
        import openvino as ov

        from splinecam.engines.backends.onnxruntime_runner import default_threads, ensure_export

        self.device, self.precision = device, precision
        graphs = "int8" if precision == "int8" else "fp32"
        self.export_dir, self.manifest = ensure_export(loaded, graphs, options.onnx_dir, options.progress,
                                                       options.calibration)
        #: int8 only: graph → convolutions running int8 / float in OpenVINO's execution graph
        self.int8_kernels: dict[str, dict[str, int]] = {}
        quantized = set()
        if precision == "int8":
            from splinecam.engines.backends.onnxruntime_runner import _quantized_graphs

            quantized = _quantized_graphs(self.export_dir, self.manifest)
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]}
        if device == "cpu":
            config["INFERENCE_NUM_THREADS"] = options.threads or default_threads()
            config["ENABLE_CPU_PINNING"] = False  # the capture / tracking / encoding threads need the cores too
        self.compiled, self.requests, self._outputs = {}, {}, {}
        self._bound: dict[str, dict[str, np.ndarray]] = {}  # graph → input name → the array bound to it
        self._tensor = ov.Tensor

        def compile_all(cache: Path) -> None:
            for name in self.manifest.graphs:
                path = self.manifest.graph_path(self.export_dir, name)
                compiled = core.compile_model(str(path), OV_DEVICES[device], {**config, "CACHE_DIR": str(cache)})
                if name in quantized:
                    self.int8_kernels[name] = _int8_kernels(compiled, path)
                self.compiled[name] = compiled

        # the compiled blobs are a verified cache entry (engines/cache_store.py): sealed once compiled, checked
        # before every use, recompiled when damaged; an unwritable cache compiles into a temporary folder
        say = options.say
        entry = CacheDir(compiled_cache_dir(loaded.model_hash, device, precision),
                         key={"model_hash": loaded.model_hash, "device": device, "precision": precision,
                              "graphs": self.manifest.model_hash + ":" + graphs,
                              "openvino": ov.get_version()}, what="OpenVINO compiled-model cache")
        where = entry.ensure(compile_all, say)
        if not self.compiled:  # a valid cache: OpenVINO loads the blobs instead of compiling
            compile_all(where)
        for name, compiled in self.compiled.items():
            self.requests[name] = compiled.create_infer_request()
            wanted = [t.name for t in self.manifest.graphs[name].outputs]  # a port may carry several names
            self._outputs[name] = [(out, next(n for n in wanted if n in out.get_names())) for out in compiled.outputs]
        self._inputs = {name: {t.name for t in g.inputs} for name, g in self.manifest.graphs.items()}

    def describe(self) -> str:
        base = super().describe()
        if self.int8_kernels:
            base += " (" + "; ".join(f"{g}: " + ", ".join(f"{n} {op}" for op, n in k.items() if n)
                                     for g, k in self.int8_kernels.items()) + ")"
        return base

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph: float32 feeds by name → results by name (copied: OpenVINO reuses its buffers).

        Inputs are bound to the request as views of the callers' arrays (no copy). The generator's source
        inputs — the avatar and its cached features, ~2.5 MB at 256² — are the same arrays on every frame: an
        input whose array is the one already bound is not bound again (a view sees its contents as they are)."""
        wanted = self._inputs[graph]
        request = self.requests[graph]
        bound = self._bound.setdefault(graph, {})
        for k, v in feeds.items():
            if k not in wanted or bound.get(k) is v:
                continue
            a = np.ascontiguousarray(v, np.float32)
            request.set_tensor(k, self._tensor(a, shared_memory=True))
            bound[k] = v if a is v else a  # a copy is bound anew each call: it can never be ``v`` again
        request.infer()
        return {name: np.array(request.get_tensor(port).data) for port, name in self._outputs[graph]}

    def has_graph(self, graph: str) -> bool:
        return graph in self.requests

    def close(self) -> None:
        self._bound.clear()
        self.requests.clear()
        self.compiled.clear()


def _int8_kernels(compiled, path: Path) -> dict[str, int]:
    """Convolutions by runtime precision in the compiled model; BackendUnavailableError when none is int8."""
    from splinecam.engines.errors import BackendUnavailableError
    from splinecam.engines.export.quantize import openvino_int8_kernels

    kernels = openvino_int8_kernels(compiled)
    if not kernels["int8 Convolution"]:
        raise BackendUnavailableError(f"--precision int8: OpenVINO runs no convolution of {path.name} on int8 data "
                                      f"here ({kernels['float Convolution']} float convolutions): not run as int8")
    return kernels
