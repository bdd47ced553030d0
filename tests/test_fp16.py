"""fp16 graphs converted from the fp32 export (engines/export/fp16.py), not traced from a half-precision model:
float32 islands exactly where torch's fp16 trace puts them (node by node, on the official modules of
golden-small and on the light cpu-256 modules), no torch fp16 arithmetic on the way, the same outputs."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from splinecam.engines.export.graph_checks import inspect_graph
from splinecam.engines.export.onnx_export import export_onnx
from splinecam.engines.export.manifest import Manifest

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def dtype_by_computation(model) -> dict[str, set[int]]:
    """Each computation of a graph, named by what it computes (op, attributes, what its inputs compute,
    float casts looked through, float constants by shape) → the dtypes it produces. Two graphs that compute
    the same things have the same keys whatever their node names; the values say in which precision."""
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input,
                                                            *inferred.graph.output]}
    label: dict[str, str] = {i.name: "in:" + i.name for i in model.graph.input}

    def const(value: np.ndarray) -> str:
        exact = hashlib.md5(value.tobytes()).hexdigest()[:8] if value.dtype.kind in "iub" else ""
        return f"const{value.shape}{exact}"

    for init in model.graph.initializer:
        label[init.name] = const(numpy_helper.to_array(init))
    out: dict[str, set[int]] = collections.defaultdict(set)
    for node in model.graph.node:
        if node.op_type == "Cast" and node.attribute[0].i in (FLOAT, FLOAT16):
            label[node.output[0]] = label[node.input[0]]
            continue
        if node.op_type == "Constant":
            label[node.output[0]] = const(numpy_helper.to_array(node.attribute[0].t))
            continue
        attrs = sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute)
        key = hashlib.md5(repr((node.op_type, attrs, [label.get(i, "") for i in node.input])).encode()).hexdigest()
        for k, name in enumerate(node.output):
            label[name] = f"{node.op_type}:{key}:{k}"
            out[label[name]].add(elem.get(name))
    return out


def io_dtypes(model) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def assert_same_islands(traced_dir: Path, converted_dir: Path) -> None:
    traced, converted = Manifest.read(traced_dir), Manifest.read(converted_dir)
    assert set(traced.graphs) == set(converted.graphs)
    for name, info in traced.graphs.items():
        a = onnx.load(str(traced_dir / info.file))
        b = onnx.load(str(converted_dir / converted.graphs[name].file))
        assert io_dtypes(a) == io_dtypes(b), name
        da, db = dtype_by_computation(a), dtype_by_computation(b)
        assert set(da) == set(db), f"{name}: the converted graph computes other things than the fp16 trace"
        differ = [k.split(":")[0] for k in da if da[k] != db[k]]
        assert not differ, f"{name}: {len(differ)} computations in another precision than torch's fp16 trace: {differ[:5]}"
        kinds = collections.Counter(t for v in db.values() for t in v)
        assert kinds[FLOAT16] > 0, name
        assert [t.dtype for t in info.inputs] == [t.dtype for t in converted.graphs[name].inputs], name
        assert [t.dtype for t in info.outputs] == [t.dtype for t in converted.graphs[name].outputs], name


def test_fp16_export_runs_no_half_precision_torch(tmp_path, monkeypatch):
    """export_onnx(..., "fp16") never builds a half-precision torch model (it converts the fp32 graphs)."""
    import splinecam.engines.export.onnx_export as onnx_export
    from splinecam.engines.tpsmm.random_weights import perturbed_random_model

    real = onnx_export.model_in_dtype

    def fp32_only(loaded, precision):
        assert precision == "fp32", "a half-precision torch model was built for the fp16 export"
        return real(loaded, precision)

    monkeypatch.setattr(onnx_export, "model_in_dtype", fp32_only)
    manifest = export_onnx(perturbed_random_model("cpu-256"), tmp_path, "fp16")
    assert manifest.precision == "fp16"
    assert manifest.graphs["generator"].input("source_feat0").dtype == "float16"
    assert manifest.graphs["generator"].input("source_heat").dtype == "float32"
    for info in manifest.graphs.values():
        report = inspect_graph(tmp_path / info.file)
        assert report.ok and not report.dynamic, report.problems


def test_light_model_islands_match_the_torch_fp16_trace(tmp_path):
    """cpu-256's modules (landmark keypoints, light dense motion, warp-refine generator; border-padded warps)."""
    import onnxruntime as ort

    from splinecam.engines.tpsmm.random_weights import perturbed_random_model

    loaded = perturbed_random_model("cpu-256")
    export_onnx(loaded, tmp_path / "traced", "fp16", trace_fp16=True)
    export_onnx(loaded, tmp_path / "converted", "fp16")
    assert_same_islands(tmp_path / "traced", tmp_path / "converted")
    # and the same pictures: both fp16 generators on the same fp16 source tensors
    manifest = Manifest.read(tmp_path / "converted")
    info = manifest.graphs["generator"]
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.random(t.shape).astype(t.dtype) for t in info.inputs}
    if "bg_param" in feeds:
        feeds["bg_param"] = np.eye(3, dtype=np.float32)[None]
    feeds["tps_params"] *= 0.01
    feeds["tps_theta"] = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (1, info.input("tps_theta").shape[1], 1, 1))
    outs = [ort.InferenceSession(str(tmp_path / d / info.file), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            for d in ("traced", "converted")]
    assert np.abs(outs[0] - outs[1]).max() < 2e-2  # fp16 rounding of BatchNorm folded in fp16 vs in fp32


@pytest.mark.slow
def test_official_modules_islands_match_the_torch_fp16_trace(tmp_path, golden_model):
    """golden-small (the official TPSMM modules, vox-256's structure): every graph, node by node. Tracing the
    half-precision model takes a minute or two on a CPU without fp16 arithmetic."""
    export_onnx(golden_model, tmp_path / "traced", "fp16", trace_fp16=True)
    export_onnx(golden_model, tmp_path / "converted", "fp16")
    assert_same_islands(tmp_path / "traced", tmp_path / "converted")


def test_conversion_refuses_a_graph_it_does_not_understand():
    from onnx import helper

    from splinecam.engines.export.fp16 import Fp16ConversionError, convert_to_fp16

    body = helper.make_graph([], "body", [], [])
    x = helper.make_tensor_value_info("x", FLOAT, [1])
    cond = helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    graph = helper.make_graph([node], "g", [cond, x], [helper.make_tensor_value_info("y", FLOAT, [1])])
    with pytest.raises(Fp16ConversionError):
        convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
