"""torch → ONNX (static shapes, TensorRT's operator table) → TensorRT plans.

    manifest = export_onnx(loaded, out_dir, precision="fp32")   # engines.export.onnx_export
    report   = inspect_graph(out_dir / "generator.onnx")         # engines.export.graph_checks

The graphs and their I/O contracts are described in :mod:`splinecam.engines.export.graphs`; the manifest in
:mod:`splinecam.engines.export.manifest`; plans and their cache in :mod:`splinecam.engines.engine_cache` and
:mod:`splinecam.engines.backends.tensorrt_runner`. :mod:`splinecam.engines.backends.torch_compiled` is the other
compiled form: torch → inductor C++/oneDNN kernels (torch bf16 on CPU).
"""

from splinecam.engines.export.graph_checks import TENSORRT10_ONNX_OPS, GraphReport, inspect_graph
from splinecam.engines.export.graphs import GRAPH_NAMES, generator_input_names, source_tensor_names
from splinecam.engines.export.manifest import GraphInfo, Manifest, TensorInfo
from splinecam.engines.export.onnx_export import ExportError, export_onnx

__all__ = ["GRAPH_NAMES", "TENSORRT10_ONNX_OPS", "ExportError", "GraphInfo", "GraphReport", "Manifest",
           "TensorInfo", "export_onnx", "generator_input_names", "inspect_graph", "source_tensor_names"]
