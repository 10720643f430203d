"""fp16 conversion of an exported graph, keeping precision-critical ops in fp32.

LayerNorm/GroupNorm/InstanceNorm, Softmax, the pieces of RMSNorm (Pow, ReduceMean, Sqrt, Reciprocal) and GELU's Erf
stay fp32 (fp16 vision encoders lose accuracy otherwise); graph inputs and outputs stay fp32.
"""

from __future__ import annotations

KEEP_FP32_OPS = ["LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "Pow", "ReduceMean",
                 "Sqrt", "Reciprocal", "Erf"]


def to_fp16(proto):
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = convert_float_to_float16(proto, keep_io_types=True, op_block_list=KEEP_FP32_OPS)
    wrapped = OnnxModel(proto)
    wrapped.topological_sort()  # the converter appends its input casts at the end of the node list
    return wrapped.model
