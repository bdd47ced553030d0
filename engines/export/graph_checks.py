"""What makes an exported ONNX graph fit for TensorRT: checker, opset, static shapes, operators.

``TENSORRT10_ONNX_OPS`` is the operator table of TensorRT 10's ONNX parser (onnx-tensorrt
``docs/operators.md`` for TensorRT 10.0, opsets 9–20), the same list as
``reference/tensorrt10-onnx-ops.txt``. Every graph splinecam exports uses only these, from the
default ONNX domain, at opset 16–20 (GridSample needs 16), with every tensor shape static.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MIN_OPSET, MAX_OPSET = 16, 20
DEFAULT_OPSET = 17

TENSORRT10_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())


@dataclass
class GraphReport:
    """What :func:`inspect_graph` found in one ONNX file.

    ops: operator type → count; opset: default-domain opset; domains: every opset domain imported;
    dynamic: names of graph inputs/outputs/values with a non-static dimension; problems: one line
    per violation (empty when the graph is fit for TensorRT).
    """

    path: Path
    ops: dict[str, int]
    opset: int
    domains: list[str]
    dynamic: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _static(value_info) -> bool:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return False
    return all(d.HasField("dim_value") and d.dim_value > 0 for d in tt.shape.dim)


def inspect_graph(path: str | Path, allowed_ops: frozenset[str] = TENSORRT10_ONNX_OPS) -> GraphReport:
    """Run onnx.checker (full) and shape inference, then check opset, domains, operators, static shapes."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        problems.append(f"onnx.checker: {str(exc).splitlines()[0]}")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    domains = sorted({o.domain or "ai.onnx" for o in model.opset_import})
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"opset {opset} outside {MIN_OPSET}-{MAX_OPSET}")
    if domains != ["ai.onnx"]:
        problems.append(f"non-default opset domains {domains}")
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node {node.name} uses custom domain {node.domain!r}")
    for op in sorted(set(ops) - allowed_ops):
        problems.append(f"operator {op} is not in TensorRT's ONNX operator table")
    g = inferred.graph
    doubles = [v.name for v in [*g.input, *g.output, *g.value_info] if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE]
    doubles += [i.name for i in g.initializer if i.data_type == onnx.TensorProto.DOUBLE]
    doubles += [n.name for n in g.node if n.op_type == "Constant" and any(
        a.t.data_type == onnx.TensorProto.DOUBLE for a in n.attribute if a.name == "value")]
    if doubles:
        problems.append(f"{len(doubles)} float64 tensors (TensorRT has no float64; first: {doubles[0]})")
    dynamic = [v.name for v in [*g.input, *g.output, *g.value_info] if not _static(v)]
    if dynamic:
        problems.append(f"{len(dynamic)} tensors without a static shape (first: {dynamic[0]})")
    return GraphReport(path, ops, opset, domains, dynamic, problems)
