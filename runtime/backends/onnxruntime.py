"""ONNX Runtime backend: the CPU by default, or any execution provider the installed onnxruntime offers.

With a GPU provider (CUDA or TensorRT execution providers of onnxruntime-gpu) the decoder runs through IO binding:
the KV cache stays in device memory from step to step and only the hidden state of the new positions comes back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendError, ManifestError
from ..manifest import Manifest
from .base import Backend, GraphSession, HostKVDecoder, KVDecoder, check_step

DEVICE_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


class OrtGraph(GraphSession):
    def __init__(self, session):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class BoundKVDecoder(KVDecoder):
    """The decoder through IO binding: past/present tensors stay where `device` is (the GPU with onnxruntime-gpu)."""

    def __init__(self, graph: OrtGraph, manifest: Manifest, batch: int, device: str, device_id: int = 0):
        model = manifest.model
        self.graph, self.batch, self.length, self.max_context = graph, batch, 0, manifest.limits.max_context
        self.device, self.device_id = device, device_id
        self.names = [f"{i}.{kind}" for i in range(model.num_layers) for kind in ("key", "value")]
        self.empty = np.zeros((batch, model.num_kv_heads, 0, model.head_dim), dtype=np.float32)
        self.past: dict[str, object] = {}

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, inputs_embeds.shape, attention_mask.shape, self.max_context)
        binding = self.graph.session.io_binding()
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(inputs_embeds, dtype=np.float32))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        for name in self.names:
            if self.length == 0:  # nothing cached yet: an empty host tensor
                binding.bind_cpu_input(f"past_key_values.{name}", self.empty)
            else:
                binding.bind_ortvalue_input(f"past_key_values.{name}", self.past[name])
        binding.bind_output("hidden_states", "cpu")
        for name in self.names:
            binding.bind_output(f"present.{name}", self.device, self.device_id)
        self.graph.session.run_with_iobinding(binding)
        outputs = dict(zip(self.graph.output_names, binding.get_outputs()))
        self.past = {name: outputs[f"present.{name}"] for name in self.names}
        self.length += inputs_embeds.shape[1]
        hidden = outputs["hidden_states"].numpy()
        return hidden[:, -1:] if last_only else hidden


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, directory: Path, manifest: Manifest, providers: list | None = None, threads: int = 0,
                 io_binding: bool | None = None):
        super().__init__(directory, manifest)
        try:
            import onnxruntime
        except ImportError:
            raise BackendError("onnxruntime is not installed", "pip install onnxruntime (or onnxruntime-gpu)") from None
        self.ort = onnxruntime
        available = onnxruntime.get_available_providers()
        self.providers = providers or ["CPUExecutionProvider"]
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in self.providers]
        for name in names:
            if name not in available:
                raise BackendError(f"ONNX Runtime provider {name} is not available here",
                                   f"choose from {', '.join(available)} (GPU providers need onnxruntime-gpu)")
        self.device = next((DEVICE_PROVIDERS[n] for n in names if n in DEVICE_PROVIDERS), "cpu")
        self.io_binding = self.device != "cpu" if io_binding is None else io_binding
        self.threads = threads

    def _open(self, name: str) -> GraphSession:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = self.directory / self.manifest.graphs[name].file
        if not path.is_file():
            raise ManifestError(f"graph file {path} is missing", "copy the whole export directory again")
        return OrtGraph(self.ort.InferenceSession(str(path), options, providers=self.providers))

    def kv_decoder(self, batch: int) -> KVDecoder:
        graph = self.graph("decoder")
        if self.io_binding:
            assert isinstance(graph, OrtGraph)
            return BoundKVDecoder(graph, self.manifest, batch, self.device)
        return HostKVDecoder(graph, self.manifest, batch)
