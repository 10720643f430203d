"""Backends behind one interface; each is imported only when asked for, so a missing one never breaks the others."""

from __future__ import annotations

from pathlib import Path

from ..errors import RequestError
from ..manifest import Manifest
from .base import Backend

BACKENDS = ("onnxruntime", "tensorrt")


def open_backend(name: str, directory: Path, manifest: Manifest, **options) -> Backend:
    """The graphs' format decides: an engine directory (format "engine") always runs on TensorRT, whatever backend
    name the caller defaulted to; ONNX graphs never go to TensorRT."""
    formats = {graph.format for graph in manifest.graphs.values()}
    if formats == {"engine"}:
        if options:
            raise RequestError(f"{directory} holds TensorRT engines; options {', '.join(options)} are for ONNX "
                               "Runtime", "drop them (for example --provider), or pass the ONNX export instead")
        name = "tensorrt"
    elif formats != {"onnx"}:
        raise RequestError(f"{directory} mixes graph formats {sorted(formats)}", "rebuild it with janus-edge build")
    elif name == "tensorrt":
        raise RequestError(f"{directory} holds ONNX graphs, not TensorRT engines",
                           f"build engines first: janus-edge build {directory} ENGINE_DIR --target ...")
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(directory, manifest, **options)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(directory, manifest)
    raise RequestError(f"unknown backend {name!r}", f"choose one of {', '.join(BACKENDS)}")
