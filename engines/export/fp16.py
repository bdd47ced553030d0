"""fp32 ONNX graph → fp16 graph with float32 islands, without running torch (in any precision).

The fp16 graphs are what TensorRT builds strongly typed fp16 plans from (and what ONNX Runtime's fp16
rows run). They used to be traced from the model cast to half precision, which on a CPU without fp16
arithmetic takes minutes per graph (torch emulates every fp16 convolution); this pass makes the same
graph from the fp32 export in seconds.

"The same graph" means the float32 islands sit exactly where torch's fp16 trace puts them
(:mod:`splinecam.engines.export.graphs`: images, keypoints, TPS parameters, grids, Gaussians and the
generator's geometry float32; the convolutional networks float16), which ``tests/test_fp16.py``
checks node by node against the torch fp16 export. The pass reproduces torch's dtype rules on the
fp32 graph:

* graph inputs and outputs keep their contract dtype: float16 for the cached source tensors named in
  ``half_io`` (``source_image``, ``source_small``, ``source_feat*``), float32 for everything else;
* network weights (initializers, float ``Constant`` nodes) are *weak*: each takes the dtype of the
  node that uses it (a weight used by both gets two copies), as a Python scalar or a module buffer does
  in torch — except the scales / roi of ``Resize``, which ONNX wants float32;
* an op with several tensor operands (Add, Mul, Concat, MatMul …) runs float32 if any operand is
  float32 (torch's promotion; a Cast is inserted for the float16 operand), float16 otherwise; every
  other op runs in the dtype of its data input;
* a ``Cast(to=FLOAT)`` of the fp32 graph is one of the model's explicit casts — ``x.float()`` or
  ``x.to(other.dtype)``. What it casts *to* in fp16 is read from where its result goes: into a
  network op (Conv, a norm layer, GridSample's image) → float16; into GridSample's grid → the image's
  dtype; next to another operand (``heat.to(deformed.dtype)`` in a Concat) → that operand's dtype; to
  a graph output → the output's dtype; through shape-only or elementwise ops, further on; where
  nothing downstream says (``logits.float()`` on its way into a float32 soft-argmax), float32.
* torch's tracer records ``x.to(x.dtype)`` (a no-op in fp32) as a Cast and then routes *later* uses
  of ``x`` through it. In the fp32 graph those later uses hang off the Cast; in fp16 they read ``x``
  itself. A consumer of a Cast whose context says "the cast's input dtype" (or says nothing) is
  therefore re-attached to the cast's input: the higher precision is never lost to an alias.

Constant values are rounded to float16 (clipped to ±65504). Shapes are unchanged (all static);
the result goes through the same checks as every export (:func:`~splinecam.engines.export.graph_checks.inspect_graph`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from splinecam.engines.errors import SplinecamError
from splinecam.engines.export.onnx_fold import drop_dead

F16, F32 = "f16", "f32"
FP16_MAX = 65504.0

#: ops whose input 0 is network data and whose other float inputs are weights
WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "InstanceNormalization", "BatchNormalization",
                      "LayerNormalization", "GroupNormalization"})
#: ops whose tensor operands are promoted together (input indices that take part; None = all)
MIXING: dict[str, tuple[int, ...] | None] = {
    "Add": None, "Sub": None, "Mul": None, "Div": None, "Pow": (0,), "Concat": None, "Max": None, "Min": None,
    "Sum": None, "Mean": None, "MatMul": None, "Where": (1, 2), "Equal": None, "Less": None, "Greater": None,
    "LessOrEqual": None, "GreaterOrEqual": None, "PRelu": None, "Einsum": None,
}
#: ops computed in float32 inside an fp16 graph, as the fp16 trace's islands are
#: (:func:`splinecam.engines.export.graphs.model_in_dtype`): "keep" — the result stays float32 (the keypoint
#: head's and the background's regression, and what follows them); "back" — cast back to the input's dtype
#: after (InstanceNormalization: mean and variance over up to 256² values per channel)
F32_ISLANDS = {"Gemm": "keep", "InstanceNormalization": "back"}
#: float inputs that stay float32 whatever the node's dtype (op → input indices)
PINNED_F32 = {"Resize": (1, 2), "Upsample": (1,)}
#: a float32 → float16 conversion of these would change what the graph computes: refuse
UNSUPPORTED = frozenset({"If", "Loop", "Scan"})


class Fp16ConversionError(SplinecamError):
    """The graph has a construct the conversion does not handle (subgraphs …), or a converted graph fails
    the export checks."""


@dataclass
class ConversionReport:
    """What :func:`convert_to_fp16` did: node counts per dtype, casts it set, edges re-attached."""

    f16_nodes: int = 0
    f32_nodes: int = 0
    casts_to_f16: int = 0
    casts_to_f32: int = 0
    inserted_casts: int = 0
    realiased_edges: int = 0
    clipped_constants: list[str] = field(default_factory=list)


def _participating(node, index: int) -> bool:
    spec = MIXING.get(node.op_type, ())
    return spec is None or index in spec


class _Graph:
    """Index of one ONNX graph: producers, consumers, value dtypes, weak (constant) values."""

    def __init__(self, model, half_inputs: set[str], half_outputs: set[str]):
        import onnx
        from onnx import TensorProto

        self.model = model
        g = model.graph
        names = [n.name for n in g.node]
        if len(set(names)) != len(names) or not all(names):  # the pass addresses nodes by name
            for i, node in enumerate(g.node):
                node.name = f"{node.name or node.op_type}__{i}"
        for node in g.node:
            if node.op_type in UNSUPPORTED or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                  for a in node.attribute):
                raise Fp16ConversionError(f"node {node.name} ({node.op_type}) has a subgraph: not converted")
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        self.elem: dict[str, int] = {}
        for v in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
            self.elem[v.name] = v.type.tensor_type.elem_type
        for init in g.initializer:
            self.elem[init.name] = init.data_type
        self.weak: set[str] = {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}
        for node in g.node:
            if node.op_type == "Constant" and self.elem.get(node.output[0]) == TensorProto.FLOAT:
                self.weak.add(node.output[0])
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[tuple[object, int]]] = {}  # as in the fp32 graph
        for node in g.node:
            for j, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, j))
        #: (node name, input index) → the value it reads instead (a cast's aliased uses, re-attached)
        self.alias: dict[tuple[str, int], str] = {}
        self._moved: dict[str, list[tuple[object, int]]] = {}  # value → edges re-attached to it
        self.outputs = {o.name for o in g.output}
        self.half_inputs, self.half_outputs = half_inputs, half_outputs
        self.dtype: dict[str, str | None] = {}
        for v in g.input:
            if self.is_float(v.name):
                self.dtype[v.name] = F16 if v.name in half_inputs else F32

    def inputs(self, node) -> list[str]:
        """The node's inputs, with re-attached edges."""
        return [self.alias.get((node.name, j), n) for j, n in enumerate(node.input)]

    def readers(self, name: str) -> list[tuple[object, int]]:
        """Edges reading ``name`` now (re-attached edges moved from the cast to its input)."""
        own = [(c, j) for c, j in self.consumers.get(name, ()) if (c.name, j) not in self.alias]
        return own + self._moved.get(name, [])

    def set_alias(self, cast, edges) -> None:
        """Re-attach ``edges`` (consumers of ``cast``'s output) to the cast's input; drop earlier choices."""
        src = cast.input[0]
        for c, j in self.consumers.get(cast.output[0], ()):
            self.alias.pop((c.name, j), None)
        self._moved[src] = [(c, j) for c, j in self._moved.get(src, []) if (c.name, j) not in
                            {(e.name, k) for e, k in self.consumers.get(cast.output[0], ())}]
        for c, j in edges:
            self.alias[(c.name, j)] = src
            self._moved[src].append((c, j))

    def is_float(self, name: str) -> bool:
        from onnx import TensorProto

        return self.elem.get(name) == TensorProto.FLOAT

    def output_dtype(self, name: str) -> str:
        return F16 if name in self.half_outputs else F32


def _promote(dtypes) -> str | None:
    known = [d for d in dtypes if d is not None]
    if not known:
        return None
    return F32 if F32 in known else F16


def _node_dtype(g: _Graph, node) -> str | None:
    """The dtype a (non-Cast) node computes in, from its inputs' current dtypes (None: not known yet)."""
    op = node.op_type
    floats = [(j, n) for j, n in enumerate(g.inputs(node)) if n and g.is_float(n)]
    if not floats:
        return None
    if op in MIXING:
        strong = [g.dtype.get(n) for j, n in floats if n not in g.weak and _participating(node, j)]
        return _promote(strong) if strong else F32
    j0, first = floats[0]
    if op in F32_ISLANDS:
        return F32
    if first in g.weak:
        return F32
    return g.dtype.get(first)


def _output_dtype(g: _Graph, node, computed: str | None) -> str | None:
    """The dtype of a (non-Cast) node's float outputs: what it computes in, except for the "back" islands."""
    if F32_ISLANDS.get(node.op_type) == "back" and computed is not None:
        first = next((n for n in g.inputs(node) if n and g.is_float(n) and n not in g.weak), None)
        return g.dtype.get(first) if first else computed
    return computed


def _edge_verdicts(g: _Graph, node, index: int, seen: set) -> set[str]:
    """What dtype the context of input ``index`` of ``node`` wants a cast result in (empty: no opinion)."""
    key = (node.name, index)
    if key in seen:
        return set()
    seen.add(key)
    op = node.op_type
    if op == "Cast":
        return set()
    if op in F32_ISLANDS:
        return {F32} if index == 0 else set()
    if op in WEIGHTED:
        return {F16} if index == 0 else set()
    if op == "GridSample":
        if index == 1:
            d = g.dtype.get(g.inputs(node)[0])
            return {d} if d else set()
        return {F16}
    if op in PINNED_F32 and index in PINNED_F32[op]:
        return set()
    if op in MIXING and _participating(node, index):
        partners = [g.dtype.get(n) for j, n in enumerate(g.inputs(node))
                    if j != index and n and g.is_float(n) and n not in g.weak and _participating(node, j)]
        resolved = _promote(partners)
        if resolved is not None:
            return {resolved}
    out: set[str] = set()
    for name in node.output:
        out |= _value_verdicts(g, name, seen)
    return out


def _value_verdicts(g: _Graph, name: str, seen: set) -> set[str]:
    if not g.is_float(name):
        return set()
    out = {g.output_dtype(name)} if name in g.outputs else set()
    for consumer, j in g.readers(name):
        out |= _edge_verdicts(g, consumer, j, seen)
    return out


@dataclass
class _CastPlan:
    target: str
    realias: list[tuple[object, int]]  # consumer edges re-attached to the cast's input


def _plan_cast(g: _Graph, node) -> _CastPlan:
    src, dst = node.input[0], node.output[0]
    a = g.dtype.get(src) if g.is_float(src) else None
    edges = list(g.consumers.get(dst, []))  # every use in the fp32 graph, aliased or not
    verdicts = [_edge_verdicts(g, c, j, set()) for c, j in edges]
    if dst in g.outputs:
        verdicts.append({g.output_dtype(dst)})
        edges = edges + [(None, -1)]
    informative = set().union(*verdicts) if verdicts else set()
    if not informative:  # nothing downstream says: ``x.float()`` on its way to more float32 maths
        target = F32
    elif a in (F16, F32):
        others = informative - {a}
        target = next(iter(others)) if others else a
    else:  # a cast from a non-float tensor (or an input not typed yet)
        target = F16 if informative == {F16} else F32
    realias = []
    if a in (F16, F32) and target != a:
        for (consumer, j), v in zip(edges, verdicts):
            if consumer is None:
                continue
            if v == {a} or (not v and a == F32):  # an alias of the input (torch's tracer), or no opinion
                realias.append((consumer, j))
    return _CastPlan(target, realias)


def _resolve(g: _Graph) -> dict[str, _CastPlan]:
    """Fixpoint: node dtypes forward, cast targets from their (downstream) contexts, until stable."""
    from onnx import TensorProto

    plans: dict[str, _CastPlan] = {}
    for _ in range(32):
        before = (dict(g.dtype), {k: (p.target, len(p.realias)) for k, p in plans.items()})
        for node in g.model.graph.node:
            if node.op_type == "Constant":
                continue
            if node.op_type == "Cast":
                to = next(a.i for a in node.attribute if a.name == "to")
                if to != TensorProto.FLOAT:
                    continue
                plan = _plan_cast(g, node)
                plans[node.name] = plan
                g.set_alias(node, plan.realias)
                g.dtype[node.output[0]] = plan.target
                continue
            d = _output_dtype(g, node, _node_dtype(g, node))
            for name in node.output:
                if g.is_float(name):
                    g.dtype[name] = d
        if before == (g.dtype, {k: (p.target, len(p.realias)) for k, p in plans.items()}):
            return plans
    raise Fp16ConversionError("fp16 dtype assignment did not settle (a cast whose target depends on itself)")


def convert_to_fp16(model, half_inputs: set[str] | frozenset[str] = frozenset(),
                    half_outputs: set[str] | frozenset[str] = frozenset()):
    """Return (fp16 model, :class:`ConversionReport`) for an fp32 ``onnx.ModelProto`` (not modified).

    ``half_inputs`` / ``half_outputs``: names of graph inputs / outputs that are float16 in the fp16
    contract (the cached source tensors); every other float input and output stays float32.
    """
    import copy

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = copy.deepcopy(model)
    g = _Graph(model, set(half_inputs), set(half_outputs))
    plans = _resolve(g)
    report = ConversionReport()
    graph = model.graph
    elem = {F16: TensorProto.FLOAT16, F32: TensorProto.FLOAT}

    weak_values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer
                                          if i.name in g.weak}
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in g.weak:
            weak_values[node.output[0]] = numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
    half_copies: dict[str, str] = {}
    new_inits = []

    def weak_in(name: str, dtype: str) -> str:
        if dtype == F32:
            return name
        if name not in half_copies:
            value = weak_values[name]
            if np.abs(value).max(initial=0.0) > FP16_MAX:
                report.clipped_constants.append(name)
            half = np.clip(value, -FP16_MAX, FP16_MAX).astype(np.float16)
            half_copies[name] = f"{name}__fp16"
            new_inits.append(numpy_helper.from_array(half, half_copies[name]))
        return half_copies[name]

    cast_cache: dict[tuple[str, str], str] = {}
    nodes = []

    def cast_of(name: str, dtype: str) -> str:
        key = (name, dtype)
        if key not in cast_cache:
            out = f"{name}__to_{dtype}"
            nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}/Cast", to=elem[dtype]))
            cast_cache[key] = out
            report.inserted_casts += 1
        return cast_cache[key]

    realias = dict(g.alias)
    report.realiased_edges = len(realias)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in g.weak:
            nodes.append(node)  # kept for float32 users; dropped below when nobody reads it
            continue
        for j, name in enumerate(node.input):
            if (node.name, j) in realias:
                node.input[j] = realias[(node.name, j)]
        if node.op_type == "Cast" and node.name in plans:
            target = plans[node.name].target
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = elem[target]
            report.casts_to_f16 += target == F16
            report.casts_to_f32 += target == F32
            nodes.append(node)
            continue
        want = _node_dtype(g, node)
        back = _output_dtype(g, node, want)  # before the inputs are re-pointed at casts
        if node.op_type in MIXING or want is not None:
            want = want or F32
            for j, name in enumerate(node.input):
                if not name or not g.is_float(name):
                    continue
                need = F32 if j in PINNED_F32.get(node.op_type, ()) else want
                if node.op_type in MIXING and not _participating(node, j) and name not in g.weak:
                    need = g.dtype.get(name) or F32  # e.g. Where's condition, Pow's exponent: as they are
                if name in g.weak:
                    node.input[j] = weak_in(name, need)
                elif g.dtype.get(name) != need:
                    node.input[j] = cast_of(name, need)
            if any(g.is_float(o) for o in node.output):
                report.f16_nodes += want == F16
                report.f32_nodes += want == F32
            if back is not None and back != want:  # a "back" island: computed in float32, its result cast to the input's dtype
                nodes.append(node)
                for k, name in enumerate(node.output):
                    if not g.is_float(name):
                        continue
                    inner = f"{name}__{want}"
                    node.output[k] = inner
                    nodes.append(helper.make_node("Cast", [inner], [name], name=f"{name}/Cast", to=elem[back]))
                    report.inserted_casts += 1
                continue
        nodes.append(node)

    # graph outputs in their contract dtype
    for out in graph.output:
        if not g.is_float(out.name):
            continue
        have, need = g.dtype.get(out.name) or F32, g.output_dtype(out.name)
        if have != need:
            producer = g.producer[out.name]
            inner = f"{out.name}__{have}"
            producer.output[list(producer.output).index(out.name)] = inner
            for other in nodes:
                other.input[:] = [inner if i == out.name else i for i in other.input]
            nodes.append(helper.make_node("Cast", [inner], [out.name], name=f"{out.name}/Cast", to=elem[need]))
            report.inserted_casts += 1
        out.type.tensor_type.elem_type = elem[need]
    for inp in graph.input:
        if g.is_float(inp.name):
            inp.type.tensor_type.elem_type = elem[g.dtype[inp.name]]

    del graph.node[:]
    graph.node.extend(_topological(nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}
                                   | {i.name for i in new_inits}))
    graph.initializer.extend(new_inits)
    del graph.value_info[:]
    _fuse_transposes(model)
    drop_dead(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    _check_types(model)
    return model, report


def _check_types(model) -> None:
    """Every node's float operands agree in dtype (onnx's shape inference does not always say so)."""
    from onnx import TensorProto

    elem = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info]}
    elem.update({i.name: i.data_type for i in model.graph.initializer})
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    for node in model.graph.node:
        if node.op_type in ("Cast", "Constant"):
            continue
        kinds = {elem.get(n) for j, n in enumerate(node.input) if n and elem.get(n) in floats
                 and j not in PINNED_F32.get(node.op_type, ()) and (node.op_type not in MIXING or _participating(node, j))}
        if len(kinds) > 1:
            raise Fp16ConversionError(f"fp16 conversion left {node.op_type} node {node.name} with mixed float16/float32 "
                                      f"inputs")


def _topological(nodes, available: set[str]):
    """Order nodes so every input is produced before use (inserted casts go right after their source)."""
    ready = set(available)
    pending = list(nodes)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all((not i) or i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i and i not in ready})[:3]
            raise Fp16ConversionError(f"fp16 graph has inputs nothing produces: {missing}")
        pending = rest
    return ordered


def _fuse_transposes(model) -> None:
    """Transpose(Transpose(x)) → one Transpose, or x when the two cancel. torch's exporter does this itself,
    except across a Cast: re-attaching a cast's aliased uses (above) can leave such pairs behind."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    replace: dict[str, str] = {}
    for node in graph.node:
        node.input[:] = [replace.get(i, i) for i in node.input]
        inner = producer.get(node.input[0]) if node.op_type == "Transpose" else None
        if inner is None or inner.op_type != "Transpose":
            continue
        p_in = list(next(a.ints for a in inner.attribute if a.name == "perm"))
        p_out = list(next(a.ints for a in node.attribute if a.name == "perm"))
        perm = [p_in[i] for i in p_out]
        if perm == list(range(len(perm))) and node.output[0] not in outputs:
            replace[node.output[0]] = inner.input[0]
            continue
        node.input[0] = inner.input[0]
        for attr in node.attribute:
            if attr.name == "perm":
                attr.ints[:] = perm
    for out in graph.output:
        if out.name in replace:  # pragma: no cover - guarded above
            raise Fp16ConversionError(f"output {out.name} lost its producer")


# ----------------------------------------------------------------------------- whole exports


def converter_fingerprint() -> str:
    """sha256 of this module and onnx's version: part of the fp16 cache key."""
    import hashlib

    import onnx

    return hashlib.sha256(onnx.__version__.encode() + Path(__file__).read_bytes()).hexdigest()


def fp16_export_dir(fp32_manifest, root: Path | None = None) -> Path:
    """The cached fp16 export converted from one fp32 export: keyed by the model hash, the fp32 graphs
    (their checksums) and the converter — no torch version involved (the light install converts too)."""
    from splinecam.engines.engine_cache import cache_root
    from splinecam.engines.export.manifest import graphs_digest

    name = (f"{fp32_manifest.model_hash[:16]}-fp16-from-{graphs_digest(fp32_manifest)[:12]}"
            f"-opset{fp32_manifest.opset}-c{converter_fingerprint()[:8]}")
    return (root or cache_root()) / "onnx" / name


def half_io_names(tensor_names) -> set[str]:
    """The tensors that cross the fp16 graphs' boundary as float16: the cached source tensors except the
    Gaussians (:mod:`splinecam.engines.export.graphs`)."""
    return {n for n in tensor_names if n in ("source_image", "source_small") or n.startswith("source_feat")}


def convert_file(src: str | Path, dst: str | Path, half_io: set[str]) -> ConversionReport:
    """Convert one fp32 ONNX file into an fp16 one (``half_io``: float16 inputs / outputs by name)."""
    import onnx

    model = onnx.load(str(src))
    names_in = {i.name for i in model.graph.input}
    names_out = {o.name for o in model.graph.output}
    converted, report = convert_to_fp16(model, half_io & names_in, half_io & names_out)
    tmp = Path(str(dst) + ".tmp")
    onnx.save(converted, str(tmp))
    tmp.replace(dst)
    return report


def convert_export(src_dir: str | Path, out_dir: str | Path, progress: Callable[[str], None] | None = None):
    """The fp16 export made from an fp32 export directory (its manifest and graphs): no torch involved.

    Every graph is converted (:func:`convert_to_fp16`), checked like every export (TensorRT operator
    table, opset, static shapes) and listed in a new manifest (precision fp16, float16 cached source
    tensors). Returns the manifest; raises Fp16ConversionError when a converted graph fails its checks.
    """
    import time

    from splinecam.engines.export.graph_checks import inspect_graph
    from splinecam.engines.export.manifest import MANIFEST_NAME, GraphInfo, Manifest, TensorInfo, file_sha256

    say = progress or (lambda _m: None)
    src_dir, out = Path(src_dir), Path(out_dir)
    manifest = Manifest.read(src_dir)
    if manifest.precision != "fp32":
        raise Fp16ConversionError(f"{src_dir} holds {manifest.precision} graphs: fp16 graphs are made from fp32 ones")
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST_NAME).exists():
        (out / MANIFEST_NAME).unlink()  # the manifest marks a complete export
    names = {t.name for info in manifest.graphs.values() for t in [*info.inputs, *info.outputs]}
    half = half_io_names(names)
    result = Manifest(**{**manifest.__dict__, "precision": "fp16", "graphs": {}})
    for i, (name, info) in enumerate(manifest.graphs.items(), 1):
        t0 = time.perf_counter()
        say(f"[{i}/{len(manifest.graphs)}] converting {name} to fp16 (float32 islands kept) …")
        path = out / info.file
        report = convert_file(src_dir / info.file, path, half)
        check = inspect_graph(path)
        if not check.ok:
            raise Fp16ConversionError(f"{path}: {check.problems[0]}")

        def typed(ts):
            return [TensorInfo(t.name, t.shape, "float16" if t.name in half and t.dtype == "float32" else t.dtype)
                    for t in ts]

        result.graphs[name] = GraphInfo(name=name, file=info.file, inputs=typed(info.inputs),
                                        outputs=typed(info.outputs), sha256=file_sha256(path))
        say(f"      {name}.onnx: {report.f16_nodes} fp16 / {report.f32_nodes} fp32 nodes, "
            f"{time.perf_counter() - t0:.1f} s")
    result.write(out)
    return result
