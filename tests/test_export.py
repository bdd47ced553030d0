"""ONNX export: every graph, both precisions — onnx.checker, static shapes, opset 16–20, only the
operators TensorRT 10's parser imports (reference/tensorrt10-onnx-ops.txt), no Inverse, no custom
domain; the manifest; the ``export`` command (and its clean failure with --tensorrt here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from splinecam.engines.export.graph_checks import TENSORRT10_ONNX_OPS, inspect_graph
from splinecam.engines.export.graphs import GRAPH_NAMES
from splinecam.engines.export.manifest import Manifest
from splinecam.engines.export.onnx_export import export_onnx
from splinecam.engines.export.graph_checks import MAX_OPSET, MIN_OPSET

GOLDEN_CKPT = "checkpoint.pth.tar"


def golden_export(tmp_path_factory, golden_model, precision: str) -> Path:
    """The golden-small export at one precision, made once per test session by the ``export`` command
    (test_backends.py has the same helper and reuses the directory)."""
    from splinecam.cli import main

    out = tmp_path_factory.getbasetemp() / f"golden-export-{precision}"
    if not (out / "manifest.json").is_file():
        golden = Path(str(golden_model.path)).parent
        rc = main(["export", "--checkpoint", str(golden_model.path), "--config", str(golden / "config.yaml"),
                   "--out", str(out), "--precision", precision])
        assert rc == 0
    return out


def reference_ops(shared: Path) -> set[str]:
    lines = (shared / "reference" / "tensorrt10-onnx-ops.txt").read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def export_dir(request, tmp_path_factory, golden_model):
    return golden_export(tmp_path_factory, golden_model, request.param), request.param


def test_builtin_op_table_is_the_reference_list(shared):
    assert TENSORRT10_ONNX_OPS == reference_ops(shared)


def test_every_graph_fits_tensorrt(export_dir, shared):
    directory, precision = export_dir
    allowed = reference_ops(shared)
    manifest = Manifest.read(directory)
    assert set(manifest.graphs) == set(GRAPH_NAMES)  # golden-small has a background predictor
    for name in GRAPH_NAMES:
        path = directory / f"{name}.onnx"
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        report = inspect_graph(path, frozenset(allowed))
        assert report.ok, f"{precision}/{name}: {report.problems}"
        assert MIN_OPSET <= report.opset <= MAX_OPSET
        assert report.domains == ["ai.onnx"]
        assert "Inverse" not in report.ops
        assert set(report.ops) <= allowed, set(report.ops) - allowed
        assert not report.dynamic
        for node in model.graph.node:
            assert node.domain in ("", "ai.onnx"), node
        for value in [*model.graph.input, *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            assert dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), value.name


def test_manifest_describes_the_graphs(export_dir, golden_model):
    directory, precision = export_dir
    data = json.loads((directory / "manifest.json").read_text())
    for field in ("model_hash", "config_name", "opset", "splinecam_version", "precision", "graphs"):
        assert field in data
    manifest = Manifest.read(directory)
    assert manifest.model_hash == golden_model.model_hash
    assert manifest.precision == precision
    cfg = golden_model.config
    s, k, small = cfg.image_size, cfg.num_kp, int(cfg.image_size * cfg.dense_motion.scale_factor)
    kp = manifest.graphs["keypoints"]
    assert [(t.name, t.shape, t.dtype) for t in kp.inputs] == [("image", (1, 3, s, s), "float32")]
    assert [(t.name, t.shape, t.dtype) for t in kp.outputs] == [("kp", (1, k, 2), "float32")]
    gen = manifest.graphs["generator"]
    assert [t.name for t in gen.inputs][-4:] == ["kp_driving", "tps_theta", "tps_params", "bg_param"]
    assert gen.input("tps_theta").shape == (1, cfg.num_tps, 2, 3)
    assert gen.output("prediction").dtype == "float32"
    feat_dtype = "float16" if precision == "fp16" else "float32"
    assert gen.input("source_feat0").dtype == feat_dtype
    assert gen.input("source_heat").dtype == "float32"  # Gaussians stay float32 in every precision
    enc = manifest.graphs["source_encoder"]
    assert [t.name for t in enc.outputs][1:] == [t.name for t in gen.inputs][:-4]  # encoder feeds the generator
    assert enc.output("source_small").shape == (1, 3, small, small)
    for name, info in manifest.graphs.items():
        model = onnx.load(str(directory / info.file))
        assert [i.name for i in model.graph.input] == [t.name for t in info.inputs], name
        assert [o.name for o in model.graph.output] == [t.name for t in info.outputs], name


def test_fp16_graph_keeps_float32_islands(tmp_path_factory, golden_model):
    directory = golden_export(tmp_path_factory, golden_model, "fp16")
    model = onnx.load(str(directory / "generator.onnx"))
    types = {}
    for init in model.graph.initializer:
        types[init.data_type] = types.get(init.data_type, 0) + 1
    assert types.get(onnx.TensorProto.FLOAT16, 0) > 0  # network weights
    logs = [n for n in model.graph.node if n.op_type == "Log"]  # U(r) = r² log(r² + 1e-9)
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert logs and all(elem[n.output[0]] == onnx.TensorProto.FLOAT for n in logs)


def _elem_types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def test_fp16_keypoints_background_and_instance_norms_are_float32_islands(tmp_path_factory, golden_model):
    """Issue 19 items 4-5, on the exported fp16 ONNX: the keypoint head's regression, sigmoid and ·2−1
    (keypoints and source_encoder graphs), the background's regression and every InstanceNormalization
    (source_encoder, generator) run on FLOAT tensors with FLOAT weights; the convolutions stay FLOAT16."""
    directory = golden_export(tmp_path_factory, golden_model, "fp16")
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    seen: dict[str, int] = {}
    for name in ("keypoints", "source_encoder", "generator", "background"):
        model = onnx.load(str(directory / f"{name}.onnx"))
        types = _elem_types(model)
        producer = {o: n for n in model.graph.node for o in n.output}
        consumers: dict[str, list] = {}
        for n in model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for node in model.graph.node:
            if node.op_type in ("Gemm", "InstanceNormalization"):
                seen[node.op_type] = seen.get(node.op_type, 0) + 1
                assert all(types[t] == FLOAT for t in [*node.input, *node.output] if t), (name, node.name)
            if node.op_type == "Conv":
                assert types[node.output[0]] == FLOAT16, (name, node.name)  # the networks stay fp16
        if name in ("keypoints", "source_encoder"):
            # sigmoid(fc)·2 − 1: Gemm → Sigmoid → Mul → Sub, all FLOAT, ending in the float32 keypoints
            gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
            sigmoid = consumers[gemm.output[0]][0]
            assert sigmoid.op_type == "Sigmoid" and types[sigmoid.output[0]] == FLOAT
            affine = consumers[sigmoid.output[0]][0]
            assert affine.op_type == "Mul" and types[affine.output[0]] == FLOAT
            shift = consumers[affine.output[0]][0]
            assert shift.op_type == "Sub" and types[shift.output[0]] == FLOAT
            assert producer[gemm.input[0]].op_type == "Cast"  # the pooled fp16 features, cast up once
    assert seen == {"Gemm": 3, "InstanceNormalization": 4 + 27}


def test_fp32_export_model_is_the_loaded_model_and_fp16_islands_keep_float32_weights(golden_model):
    import torch

    from splinecam.engines.export.graphs import Float32InstanceNorm, Float32Linear, model_in_dtype

    fp32 = model_in_dtype(golden_model, "fp32")
    assert not any(isinstance(m, (Float32InstanceNorm, Float32Linear)) for m in fp32.modules())
    want = golden_model.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fp32.state_dict().items())
    fp16 = model_in_dtype(golden_model, "fp16")
    islands = {n: m for n, m in fp16.named_modules() if isinstance(m, (Float32InstanceNorm, Float32Linear))}
    assert len(islands) == sum(isinstance(m, torch.nn.InstanceNorm2d) for m in golden_model.model.modules()) + 2
    for name, island in islands.items():
        original = golden_model.model.get_submodule(name)
        assert island.weight.dtype == torch.float32 and torch.equal(island.weight, original.weight)  # not via fp16
        assert torch.equal(island.bias, original.bias)
    assert fp16.kp_detector.fg_encoder.conv1.weight.dtype == torch.float16
    assert next(golden_model.model.parameters()).dtype == torch.float32  # the loaded model is untouched


def test_export_command_then_onnxruntime(tmp_path_factory, golden_model):
    import onnxruntime as ort

    out = golden_export(tmp_path_factory, golden_model, "fp32")  # written by `export` (main), rc 0
    manifest = Manifest.read(out)
    for name, info in manifest.graphs.items():
        session = ort.InferenceSession(str(out / info.file), providers=["CPUExecutionProvider"])
        feeds = {t.name: np.random.rand(*t.shape).astype(t.dtype) for t in info.inputs}
        outputs = session.run(None, feeds)
        assert [o.shape for o in outputs] == [t.shape for t in info.outputs]
        assert all(np.isfinite(o).all() for o in outputs), name


def test_export_tensorrt_fails_cleanly_without_gpu(tmp_path, shared, capsys):
    from splinecam.engines.backends.tensorrt_runner import tensorrt_unavailable_reason
    from splinecam.cli import main

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: the failure path cannot be shown here")
    golden = shared / "reference" / "golden-small"
    out = tmp_path / "trt"
    rc = main(["export", "--checkpoint", str(golden / GOLDEN_CKPT), "--config", str(golden / "config.yaml"),
               "--out", str(out), "--tensorrt"])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and "TensorRT" in err and "Traceback" not in err
    assert not out.exists()  # checked before any work


def test_export_rejects_bf16(tmp_path, golden_model):
    from splinecam.engines.export.onnx_export import ExportError

    with pytest.raises(ExportError):
        export_onnx(golden_model, tmp_path, "bf16")
