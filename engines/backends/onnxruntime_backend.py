"""ONNX Runtime backend: the exported graphs on the CPU execution provider (CUDA EP where present).

Graphs come from an export directory (``splinecam export --out DIR``, passed as ``onnx_dir``) or,
by default, from the cache (``splinecam.engines.engine_cache.onnx_export_dir``), exported on first use.
Every tensor is fed and read by its manifest name. The source encoder graph computes the cached
avatar tensors, so switching avatars runs one graph and rebuilds nothing. TPS systems are solved on
the host in float32; AVD runs in torch on the host (a few small matrix products).

Precisions: ``fp32`` (CPU and CUDA). ``fp16`` runs the fp16 graphs — meant for the CUDA EP; on the
CPU EP it works but is slower than fp32 (x86 MLAS has few float16 kernels, so ONNX Runtime inserts
casts). ``bf16`` does not exist in ONNX Runtime's CPU EP: use ``--backend torch --precision bf16``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from splinecam.engines.backends.base import Backend, SourceState
from splinecam.engines.errors import BackendUnavailableError, EngineCacheError
from splinecam.engines.tpsmm.checkpoint import LoadedModel

ORT_PRECISIONS = ("fp32", "fp16")


def ort_providers(device: str) -> list[str]:
    """Execution providers for a device, or BackendUnavailableError with one line."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError("--backend onnxruntime --device cuda: this onnxruntime has no CUDA execution "
                                          "provider (pip install onnxruntime-gpu) or no GPU; use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ensure_export(loaded: LoadedModel, precision: str, onnx_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None):
    """The export directory and manifest for ``loaded`` at ``precision``, exporting into the cache if needed.

    An explicit ``onnx_dir`` must hold an export of this very model (model hash) at this precision:
    otherwise EngineCacheError (it is never silently used).
    """
    from splinecam.engines.engine_cache import onnx_export_dir
    from splinecam.engines.export import Manifest, export_onnx
    from splinecam.engines.export.graph_checks import DEFAULT_OPSET

    if onnx_dir is not None:
        directory = Path(onnx_dir)
        manifest = Manifest.read(directory)
        if manifest.model_hash != loaded.model_hash:
            raise EngineCacheError(f"{directory} was exported from another model (hash {manifest.model_hash[:12]}…, "
                                   f"this one {loaded.model_hash[:12]}…): export this checkpoint again")
        if manifest.precision != precision:
            raise EngineCacheError(f"{directory} holds {manifest.precision} graphs, --precision {precision} was asked")
        return directory, manifest
    directory = onnx_export_dir(loaded.model_hash, precision, DEFAULT_OPSET)
    try:
        manifest = Manifest.read(directory)
        if manifest.model_hash == loaded.model_hash and manifest.precision == precision:
            return directory, manifest
    except EngineCacheError:
        pass
    say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
    say(f"exporting {precision} ONNX graphs once into {directory}")
    return directory, export_onnx(loaded, directory, precision, progress=say)


def image_to_nchw(image: np.ndarray) -> np.ndarray:
    """(S,S,3) uint8 RGB → (1,3,S,S) float32 in [0,1]."""
    return (np.ascontiguousarray(image.transpose(2, 0, 1))[None].astype(np.float32) / 255.0)


def nchw_to_image(pred: np.ndarray) -> np.ndarray:
    """(1,3,S,S) float in [0,1] → (S,S,3) uint8 RGB (rounded, clipped)."""
    return np.clip(np.rint(pred[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, loaded: LoadedModel, device: str = "cpu", precision: str = "fp32",
                 onnx_dir: str | Path | None = None, threads: int | None = None,
                 progress: Callable[[str], None] | None = None):
        super().__init__(loaded.config, device, precision, loaded.has_avd)
        if precision not in ORT_PRECISIONS:
            raise BackendUnavailableError(f"--backend onnxruntime --precision {precision}: ONNX Runtime has no "
                                          f"{precision} path here; use fp32 (or --backend torch --precision bf16)")
        import onnxruntime as ort

        self.providers = ort_providers(device)
        self.loaded = loaded
        self.has_bg = loaded.has_bg
        self.export_dir, self.manifest = ensure_export(loaded, precision, onnx_dir, progress)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or _default_threads()
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

    # ------------------------------------------------------------------ float-level API

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        dtypes = self._dtypes[graph]
        feeds = {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in feeds.items()}
        names = [o.name for o in self.manifest.graphs[graph].outputs]
        return dict(zip(names, session.run(names, feeds)))

    def encode_source(self, source: np.ndarray, image: np.ndarray | None = None) -> SourceState:
        """(1,3,S,S) float32 in [0,1] → SourceState; tensors: the generator's source inputs by name."""
        out = self._run("source_encoder", {"source": source})
        kp = out.pop("kp_source")
        if image is None:
            image = nchw_to_image(source)
        return SourceState(image=image, kp=kp[0].astype(np.float32), tensors=out)

    def keypoints_nchw(self, frame: np.ndarray) -> np.ndarray:
        """(1,3,S,S) float32 → (K,2) float32."""
        return self._run("keypoints", {"image": frame})["kp"][0]

    def predict(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        """(K,2) normalised driving keypoints [+ (3,3) background] → (1,3,S,S) float32 prediction."""
        import torch

        from splinecam.engines.tpsmm.geometry import solve_tps

        kp = np.asarray(kp_driving, np.float32).reshape(1, -1, 2)
        tps = solve_tps(torch.from_numpy(kp), torch.from_numpy(source.kp[None]), self.config.num_tps)
        bg = np.eye(3, dtype=np.float32) if bg_param is None else np.asarray(bg_param, np.float32)
        feeds = dict(source.tensors)
        feeds.update(kp_driving=kp, tps_theta=tps.theta.numpy(), tps_params=tps.control_params.numpy(),
                     bg_param=bg.reshape(1, 3, 3))
        return self._run("generator", feeds)["prediction"]

    # ------------------------------------------------------------------ Backend interface

    def prepare_source(self, image: np.ndarray) -> SourceState:
        with self.timer.time("prepare_source"):
            return self.encode_source(image_to_nchw(image), image)

    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        with self.timer.time("keypoints"):
            return self.keypoints_nchw(image_to_nchw(frame))

    def generate(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        with self.timer.time("generate"):
            return nchw_to_image(self.predict(source, kp_driving, bg_param))

    def background(self, source: SourceState, frame: np.ndarray) -> np.ndarray:
        if not self.has_bg or "background" not in self.sessions:
            return np.eye(3, dtype=np.float32)
        src = source.tensors.get("source_image")
        src = image_to_nchw(source.image) if src is None or src.dtype != np.float32 else src
        return self._run("background", {"source": src, "driving": image_to_nchw(frame)})["bg_param"][0]

    def close(self) -> None:
        self.sessions.clear()


def _default_threads() -> int:
    try:
        import torch

        return max(1, torch.get_num_threads())
    except Exception:  # pragma: no cover
        return max(1, os.cpu_count() or 1)
