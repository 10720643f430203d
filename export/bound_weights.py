"""Exporting a graph without ever holding its weights: traced with stand-in parameters and `export_params=False`
(each parameter becomes a graph input), then each input is bound to an initializer whose values are read from
the checkpoint one tensor at a time when the graph is written (`onnx_io.StreamedGraph`).

This is how the decoder is exported at every size: the 7B decoder is 27 GB in fp32, more than this machine's
memory and over protobuf's 2 GiB, and the 1B's peak falls from 12.3 GB. The weights come out byte for byte as
torch.onnx's constant folding would write them: a Linear weight, which the exporter transposes for MatMul, is
stored transposed (`.T`, as the folded Transpose gives), everything else as it is.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from janus_edge.runtime.errors import InternalError

from .lazy_model import LazyWeights
from .onnx_io import StreamedGraph, array_chunks


def export_bound(module: torch.nn.Module, weights: LazyWeights, sample: tuple, export_options: dict,
                 scratch: Path) -> StreamedGraph:
    """`module` exported by torch.onnx (TorchScript) with `export_options` (input/output names, dynamic axes,
    opset), its structure written under `scratch`, its parameters bound to the checkpoint's values."""
    import onnx

    params = dict(module.named_parameters())
    raw = Path(scratch) / "structure.onnx"
    with weights.standins(module), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # keep_initializers_as_inputs: no merging of parameters of equal values (the stand-ins' values are all
        # equal), which compares every pair of a shape, minutes on the 7B decoder
        torch.onnx.export(module, sample, str(raw), export_params=False, keep_initializers_as_inputs=True,
                          do_constant_folding=False, dynamo=False, **export_options)
    graph = StreamedGraph(onnx.load(str(raw)), scratch)
    for graph_input in [i for i in graph.proto.graph.input if i.name in params]:
        _bind(graph, graph_input, params[graph_input.name], weights)
    unbound = [i.name for i in graph.proto.graph.input if i.name not in export_options["input_names"]]
    if unbound:
        raise InternalError(f"inputs {unbound[:3]} of the traced graph are neither the spec's nor parameters")
    return graph


def _bind(graph: StreamedGraph, graph_input, param: torch.nn.Parameter, weights: LazyWeights) -> None:
    """Replaces a parameter input by an initializer; one read only through Transpose(perm 1,0) nodes is stored
    transposed and those nodes are removed."""
    from onnx import TensorProto

    structure = graph.proto.graph
    readers = [node for node in structure.node if graph_input.name in node.input]
    transposed = param.dim() == 2 and bool(readers) and all(
        node.op_type == "Transpose" and [a.ints for a in node.attribute if a.name == "perm"] == [[1, 0]]
        for node in readers)
    name = f"{graph_input.name}.T" if transposed else graph_input.name
    dims = list(param.shape)[::-1] if transposed else list(param.shape)
    if transposed:
        for transpose in readers:
            for node in structure.node:
                node.input[:] = [name if i == transpose.output[0] else i for i in node.input]
            for output in structure.output:
                if output.name == transpose.output[0]:
                    raise InternalError(f"{output.name}, a graph output, is a transposed weight")
            structure.node.remove(transpose)
    structure.input.remove(graph_input)

    def values(rows: int):
        value = weights.value(param)
        yield from array_chunks(np.ascontiguousarray((value.T if transposed else value).numpy()), rows)

    graph.add(TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims), values)
