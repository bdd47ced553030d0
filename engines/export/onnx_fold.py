"""Constant folding for exported graphs, so every tensor has a static shape.

torch's tracing exporter records ``x.shape[i]`` as ``Shape → Gather`` chains and builds grids
(``arange``) and pad widths from them; its own folding leaves some of those, and ONNX shape
inference then cannot give later tensors a static shape. This pass replaces ``Shape`` of a
statically shaped tensor by a constant and evaluates every node whose inputs are all constants
(onnx's reference evaluator), repeating until nothing changes, then drops dead nodes. Nothing
that depends on a graph input is touched, so the numerics of the network are unchanged.
"""

from __future__ import annotations

import numpy as np

NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
MAX_FOLDED_ELEMENTS = 1 << 22  # never materialise a constant above 16 MB (float32)


def _static_shapes(model) -> dict[str, tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    g = inferred.graph
    for v in [*g.input, *g.output, *g.value_info]:
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(d.dim_value for d in dims)
    return shapes


def _constant_value(node) -> np.ndarray | None:
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
    return None


def fold_constants(model):
    """Return ``model`` with shape computations and constant sub-expressions folded (in place)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for _ in range(20):
        consts: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                value = _constant_value(node)
                if value is not None:
                    consts[node.output[0]] = value
        shapes = _static_shapes(model)
        changed = False
        new_inits = []
        keep = []
        for node in graph.node:
            value = None
            if node.op_type == "Shape" and node.input[0] in shapes and not node.attribute:
                value = np.array(shapes[node.input[0]], dtype=np.int64)
            elif (node.op_type not in NONDETERMINISTIC and node.op_type != "Constant" and len(node.output) == 1
                  and all((not name) or name in consts for name in node.input) and node.domain in ("", "ai.onnx")):
                inputs = [name for name in node.input]
                sub = helper.make_graph(
                    [node], "fold",
                    [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(consts[n].dtype), consts[n].shape)
                     for n in inputs if n],
                    [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)])
                sub_model = helper.make_model(sub, opset_imports=[helper.make_opsetid("", opset)])
                try:
                    value = ReferenceEvaluator(sub_model).run(None, {n: consts[n] for n in inputs if n})[0]
                except Exception:  # an op the reference evaluator cannot run: leave it to the runtime
                    value = None
                if value is not None and np.asarray(value).size > MAX_FOLDED_ELEMENTS:
                    value = None
            if value is None:
                keep.append(node)
                continue
            value = np.asarray(value)
            new_inits.append(numpy_helper.from_array(value, node.output[0]))
            consts[node.output[0]] = value
            changed = True
        if not changed:
            break
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(new_inits)
        drop_dead(model)
    drop_dead(model)
    return model


def drop_dead(model) -> None:
    """Remove nodes and initializers that no graph output depends on."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    vis = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vis)
