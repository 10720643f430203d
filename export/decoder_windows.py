"""Layer windows of an exported decoder: how `compare` checks a decoder too big to load whole (a 7B export's).

ONNX Runtime's CPU provider computes an fp16 graph in fp32, holding about four times the graph's stored weights (13.5
GB for the 7B decoder, so over 50 GB). A window is the part of the decoder graph from the hidden state entering layer
`layers[0]` to the one leaving `layers[-1]` (for the last layer, the decoder's output after the final norm), with
those layers' cache inputs and outputs. It is cut from the graph's structure alone; its weights stay in the export's
side file, which the window's own file reads through a hard link in a folder inside the export (ONNX Runtime refuses
external data outside the model's folder, symbolic links resolved; a hard link copies nothing). `compare` feeds each
window the reference's hidden state at its entry, so each is judged on its own and errors do not accumulate from
window to window.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from janus_edge.runtime.errors import InternalError, RequestError
from janus_edge.runtime.tensor_names import HIDDEN_STATES, INPUTS_EMBEDS

from .onnx_io import tensor_bytes

WINDOW_WEIGHT_BYTES = 4 << 30  # a window's weights once ONNX Runtime has them in fp32
WHOLE_GRAPH_BYTES = 8 << 30  # a decoder whose weights in fp32 stay under this is checked whole

# TorchScript names the nodes of the k-th call of a submodule `<scope>/<attribute>_k/...` (the first without _k):
# KVCacheDecoder calls each layer's `input_layernorm` once, in layer order, and `norm` once after the last layer
_LAYER_NORM = re.compile(r"(?:^|/)input_layernorm(?:_(\d+))?/")
_FINAL_NORM = re.compile(r"(?:^|/)norm/")
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16: what ONNX Runtime's CPU provider computes in fp32


@dataclass(frozen=True)
class Window:
    layers: range
    entry: str  # the tensor entering layers[0] (the graph's input for the first window)
    exit: str  # the tensor leaving layers[-1] (the graph's output for the last window)
    hidden_type: int  # the element type of the hidden state between layers (fp16 in an fp16 graph)

    @property
    def label(self) -> str:
        return f"decoder L{self.layers[0]}-{self.layers[-1]}"


def layers_per_window(graph, num_layers: int) -> int:
    """How many layers a window holds so its weights in fp32 stay under WINDOW_WEIGHT_BYTES, or 0 for the whole
    graph (its weights in fp32 are under WHOLE_GRAPH_BYTES)."""
    import math

    expanded = 0
    for tensor in graph.initializer:
        count = math.prod(tensor.dims)
        expanded += 4 * count if tensor.data_type in _FLOAT_TYPES else tensor_bytes(tensor)
    if expanded <= WHOLE_GRAPH_BYTES:
        return 0
    return max(1, num_layers * WINDOW_WEIGHT_BYTES // expanded)


def plan_windows(proto, num_layers: int, per_window: int) -> list[Window]:
    """Consecutive windows of `per_window` layers covering the decoder `proto` (a ModelProto, weights not
    attached)."""
    entries = _layer_entries(proto.graph, num_layers)
    hidden_type = _inferred_type(proto, entries[1]) if num_layers > 1 else 0  # no boundary inside one layer
    windows = []
    for first in range(0, num_layers, per_window):
        layers = range(first, min(first + per_window, num_layers))
        exit_ = HIDDEN_STATES if layers[-1] == num_layers - 1 else entries[layers[-1] + 1]
        windows.append(Window(layers, INPUTS_EMBEDS if first == 0 else entries[first], exit_, hidden_type))
    return windows


def write_window(proto, window: Window, outputs: list[str], directory: Path, side_file: Path | None,
                 hidden_size: int) -> tuple[Path, list[str]]:
    """Writes the part of `proto` (the decoder's ModelProto, weights not attached) that computes the window's exit
    and `outputs` into `directory`, its weights read through a hard link to `side_file` (on the same file system).
    Returns the file's path and its inputs: the window's entry, then the graph inputs it reads (its layers' caches,
    the mask and positions, and any whose shape it takes)."""
    import onnx

    graph = proto.graph
    names_out = [window.exit, *outputs]
    graph_inputs = [v.name for v in graph.input]
    nodes, reached = _nodes_between(graph, {window.entry, *graph_inputs}, names_out)
    names_in = [window.entry] + [name for name in graph_inputs if name in reached and name != window.entry]
    used = {name for node in nodes for name in node.input}
    known = {v.name: v for v in [*graph.input, *graph.output]}
    boundary = lambda name: known.get(name) or onnx.helper.make_tensor_value_info(  # noqa: E731
        name, window.hidden_type, ["batch", "sequence", hidden_size])
    cut = onnx.helper.make_graph(nodes, f"decoder_{window.layers[0]}_{window.layers[-1]}",
                                 [boundary(n) for n in names_in], [boundary(n) for n in names_out],
                                 [t for t in graph.initializer if t.name in used])
    model = onnx.helper.make_model(cut, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    if side_file is not None:
        link = directory / side_file.name
        if not link.exists():
            try:
                os.link(side_file, link)
            except OSError as exc:
                raise RequestError(f"compare could not hard-link {side_file} to check the decoder a window at a time "
                                   f"({exc})", "keep the export on a file system with hard links (ext4, xfs), or "
                                   "pass --window-layers 0 on a machine that holds the whole decoder") from None
    path = directory / f"{window.label.replace(' ', '_')}.onnx"
    onnx.save_model(model, str(path))
    return path, names_in


def _layer_entries(graph, num_layers: int) -> list[str]:
    """The tensor entering each layer's `input_layernorm`, then the one entering the final `norm`: for each, the one
    input of the norm's nodes made outside them (not a weight, not a constant)."""
    constants = {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    outside = constants | {t.name for t in graph.initializer} | {""}
    scopes: dict[int, list] = {}
    for node in graph.node:
        if match := _LAYER_NORM.search(node.name):
            scopes.setdefault(int(match.group(1) or 0), []).append(node)
        elif _FINAL_NORM.search(node.name):
            scopes.setdefault(num_layers, []).append(node)
    if sorted(scopes) != list(range(num_layers + 1)):
        raise InternalError(f"the decoder graph's norms are not those of {num_layers} layers and a final norm "
                            f"(found {sorted(scopes)}): its node names no longer say where a layer starts")
    entries = []
    for index in range(num_layers + 1):
        made = {out for node in scopes[index] for out in node.output}
        entering = {name for node in scopes[index] for name in node.input} - made - outside
        if len(entering) != 1:
            raise InternalError(f"norm {index} of the decoder graph takes {sorted(entering)} from outside, not one "
                                "hidden state")
        entries.append(entering.pop())
    return entries


def _nodes_between(graph, stops: set[str], outputs: list[str]) -> tuple[list, set[str]]:
    """The nodes of `graph` that compute `outputs` from tensors in `stops` and weights, in graph order, and the
    tensors of `stops` they read."""
    producer = {out: index for index, node in enumerate(graph.node) for out in node.output}
    weights = {t.name for t in graph.initializer}
    picked: set[int] = set()
    pending, seen, reached = list(outputs), set(), set()
    while pending:
        name = pending.pop()
        if name in seen or name in weights or name == "":
            continue
        seen.add(name)
        if name in stops:
            reached.add(name)
            continue
        if name not in producer:
            raise InternalError(f"nothing in the decoder graph computes {name!r}")
        if producer[name] not in picked:
            picked.add(producer[name])
            pending.extend(graph.node[producer[name]].input)
    return [graph.node[index] for index in sorted(picked)], reached


def _inferred_type(proto, name: str) -> int:
    """The element type of tensor `name` of the decoder, from shape inference on its structure."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    if name not in types:
        raise InternalError(f"shape inference gave no type for the decoder's hidden state {name!r}")
    return types[name]
