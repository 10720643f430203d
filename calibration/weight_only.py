"""Weight-only INT8 / INT4 for the bytes that dominate decode (decoder, lm_head, generation_head).

MatMul weights become `DequantizeLinear(int, scale, axis=0, block_size=B) -> MatMul` (opset 21), round-to-nearest,
symmetric, no zero points: the form TensorRT consumes for weight-only quantisation and that ONNX Runtime fuses into
its blocked MatMul kernels.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

from janus_edge.export.onnx_io import initializers, replace_initializer

BLOCK_SIZES = (128, 64, 32, 16)
QUANT_OPSET = 21


def _uses(graph, name: str) -> int:
    return sum(name in node.input for node in graph.node)


def quantize_matmul_weights(proto, bits: int) -> int:
    """Quantises every MatMul whose second input is a 2-D fp32 or fp16 initializer (scales in the same dtype);
    returns how many.

    The graph must already be at opset 21 (`upgrade_opset`)."""
    qmax = 2 ** (bits - 1) - 1
    storage = ml_dtypes.int4 if bits == 4 else np.int8
    graph, done = proto.graph, 0
    weights = initializers(graph)
    new_nodes = []
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) or \
                len(weight.dims) != 2 or _uses(graph, weight.name) != 1:
            continue
        values = numpy_helper.to_array(weight)
        scale_dtype = values.dtype  # the DequantizeLinear's output: the dtype the MatMul computes in
        values = values.astype(np.float32)
        k, n = values.shape
        block = next((b for b in BLOCK_SIZES if k % b == 0), None)
        if block is None:
            continue
        blocks = values.reshape(k // block, block, n)
        scale = np.abs(blocks).max(axis=1) / qmax
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(blocks / scale[:, None, :]), -qmax - 1, qmax).reshape(k, n).astype(storage)
        q_name, s_name, out = f"{weight.name}_w{bits}", f"{weight.name}_w{bits}_scale", f"{weight.name}_dq"
        replace_initializer(graph, weight, [numpy_helper.from_array(q, q_name),
                                            numpy_helper.from_array(scale.astype(scale_dtype), s_name)])
        new_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name], [out], name=f"{node.name}_dq",
                                          axis=0, block_size=block))
        node.input[1] = out
        done += 1
    _prepend(graph, new_nodes)
    return done


def _prepend(graph, nodes: list) -> None:
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)


def upgrade_opset(proto):
    """Converts a graph to opset 21 (blocked DequantizeLinear, INT4), rewriting ops whose signature changed."""
    from onnx import version_converter

    current = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if current >= QUANT_OPSET:
        return proto
    converted = version_converter.convert_version(proto, QUANT_OPSET)
    converted.ir_version = max(converted.ir_version, 10)
    return converted
