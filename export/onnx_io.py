"""Reading and writing exported ONNX graphs, shared by export, calibration and the TensorRT stage.

A graph's weights over 1 GiB live in one side file `<graph>.onnx.data` (protobuf cannot hold 2 GiB), so reading
one may mean attaching that file, and structural passes (opset conversion, shape inference) run before the weights
are attached. Initializers are edited in place: rebuilding the list would copy every tensor, gigabytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GiB go to a side file


def load_graph(path: str | Path, weights: bool = True, before_weights: Callable | None = None):
    """The ModelProto at `path`; `before_weights(proto) -> proto` runs on the structure alone, then the side file
    (if any) is attached unless `weights` is False."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if before_weights is not None:
        proto = before_weights(proto)
    if weights:
        attach_weights(proto, Path(path).parent)
    return proto


def attach_weights(proto, directory: str | Path) -> None:
    """Reads the external data `proto` refers to from `directory` (a no-op for a graph without any)."""
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(proto, str(directory))


def save_graph(proto, path: Path) -> None:
    """Writes a graph (weights over 1 GiB to one side file), then checks it and its shapes."""
    import onnx

    proto.producer_name = "janus-edge"
    for stale in (path, Path(f"{path}.data")):
        stale.unlink(missing_ok=True)
    external = sum(init.ByteSize() for init in proto.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    onnx.save_model(proto, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)
    onnx.checker.check_model(str(path), full_check=False)
    onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred")  # raises on inconsistent shapes
    Path(str(path) + ".inferred").unlink()


def has_side_file(path: Path) -> bool:
    """Whether the graph at `path` is stored with its weights in a side file (tools must then write one too)."""
    return Path(f"{path}.data").is_file()


def initializers(graph) -> dict:
    """name -> initializer of a GraphProto."""
    return {init.name: init for init in graph.initializer}


def replace_initializer(graph, old, new: list) -> None:
    """Swaps one initializer for others in place."""
    graph.initializer.remove(old)
    graph.initializer.extend(new)
