"""The sampler as an ONNX graph, so a device backend can mix CFG and sample without logits leaving the GPU.

Inputs: logits [R,V] (R = 2N rows [cond; uncond] for the CFG variant), inv_temperature [1], uniform [N,1]
(and cfg_weight [1]). Outputs: greedy [N] (argmax) and sampled [N]: the first index whose cumulative softmax
probability reaches the uniform draw, in vocabulary order, exactly as `runtime.sampling.Sampler` does on the host.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

OPSET = 17


def sampler_graph(cfg: bool) -> onnx.ModelProto:
    nodes, inits = [], [helper.make_tensor("axis_last", TensorProto.INT64, [], [-1]),
                        helper.make_tensor("axes_last", TensorProto.INT64, [1], [-1]),
                        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
                        helper.make_tensor("one_f", TensorProto.FLOAT, [], [1.0])]
    inputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", "vocab"]),
              helper.make_tensor_value_info("inv_temperature", TensorProto.FLOAT, [1]),
              helper.make_tensor_value_info("uniform", TensorProto.FLOAT, ["batch", 1])]
    nodes.append(helper.make_node("Shape", ["logits"], ["shape"]))
    scores = "logits"
    if cfg:
        inputs.append(helper.make_tensor_value_info("cfg_weight", TensorProto.FLOAT, [1]))
        nodes += [helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
                  helper.make_node("Div", ["rows", "two"], ["half"]),
                  helper.make_node("Slice", ["logits", "zero", "half", "zero"], ["cond"]),
                  helper.make_node("Slice", ["logits", "half", "rows", "zero"], ["uncond"]),
                  helper.make_node("Sub", ["cond", "uncond"], ["delta"]),
                  helper.make_node("Mul", ["delta", "cfg_weight"], ["guided"]),
                  helper.make_node("Add", ["uncond", "guided"], ["mixed"])]
        scores = "mixed"
    nodes += [helper.make_node("ArgMax", [scores], ["greedy"], axis=-1, keepdims=0),
              helper.make_node("Mul", [scores, "inv_temperature"], ["scaled"]),
              helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1),
              helper.make_node("CumSum", ["probs", "axis_last"], ["cdf"]),
              helper.make_node("Less", ["cdf", "uniform"], ["below"]),
              helper.make_node("Cast", ["below"], ["below_f"], to=TensorProto.FLOAT),
              helper.make_node("ReduceSum", ["below_f", "axes_last"], ["count_f"], keepdims=0),
              helper.make_node("Gather", ["shape", "one"], ["vocab"], axis=0),
              helper.make_node("Cast", ["vocab"], ["vocab_f"], to=TensorProto.FLOAT),
              helper.make_node("Sub", ["vocab_f", "one_f"], ["last_f"]),
              helper.make_node("Min", ["count_f", "last_f"], ["index_f"]),
              helper.make_node("Cast", ["index_f"], ["sampled"], to=TensorProto.INT64)]
    outputs = [helper.make_tensor_value_info("greedy", TensorProto.INT64, ["batch"]),
               helper.make_tensor_value_info("sampled", TensorProto.INT64, ["batch"])]
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(nodes, "cfg_sampler" if cfg else "sampler", inputs, outputs,
                              [t for t in inits if t.name in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="janus-edge")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
