"""ONNX Runtime graph runner: the exported graphs on the CPU execution provider (CUDA EP where present).

Graphs come from an export directory (``splinecam export --out DIR``, passed as ``onnx_dir``) or,
by default, from the cache (:func:`ensure_export`), exported on first use. Every tensor is fed and
read by its manifest name. The source encoder graph computes the cached avatar tensors, so switching
avatars runs one graph and rebuilds nothing.

Precisions: ``fp32`` (CPU and CUDA). ``fp16`` runs the fp16 graphs — meant for the CUDA EP; on the
CPU EP it works but is slower than fp32 (x86 MLAS has few float16 kernels, so ONNX Runtime inserts
casts). ``bf16`` does not exist in ONNX Runtime's CPU EP.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from splinecam.engines.backends.base import GraphRunner
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.errors import CheckpointError, EngineCacheError
from splinecam.engines.loaded_model import LoadedModel


def ort_providers(device: str) -> list[str]:
    """Execution providers for a device (the registry has checked that they exist)."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def ensure_export(loaded: LoadedModel, precision: str, onnx_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None):
    """The export directory and manifest for ``loaded`` at ``precision``, exporting into the cache if needed.

    An explicit ``onnx_dir`` must hold an export of this very model (model hash) at this precision:
    otherwise EngineCacheError (it is never silently used). The bundled model's fp32 graphs ship with
    the package (``loaded.shipped_export``): used as they are, nothing is exported.
    """
    from splinecam.engines.engine_cache import onnx_export_dir
    from splinecam.engines.export.manifest import Manifest

    if onnx_dir is None and precision == "fp32" and loaded.shipped_export is not None:
        onnx_dir = loaded.shipped_export
    if onnx_dir is not None:
        directory = Path(onnx_dir)
        manifest = Manifest.read(directory)
        if manifest.model_hash != loaded.model_hash:
            raise EngineCacheError(f"{directory} was exported from another model (hash {manifest.model_hash[:12]}…, "
                                   f"this one {loaded.model_hash[:12]}…): export this checkpoint again")
        if manifest.precision != precision:
            raise EngineCacheError(f"{directory} holds {manifest.precision} graphs, --precision {precision} was asked")
        return directory, manifest
    if loaded.model is None:
        raise CheckpointError(f"{precision} graphs of this model need exporting, which needs PyTorch: "
                              f"pip install 'splinecam[torch]' (or use --precision fp32, whose graphs ship)")
    from splinecam.engines.export.onnx_export import export_onnx
    from splinecam.engines.export.graph_checks import DEFAULT_OPSET

    directory = onnx_export_dir(loaded.model_hash, precision, DEFAULT_OPSET)
    try:
        manifest = Manifest.read(directory)
        if manifest.model_hash == loaded.model_hash and manifest.precision == precision:
            return directory, manifest
    except EngineCacheError:
        pass
    say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
    if precision == "fp16":  # converted from the (cached) fp32 graphs: seconds, no torch
        from splinecam.engines.export.fp16 import convert_export

        fp32_dir, _ = ensure_export(loaded, "fp32", progress=progress)
        say(f"converting the fp32 graphs to fp16 once into {directory}")
        return directory, convert_export(fp32_dir, directory, progress=say)
    say(f"exporting {precision} ONNX graphs once into {directory}")
    return directory, export_onnx(loaded, directory, precision, progress=say)


def default_threads() -> int:
    try:
        import torch

        return max(1, torch.get_num_threads())
    except Exception:  # pragma: no cover - torch is optional for this runner
        return max(1, os.cpu_count() or 1)


class OnnxRuntimeGraphs(GraphRunner):
    engine = "onnxruntime"

    def __init__(self, loaded: LoadedModel, device: str, precision: str, options: BackendOptions):
        import onnxruntime as ort

        self.device, self.precision = device, precision
        self.providers = ort_providers(device)
        self.export_dir, self.manifest = ensure_export(loaded, precision, options.onnx_dir, options.progress)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = options.threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between runs: on a small CPU ORT's spinning threads starve the capture,
        # face-tracking and compositing threads (and any torch work) of cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {}
        for name in self.manifest.graphs:
            path = self.manifest.graph_path(self.export_dir, name)
            self.sessions[name] = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
        self._dtypes = {name: {t.name: np.dtype(t.dtype) for t in g.inputs}
                        for name, g in self.manifest.graphs.items()}

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph: feeds and results by name (feeds cast to the graph's input dtypes)."""
        dtypes = self._dtypes[graph]
        feeds = {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in feeds.items() if k in dtypes}
        names = [o.name for o in self.manifest.graphs[graph].outputs]
        return dict(zip(names, self.sessions[graph].run(names, feeds)))

    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None):
        feeds = {"source": source} if kp_source is None else {"source": source, "kp_source_in": kp_source}
        out = self.run("source_encoder", feeds)
        return out.pop("kp_source"), out

    def keypoints(self, image: np.ndarray) -> np.ndarray:
        return self.run("keypoints", {"image": image})["kp"]

    def generate(self, source: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.run("generator", {**source, **feeds})["prediction"]

    def background(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray | None:
        if "background" not in self.sessions:
            return None
        return self.run("background", {"source": source, "driving": driving})["bg_param"]

    def close(self) -> None:
        self.sessions.clear()
