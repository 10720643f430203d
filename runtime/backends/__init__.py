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

        return TensorRTBackend(directory, manifest, **options)
    raise RequestError(f"unknown backend {name!r}", f"choose one of {', '.join(BACKENDS)}")
