"""Backends behind one interface; each is imported only when asked for, so a missing one never breaks the others."""

from __future__ import annotations

from pathlib import Path

from ..errors import RequestError
from ..manifest import Manifest
from .base import Backend

BACKENDS = ("onnxruntime", "tensorrt")


def open_backend(name: str, directory: Path, manifest: Manifest, **options) -> Backend:
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(directory, manifest, **options)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        if options:
            raise RequestError(f"options {', '.join(options)} apply to the onnxruntime backend only",
                               "drop them, or use --backend onnxruntime")
        return TensorRTBackend(directory, manifest)
    raise RequestError(f"unknown backend {name!r}", f"choose one of {', '.join(BACKENDS)}")
