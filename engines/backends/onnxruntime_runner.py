"""ONNX Runtime graph runner: the exported graphs on the CPU execution provider (CUDA EP where present).

Graphs come from an export directory (``splinecam export --out DIR``, passed as ``onnx_dir``) or,
by default, from the cache (:func:`ensure_export`), exported on first use. Every tensor is fed and
read by its manifest name. The source encoder graph computes the cached avatar tensors, so switching
avatars runs one graph and rebuilds nothing.

Precisions: ``fp32`` (CPU and CUDA). ``fp16`` runs the fp16 graphs — meant for the CUDA EP; on the
CPU EP it works but is slower than fp32 (x86 MLAS has few float16 kernels, so ONNX Runtime inserts
casts). ``bf16`` does not exist in ONNX Runtime's CPU EP. ``int8`` (CPU) runs the QDQ-quantized per-frame
graphs (:mod:`splinecam.engines.export.quantize`); the runner reads ONNX Runtime's own optimised graph
and refuses to start when no int8 kernel (``QLinearConv`` …) is in it, so an int8 row never runs fp32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from splinecam.engines.backends.base import ManifestGraphs
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.errors import CheckpointError, EngineCacheError
from splinecam.engines.loaded_model import LoadedModel


def ort_providers(device: str) -> list[str]:
    """Execution providers for a device (the registry has checked that they exist)."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def ensure_export(loaded: LoadedModel, precision: str, onnx_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None, calibration: str | Path | None = None):
    """The export directory and manifest for ``loaded`` at ``precision``, exporting into the cache if needed.

    The cached fp32 export is a verified cache entry (engines/cache_store.py): its seal's key and per-file
    sha256 are checked before every use, and a missing, partial, stale or damaged export is rebuilt with
    one line saying why (an unwritable cache builds in a temporary folder, with a warning). An explicit
    ``onnx_dir`` (``splinecam export --out DIR``) must hold an export of this very model (model hash) at
    this precision, whose graphs match the manifest's sha256: otherwise EngineCacheError (it is never
    silently used, nor rebuilt: it is the user's). The bundled model's fp32 graphs ship with the package
    (``loaded.shipped_export``): used as they are (checked the same way), nothing is exported. fp16 graphs
    are converted from the fp32 ones and int8 graphs quantized from them (calibrated on ``calibration``, a
    video; None: the bundled clip): neither needs torch where the fp32 graphs ship; a cached one whose
    graphs no longer match its manifest's sha256 is made again.
    """
    from splinecam.engines.engine_cache import onnx_export_entry
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
        manifest.verify(directory, required_graphs(loaded))
        return directory, manifest
    if precision in ("fp16", "int8"):  # made from the fp32 graphs (shipped, cached or exported now)
        fp32_dir, fp32_manifest = ensure_export(loaded, "fp32", progress=progress)
        if precision == "fp16":
            return ensure_fp16_export(fp32_dir, fp32_manifest, progress)
        return ensure_int8_export(loaded, fp32_dir, fp32_manifest, calibration, progress)
    if loaded.model is None:
        raise CheckpointError(f"{precision} graphs of this model need exporting, which needs PyTorch: "
                              f"pip install 'splinecam[torch]' (or use --precision fp32, whose graphs ship)")
    from splinecam.engines.export.onnx_export import export_onnx
    from splinecam.engines.export.graph_checks import DEFAULT_OPSET

    say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
    entry = onnx_export_entry(loaded.model_hash, precision, DEFAULT_OPSET)
    directory = entry.ensure(lambda d: export_onnx(loaded, d, precision, progress=say), say)
    manifest = Manifest.read(directory)
    manifest.verify(directory, required_graphs(loaded), check_hashes=False)  # the seal has just checked every byte
    return directory, manifest


def required_graphs(loaded: LoadedModel) -> tuple[str, ...]:
    """The graphs every export of ``loaded`` holds (landmark-keypoint configs have no keypoints network)."""
    landmarks = getattr(loaded.config, "landmark_keypoints", False)
    return ("source_encoder", "generator") if landmarks else ("keypoints", "source_encoder", "generator")


def _cached(directory: Path, model_hash: str, precision: str, say: Callable[[str], None] | None = None):
    """The manifest of a usable derived (fp16 / int8) export in ``directory``, else None (made again): of this
    model and precision, every graph present and matching its manifest's sha256."""
    from splinecam.engines.export.manifest import Manifest

    try:
        manifest = Manifest.read(directory)
        if manifest.model_hash != model_hash or manifest.precision != precision:
            return None
        manifest.verify(directory, ("source_encoder", "generator"))
    except EngineCacheError as err:
        if directory.exists() and say is not None:
            say(f"the cached {precision} export is not usable ({err}); making it again")
        return None
    return manifest


def ensure_fp16_export(fp32_dir: Path, fp32_manifest, progress: Callable[[str], None] | None = None):
    """The cached fp16 export converted from an fp32 export (seconds; keyed by the fp32 graphs and the converter)."""
    from splinecam.engines.export.fp16 import convert_export, fp16_export_dir

    directory = fp16_export_dir(fp32_manifest)
    say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
    manifest = _cached(directory, fp32_manifest.model_hash, "fp16", say)
    if manifest is not None:
        return directory, manifest
    say(f"converting the fp32 graphs to fp16 once into {directory}")
    return directory, convert_export(fp32_dir, directory, progress=say)


def ensure_int8_export(loaded: LoadedModel, fp32_dir: Path, fp32_manifest, calibration: str | Path | None = None,
                       progress: Callable[[str], None] | None = None):
    """The cached int8 export for ``loaded`` and this calibration, quantized once (a minute or so) from the fp32
    graphs, with calibration inputs made by the fp32 model runner (ONNX Runtime) from the calibration frames."""
    from splinecam.engines.backends.base import Backend
    from splinecam.engines.export.quantize import Calibration, calibration_feeds, int8_export_dir, write_int8_export

    cal = Calibration.from_video(calibration)
    directory = int8_export_dir(fp32_manifest, cal.key())
    say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
    manifest = _cached(directory, loaded.model_hash, "int8", say)
    if manifest is not None:
        return directory, manifest
    say(f"calibrating int8 once on {cal.describe()} into {directory}")
    fp32 = Backend.for_model(loaded, OnnxRuntimeGraphs(loaded, "cpu", "fp32", BackendOptions(onnx_dir=fp32_dir)))
    try:
        feeds = calibration_feeds(fp32, cal)
    finally:
        fp32.close()
    return directory, write_int8_export(fp32_dir, directory, feeds, cal, progress=say)


def int8_export_ready(loaded: LoadedModel, calibration: str | Path | None = None) -> bool:
    """Whether ``loaded``'s int8 graphs for this calibration are already cached (building them calibrates and
    quantizes: a minute or more). Never exports or quantizes anything."""
    from splinecam.engines.engine_cache import onnx_export_dir
    from splinecam.engines.export.graph_checks import DEFAULT_OPSET
    from splinecam.engines.export.quantize import Calibration, int8_export_dir

    try:
        if loaded.shipped_export is not None:
            fp32_dir = Path(loaded.shipped_export)
        else:
            fp32_dir = onnx_export_dir(loaded.model_hash, "fp32", DEFAULT_OPSET)
        fp32 = _cached(fp32_dir, loaded.model_hash, "fp32")
        if fp32 is None:
            return False
        return _cached(int8_export_dir(fp32, Calibration.from_video(calibration).key()), loaded.model_hash,
                       "int8") is not None
    except Exception:  # no torch for the export key, a missing calibration file …: not ready
        return False


def session_options(options: BackendOptions):
    """(SessionOptions, disabled optimizer names) for CPU/CUDA sessions, from ``options.threads`` / ``options.ort``."""
    import onnxruntime as ort

    tuning = options.ort
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    if tuning.graph_optimization not in levels:
        raise ValueError(f"ONNX Runtime graph optimisation {tuning.graph_optimization!r}: one of {', '.join(levels)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[tuning.graph_optimization]
    opts.intra_op_num_threads = options.threads or default_threads()
    opts.inter_op_num_threads = max(1, tuning.inter_op_threads)
    opts.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if tuning.inter_op_threads > 1
                           else ort.ExecutionMode.ORT_SEQUENTIAL)
    opts.enable_mem_pattern = tuning.memory_pattern
    opts.enable_cpu_mem_arena = tuning.cpu_arena
    opts.log_severity_level = 3
    # no busy-waiting between runs by default: on a small CPU ORT's spinning threads starve the capture,
    # face-tracking and compositing threads (and any torch work) of cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if tuning.spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if tuning.spinning else "0")
    return opts, ([] if tuning.nchwc else ["NchwcTransformer"])


def default_threads() -> int:
    try:
        import torch

        return max(1, torch.get_num_threads())
    except Exception:  # pragma: no cover - torch is optional for this runner
        return max(1, os.cpu_count() or 1)


class OnnxRuntimeGraphs(ManifestGraphs):
    engine = "onnxruntime"

    def __init__(self, loaded: LoadedModel, device: str, precision: str, options: BackendOptions):
        import onnxruntime as ort

        self.device, self.precision = device, precision
        self.providers = ort_providers(device)
        self.options = options.ort
        self.export_dir, self.manifest = ensure_export(loaded, precision, options.onnx_dir, options.progress,
                                                       options.calibration)
        self.sessions = {}
        #: int8 only: graph → int8 operators (and float convolutions left) in ONNX Runtime's optimised graph
        self.int8_kernels: dict[str, dict[str, int]] = {}
        quantized = _quantized_graphs(self.export_dir, self.manifest) if precision == "int8" else set()
        for name in self.manifest.graphs:
            path = self.manifest.graph_path(self.export_dir, name)
            opts, disabled = session_options(options)
            if name in quantized:
                self.sessions[name], self.int8_kernels[name] = _int8_session(path, opts, disabled, self.providers)
            else:
                self.sessions[name] = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers,
                                                           disabled_optimizers=disabled)
        self._dtypes = {name: {t.name: np.dtype(t.dtype) for t in g.inputs}
                        for name, g in self.manifest.graphs.items()}

    def describe(self) -> str:
        base = super().describe()
        if self.int8_kernels:
            base += " (" + "; ".join(f"{g}: " + ", ".join(f"{n} {op}" for op, n in sorted(k.items()))
                                     for g, k in self.int8_kernels.items()) + ")"
        return base

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph: feeds and results by name (feeds cast to the graph's input dtypes)."""
        dtypes = self._dtypes[graph]
        feeds = {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in feeds.items() if k in dtypes}
        names = [o.name for o in self.manifest.graphs[graph].outputs]
        return dict(zip(names, self.sessions[graph].run(names, feeds)))

    def has_graph(self, graph: str) -> bool:
        return graph in self.sessions

    def close(self) -> None:
        self.sessions.clear()


def _quantized_graphs(directory: Path, manifest) -> set[str]:
    """The graphs of an int8 export that were quantized (its ``int8.json``); EngineCacheError without one."""
    from splinecam.engines.export.quantize import Int8Record

    record = Int8Record.read(directory)
    if not record.quantized:
        raise EngineCacheError(f"{directory}: an int8 export without quantized graphs: quantize again")
    return set(record.quantized) & set(manifest.graphs)


def _int8_session(path: Path, opts, disabled: list[str], providers: list[str]):
    """A session on a quantized graph and the int8 operators of the graph it actually runs (ONNX Runtime's
    optimised graph, written once to a temporary file). Raises BackendUnavailableError when ONNX Runtime
    fused none of the QDQ pairs into int8 kernels: that graph would run in floating point."""
    import tempfile

    import onnxruntime as ort

    from splinecam.engines.errors import BackendUnavailableError
    from splinecam.engines.export.quantize import count_ort_int8

    with tempfile.TemporaryDirectory(prefix="splinecam-ort-opt-") as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers,
                                       disabled_optimizers=disabled)
        kernels = count_ort_int8(opts.optimized_model_filepath)
    if not any(n for op, n in kernels.items() if op != "float Conv"):
        raise BackendUnavailableError(f"--precision int8: ONNX Runtime runs no int8 kernel for {path.name} here "
                                      f"(its optimised graph has {kernels.get('float Conv', 0)} float convolutions "
                                      f"and no QLinearConv): not run as int8")
    return session, kernels
