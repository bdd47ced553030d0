"""torch → ONNX: the four graphs of one model at one precision, static shapes, plus the manifest.

Uses torch's TorchScript-based exporter (``dynamo=False``): it needs no onnxscript, keeps the
module-path node names that make a graph readable, and produces plain default-domain operators.
Each graph is checked (:func:`splinecam.engines.export.graph_checks.inspect_graph`) before the manifest is
written, so a directory with a manifest holds a complete, TensorRT-parsable export.
"""

from __future__ import annotations

import io
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Callable

import onnx
import torch

from splinecam.engines.errors import SplinecamError
from splinecam.engines.export.graph_checks import DEFAULT_OPSET, inspect_graph
from splinecam.engines.export.graphs import EXPORT_DTYPES, model_in_dtype
from splinecam.engines.export.manifest import GraphInfo, Manifest, TensorInfo, file_sha256
from splinecam.engines.family import family_of
from splinecam.engines.loaded_model import LoadedModel
from splinecam.engines.versions import installed_version

Progress = Callable[[str], None]

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


class ExportError(SplinecamError):
    """An exported graph failed its checks (operator, opset or shape)."""


def _tensor_infos(names: list[str], tensors) -> list[TensorInfo]:
    return [TensorInfo(n, tuple(int(d) for d in t.shape), _DTYPE_NAMES[t.dtype]) for n, t in zip(names, tensors)]


def _fold_in_place(path: Path) -> list[TensorInfo]:
    """Fold constants, store shape-inferred, and return the graph outputs (name, shape, dtype)."""
    import onnx

    from splinecam.engines.export.onnx_fold import fold_constants

    model = onnx.shape_inference.infer_shapes(fold_constants(onnx.load(str(path))))
    onnx.save(model, str(path))
    outputs = []
    for value in model.graph.output:
        tt = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        outputs.append(TensorInfo(value.name, tuple(int(d.dim_value) for d in tt.shape.dim), dtype))
    return outputs


def export_onnx(loaded: LoadedModel, out_dir: str | Path, precision: str = "fp32", opset: int = DEFAULT_OPSET,
                progress: Progress | None = None, with_background: bool = True, trace_fp16: bool = False) -> Manifest:
    """Export keypoints / source_encoder / generator [/ background] to ``out_dir`` and write the manifest.

    The graphs are the model family's (:mod:`splinecam.engines.export.graphs` for TPSMM,
    :mod:`splinecam.engines.export.fomm_graphs` for FOMM).

    precision: ``fp32`` or ``fp16`` (fp16 convolutional networks, float32 geometry and I/O; see
    :mod:`splinecam.engines.export.graphs`). fp16 graphs are converted from the fp32 ones
    (:mod:`splinecam.engines.export.fp16`, seconds, no torch fp16 arithmetic); ``trace_fp16`` traces the
    half-precision model instead (minutes on CPUs without fp16 arithmetic; the reference the conversion
    is tested against). Returns the manifest (also written as ``manifest.json``). Raises
    :class:`ExportError` if a graph fails its TensorRT checks.
    """
    if precision not in EXPORT_DTYPES:
        raise ExportError(f"--precision {precision}: ONNX export supports {', '.join(EXPORT_DTYPES)} "
                          f"(bf16 runs in torch on CPU only)")
    say = progress or (lambda _msg: None)
    if precision == "fp16" and not trace_fp16:
        import tempfile

        from splinecam.engines.export.fp16 import convert_export

        with tempfile.TemporaryDirectory(prefix="splinecam-fp32-") as tmp:
            export_onnx(loaded, tmp, "fp32", opset, say, with_background)
            return convert_export(tmp, out_dir, say)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = out / "manifest.json"
    if stale.exists():
        stale.unlink()  # the manifest marks a complete export: drop it until this one is done
    model = model_in_dtype(loaded, precision)
    family = family_of(loaded)
    specs = family.graphs().graph_specs(model, precision, with_background)
    manifest = Manifest(model_hash=loaded.model_hash, config_name=loaded.config.name,
                        image_size=loaded.config.image_size, num_kp=loaded.config.num_kp,
                        num_tps=getattr(loaded.config, "num_tps", 0), precision=precision, opset=opset,
                        splinecam_version=installed_version(), torch_version=torch.__version__,
                        family=family.name)
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        say(f"[{i}/{len(specs)}] exporting {spec.name} ({precision}, opset {opset}) …")
        path = out / f"{spec.name}.onnx"
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(spec.module, spec.example_inputs, str(path), dynamo=False, opset_version=opset,
                              input_names=spec.input_names, output_names=spec.output_names,
                              do_constant_folding=True)
        outputs = _fold_in_place(path)
        report = inspect_graph(path)
        if not report.ok:
            raise ExportError(f"{path}: {report.problems[0]} (and {len(report.problems) - 1} more problems)"
                              if len(report.problems) > 1 else f"{path}: {report.problems[0]}")
        kept = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
        inputs = [t for t in _tensor_infos(spec.input_names, spec.example_inputs) if t.name in kept]  # unused ones
        manifest.graphs[spec.name] = GraphInfo(name=spec.name, file=path.name, sha256=file_sha256(path),
                                               inputs=inputs, outputs=outputs)  # are pruned by the exporter
        say(f"      {spec.name}.onnx: {path.stat().st_size / 1e6:.1f} MB, {sum(report.ops.values())} nodes, "
            f"{time.perf_counter() - t0:.1f} s")
    manifest.write(out)
    return manifest
