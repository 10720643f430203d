"""fp16 conversion of an exported graph, keeping precision-critical ops in fp32.

LayerNorm/GroupNorm/InstanceNorm, Softmax, the pieces of RMSNorm (Pow, ReduceMean, Sqrt, Reciprocal) and GELU's Erf
stay fp32 (fp16 vision encoders lose accuracy otherwise); graph inputs and outputs stay fp32 except those named in
`fp16_io` (the decoder's KV cache, which is then held and moved in fp16: half the memory and traffic).

Shapes are inferred from the file (which works past protobuf's 2 GB limit, weights in external data) and handed to
the converter, whose own in-memory inference would fail on the full-size decoder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .onnx_io import attach_weights, load_graph

KEEP_FP32_OPS = ["LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "Pow", "ReduceMean",
                 "Sqrt", "Reciprocal", "Erf"]


def to_fp16(path: Path, fp16_io: tuple[str, ...] = (), before_weights=None):
    """Reads the graph at `path` (with its external data) and returns it converted to fp16; `before_weights(proto)
    -> proto` runs on the structure alone first (an opset upgrade serialises the model: with the weights attached a
    full-size decoder is over protobuf's 2 GiB)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with tempfile.TemporaryDirectory() as tmp:
        inferred = Path(tmp) / "inferred.onnx"
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
        proto = load_graph(inferred, weights=False, before_weights=before_weights)
    attach_weights(proto, Path(path).parent)
    io = [t.name for t in [*proto.graph.input, *proto.graph.output] if t.name not in fp16_io]
    proto = convert_float_to_float16(proto, keep_io_types=io if fp16_io else True, op_block_list=KEEP_FP32_OPS,
                                     disable_shape_infer=True)
    wrapped = OnnxModel(proto)
    wrapped.topological_sort()  # the converter appends its input casts at the end of the node list
    return wrapped.model
