"""ONNX Runtime backend (CPU by default; any execution provider the installed onnxruntime offers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..manifest import Manifest
from .base import Backend, GraphSession


class OrtGraph(GraphSession):
    def __init__(self, session):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, directory: Path, manifest: Manifest, providers: list | None = None, threads: int = 0):
        super().__init__(directory, manifest)
        try:
            import onnxruntime
        except ImportError:
            raise BackendError("onnxruntime is not installed", "pip install onnxruntime (or onnxruntime-gpu)") from None
        self.ort = onnxruntime
        available = onnxruntime.get_available_providers()
        self.providers = providers or ["CPUExecutionProvider"]
        for provider in self.providers:
            name = provider[0] if isinstance(provider, (tuple, list)) else provider
            if name not in available:
                raise BackendError(f"ONNX Runtime provider {name} is not available here",
                                   f"choose from {', '.join(available)}")
        self.threads = threads

    def _open(self, name: str) -> GraphSession:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = self.directory / self.manifest.graphs[name].file
        if not path.is_file():
            from ..errors import ManifestError

            raise ManifestError(f"graph file {path} is missing", "copy the whole export directory again")
        return OrtGraph(self.ort.InferenceSession(str(path), options, providers=self.providers))
