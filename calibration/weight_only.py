"""Weight-only INT8 / INT4 for the bytes that dominate decode (decoder, lm_head, generation_head).

MatMul weights become `DequantizeLinear(int, scale, axis=0, block_size=B) -> MatMul` (opset 21), round-to-nearest,
symmetric, no zero points: the form TensorRT consumes for weight-only quantisation and that ONNX Runtime fuses into
its blocked MatMul kernels.
"""

from __future__ import annotations

import math
from typing import Iterator

import ml_dtypes
import numpy as np
import onnx
from onnx import helper

from janus_edge.export.onnx_io import Chunks, StreamedGraph, initializers

BLOCK_SIZES = (128, 64, 32, 16)
QUANT_OPSET = 21


def _uses(graph, name: str) -> int:
    return sum(name in node.input for node in graph.node)


def quantize_matmul_weights(graph: StreamedGraph, bits: int) -> int:
    """Quantises every MatMul whose second input is a 2-D fp32 or fp16 initializer (scales in the same dtype);
    returns how many. The structure changes now; each weight is read and quantised a chunk of rows at a time when
    the graph is saved.

    The graph must already be at opset 21 (`upgrade_opset`)."""
    structure, done = graph.proto.graph, 0
    weights = initializers(structure)
    new_nodes = []
    for node in structure.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) or \
                len(weight.dims) != 2 or _uses(structure, weight.name) != 1:
            continue
        k, n = weight.dims
        block = next((b for b in BLOCK_SIZES if k % b == 0), None)
        if block is None:
            continue
        quantized = _Quantized(graph.source(weight), bits, block, weight.data_type)
        q_name, s_name, out = f"{weight.name}_w{bits}", f"{weight.name}_w{bits}_scale", f"{weight.name}_dq"
        storage = onnx.TensorProto.INT4 if bits == 4 else onnx.TensorProto.INT8
        graph.replace(weight, [(onnx.TensorProto(name=q_name, data_type=storage, dims=[k, n]), quantized.blocks),
                               (onnx.TensorProto(name=s_name, data_type=weight.data_type, dims=[k // block, n]),
                                quantized.scales)])
        new_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name], [out], name=f"{node.name}_dq",
                                          axis=0, block_size=block))
        node.input[1] = out
        done += 1
    _prepend(structure, new_nodes)
    return done


class _Quantized:
    """One weight, round-to-nearest symmetric in blocks of `block` rows, made a chunk of whole blocks at a time: the
    integers stream out as the graph is written; the scales (1/block of the weight) are kept for their own tensor,
    written next."""

    def __init__(self, source: Chunks, bits: int, block: int, scale_type: int):
        self.source, self.block = source, block
        self.qmax = 2 ** (bits - 1) - 1
        self.storage = ml_dtypes.int4 if bits == 4 else np.int8
        self.scale_dtype = helper.tensor_dtype_to_np_dtype(scale_type)  # what the MatMul computes in
        self._scales: list[np.ndarray] | None = None

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        scales = []
        for chunk in self.source(math.lcm(rows, self.block)):
            values = chunk.astype(np.float32)
            k, n = values.shape
            blocks = values.reshape(k // self.block, self.block, n)
            scale = np.abs(blocks).max(axis=1) / self.qmax
            scale[scale == 0] = 1.0
            scales.append(scale)
            yield np.clip(np.rint(blocks / scale[:, None, :]), -self.qmax - 1, self.qmax).reshape(k, n) \
                .astype(self.storage)
        self._scales = scales

    def scales(self, rows: int) -> Iterator[np.ndarray]:
        if self._scales is None:  # asked before the integers: they make the scales
            for _ in self.blocks(rows):
                pass
        scales, self._scales = self._scales or [], None
        yield np.concatenate(scales).astype(self.scale_dtype)


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
