"""torch → ONNX (static shapes, TensorRT's operator table) → TensorRT plans.

    manifest = export_onnx(loaded, out_dir, precision="fp32")   # engines.export.onnx_export
    report   = inspect_graph(out_dir / "generator.onnx")         # engines.export.graph_checks

The graphs and their I/O contracts are described in :mod:`splinecam.engines.export.graphs` (TPSMM) and
:mod:`splinecam.engines.export.fomm_graphs` (FOMM: the same three contracts, no background); the manifest in
:mod:`splinecam.engines.export.manifest`; plans and their cache in :mod:`splinecam.engines.engine_cache` and
:mod:`splinecam.engines.backends.tensorrt_runner`. :mod:`splinecam.engines.backends.torch_compiled` is the other
compiled form: torch → inductor C++/oneDNN kernels (torch bf16 on CPU).
"""
