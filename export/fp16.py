"""fp16 conversion of an exported graph, keeping precision-critical ops in fp32.

LayerNorm/GroupNorm/InstanceNorm, Softmax, the pieces of RMSNorm (Pow, ReduceMean, Sqrt, Reciprocal) and GELU's Erf
stay fp32 (fp16 vision encoders lose accuracy otherwise); graph inputs and outputs stay fp32 except those named in
`fp16_io` (the decoder's KV cache, which is then held and moved in fp16: half the memory and traffic).

Shapes are inferred from the file (which works past protobuf's 2 GB limit, weights in external data) and handed to
the converter, whose own in-memory inference would fail on the full-size decoder.

The conversion streams: onnxruntime's converter rewrites the structure and decides which initializers become fp16,
seeing the weights of the side file only as names, dtypes and dims; each one it turned to fp16 is then converted
with the converter's own rounding (`convert_np_to_float16`), a chunk at a time, when the graph is written.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from .onnx_io import Chunks, StreamedGraph, load_graph

KEEP_FP32_OPS = ["LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "Pow", "ReduceMean",
                 "Sqrt", "Reciprocal", "Erf"]


def to_fp16(path: Path, fp16_io: tuple[str, ...] = (), before_weights=None):
    """Reads the graph at `path` (with its external data) and returns it converted to fp16; `before_weights(proto)
    -> proto` runs on the structure alone first (an opset upgrade serialises the model: with the weights attached a
    full-size decoder is over protobuf's 2 GiB)."""
    return to_fp16_streamed(path, fp16_io, before_weights).loaded()


def to_fp16_streamed(path: Path, fp16_io: tuple[str, ...] = (), before_weights=None) -> StreamedGraph:
    """`to_fp16` without loading the weights: the converted graph, whose side-file weights are read and converted
    one chunk at a time when it is saved."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        inferred = Path(tmp) / "inferred.onnx"
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
        graph = StreamedGraph(load_graph(inferred, weights=False, before_weights=before_weights), Path(path).parent)
    return _converted(graph, fp16_io)


def graph_to_fp16(graph: StreamedGraph, fp16_io: tuple[str, ...] = ()) -> StreamedGraph:
    """`graph` converted, its weights (in a side file, or made by a pass) converted as they are written."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        structure, inferred = Path(tmp) / "structure.onnx", Path(tmp) / "inferred.onnx"
        onnx.save_model(graph.proto, str(structure))  # weights stay where they are: only their dims are read
        onnx.shape_inference.infer_shapes_path(str(structure), str(inferred))
        graph.proto = onnx.load(str(inferred), load_external_data=False)
    return _converted(graph, fp16_io)


def _converted(graph: StreamedGraph, fp16_io: tuple[str, ...]) -> StreamedGraph:
    """The conversion of a graph whose shapes are inferred."""
    import onnx
    from onnx.external_data_helper import uses_external_data
    from onnxruntime.transformers.float16 import convert_float_to_float16, convert_np_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    fp32 = {t.name: graph.source(t) for t in graph.proto.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT and uses_external_data(t)}  # the converter converts the rest
    io = [t.name for t in [*graph.proto.graph.input, *graph.proto.graph.output] if t.name not in fp16_io]
    with _shapes_from_dims():
        proto = convert_float_to_float16(graph.proto, keep_io_types=io if fp16_io else True,
                                         op_block_list=KEEP_FP32_OPS, disable_shape_infer=True)
    wrapped = OnnxModel(proto)
    wrapped.topological_sort()  # the converter appends its input casts at the end of the node list
    graph.proto = wrapped.model
    for tensor in graph.proto.graph.initializer:
        if tensor.name in fp32 and tensor.data_type == onnx.TensorProto.FLOAT16:
            graph.remake(tensor, _halved(fp32[tensor.name], convert_np_to_float16))
    return graph


def _halved(source: Chunks, convert) -> Chunks:
    """fp32 chunks made fp16 by `convert` (elementwise, so chunk by chunk is the same as all at once)."""
    return lambda rows: (np.asarray(convert(chunk)) for chunk in source(rows))


@contextlib.contextmanager
def _shapes_from_dims():
    """While converting: the converter reads a converted initializer's values only to learn its shape
    (`make_value_info_from_tensor`); a weight left in the side file has no values in the proto, but has its dims,
    which are that shape. Not thread-safe (it swaps a function of the converter's module)."""
    from onnx import helper
    from onnxruntime.transformers import float16

    original = float16.make_value_info_from_tensor
    float16.make_value_info_from_tensor = lambda t: helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    try:
        yield
    finally:
        float16.make_value_info_from_tensor = original
