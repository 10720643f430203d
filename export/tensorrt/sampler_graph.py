"""The device side of token choice, as an ONNX graph: CFG mixing and the greedy (argmax) pick.

Inputs: logits [R,V] (R = 2N rows [cond; uncond] for the CFG variant) and, for CFG, cfg_weight [1].
Outputs: greedy [N] (ArgMax) and, for CFG, mixed [N,V] = uncond + w (cond - uncond).

Sampling at a temperature runs on the host (`runtime.sampling.Sampler`, float64, the same random stream as the
ONNX Runtime path) on the mixed logits: N x V floats per step. An inverse-CDF sampler on the device needs a
cumulative sum, and TensorRT's ONNX parser before 10.8 (JetPack 6.2 ships 10.3) imports CumSum as a loop with one
iteration per vocabulary entry (shared/REFERENCE.md section 9); `check-trt` flags that op as slow.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from janus_edge.runtime.tensor_names import CFG_SAMPLER, CFG_WEIGHT, GREEDY, LOGITS, MIXED, SAMPLER

OPSET = 17


def sampler_graph(cfg: bool) -> onnx.ModelProto:
    """The `CFG_SAMPLER` engine's graph with `cfg`, else `SAMPLER`'s (`SAMPLERS` maps each name to its `cfg`)."""
    inits = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
             helper.make_tensor("two", TensorProto.INT64, [1], [2])]
    inputs = [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["rows", "vocab"])]
    outputs = [helper.make_tensor_value_info(GREEDY, TensorProto.INT64, ["batch"])]
    nodes, scores = [], LOGITS
    if cfg:
        inputs.append(helper.make_tensor_value_info(CFG_WEIGHT, TensorProto.FLOAT, [1]))
        nodes += [helper.make_node("Shape", [LOGITS], ["shape"]),
                  helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
                  helper.make_node("Div", ["rows", "two"], ["half"]),
                  helper.make_node("Slice", [LOGITS, "zero", "half", "zero"], ["cond"]),
                  helper.make_node("Slice", [LOGITS, "half", "rows", "zero"], ["uncond"]),
                  helper.make_node("Sub", ["cond", "uncond"], ["delta"]),
                  helper.make_node("Mul", ["delta", CFG_WEIGHT], ["guided"]),
                  helper.make_node("Add", ["uncond", "guided"], [MIXED])]
        outputs.append(helper.make_tensor_value_info(MIXED, TensorProto.FLOAT, ["batch", "vocab"]))
        scores = MIXED
    nodes.append(helper.make_node("ArgMax", [scores], [GREEDY], axis=-1, keepdims=0))
    graph = helper.make_graph(nodes, CFG_SAMPLER if cfg else SAMPLER, inputs, outputs, inits if cfg else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="janus-edge")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
