"""ONNX Runtime backend: the CPU by default, or any execution provider the installed onnxruntime offers.

With a GPU provider (the CUDA or TensorRT execution providers of onnxruntime-gpu) the decoder runs through IO
binding with a preallocated KV cache in device memory; only the hidden state of the new positions comes back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendError, ManifestError
from ..manifest import Manifest
from .base import Backend, GraphSession, KVDecoder, check_step

DEVICE_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


class OrtGraph(GraphSession):
    def __init__(self, session):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class HostKVDecoder(KVDecoder):
    """CPU: feeds the past tensors in as host arrays and keeps the present tensors the graph returns.

    Measured on the full-size 1B decoder (w4, CFG batch, past 300) this is faster on the CPU than binding
    preallocated buffers (48 vs 59 ms a step), so IO binding is used for device providers only.
    """

    def __init__(self, graph: OrtGraph, manifest: Manifest, batch: int):
        model = manifest.model
        self.graph, self.batch, self.max_context = graph, batch, manifest.limits.max_context
        self.names = [f"{i}.{kind}" for i in range(model.num_layers) for kind in ("key", "value")]
        empty = np.zeros((batch, model.num_kv_heads, 0, model.head_dim), dtype=np.float32)
        self.past = {f"past_key_values.{name}": empty for name in self.names}
        self.length = 0

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, inputs_embeds.shape, attention_mask.shape, self.max_context)
        outputs = self.graph.run({"inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                                  "position_ids": position_ids, **self.past})
        self.past = {f"past_key_values.{name}": outputs[f"present.{name}"] for name in self.names}
        self.length += inputs_embeds.shape[1]
        hidden = outputs["hidden_states"]
        return hidden[:, -1:] if last_only else hidden

    def rewind(self, length: int) -> None:
        super().rewind(length)
        self.past = {name: past[:, :, :length] for name, past in self.past.items()}


class BoundKVDecoder(KVDecoder):
    """The decoder through IO binding, with its KV cache in two preallocated buffers per tensor (on the CPU, or on
    the GPU with onnxruntime-gpu) that serve in turn as past and present.

    The graph still writes the whole present tensor each step (it concatenates inside), but into memory that is
    already allocated and warm: no per-step allocation of the cache (on the CPU, fresh allocations cost page faults
    on hundreds of megabytes per step at full size) and, on a GPU, no copy to the host.
    """

    def __init__(self, graph: OrtGraph, manifest: Manifest, batch: int, device: str, device_id: int = 0):
        import onnxruntime

        model = manifest.model
        self.graph, self.batch, self.length, self.max_context = graph, batch, 0, manifest.limits.max_context
        self.device, self.device_id = device, device_id
        self.heads, self.head_dim = model.num_kv_heads, model.head_dim
        self.names = [f"{i}.{kind}" for i in range(model.num_layers) for kind in ("key", "value")]
        capacity = [batch * model.num_kv_heads * self.max_context * model.head_dim]
        self.buffers = {name: [onnxruntime.OrtValue.ortvalue_from_shape_and_type(capacity, np.float32, device,
                                                                                  device_id) for _ in range(2)]
                        for name in self.names}
        self.current = 0

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, inputs_embeds.shape, attention_mask.shape, self.max_context)
        seq = inputs_embeds.shape[1]
        binding = self.graph.session.io_binding()
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(inputs_embeds, dtype=np.float32))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        binding.bind_output("hidden_states", "cpu")  # first bound, so first in get_outputs()
        past_shape = [self.batch, self.heads, self.length, self.head_dim]
        present_shape = [self.batch, self.heads, self.length + seq, self.head_dim]
        for name, (first, second) in self.buffers.items():
            past, present = (first, second) if self.current == 0 else (second, first)
            binding.bind_input(f"past_key_values.{name}", self.device, self.device_id, np.float32, past_shape,
                               past.data_ptr())
            binding.bind_output(f"present.{name}", self.device, self.device_id, np.float32, present_shape,
                                present.data_ptr())
        self.graph.session.run_with_iobinding(binding)
        self.current, self.length = 1 - self.current, self.length + seq
        hidden = binding.get_outputs()[0].numpy()
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
        # Several sessions take turns every step, each with its own thread pool: threads left spinning after a
        # small graph's run steal the cores from the decoder (measured on 2 cores, full-size 1B w4 at the CFG batch:
        # 84-96 ms a decoder step with spinning everywhere, 57 ms with none, 45 ms with the decoder's alone).
        if name != "decoder":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = self.directory / self.manifest.graphs[name].file
        if not path.is_file():
            raise ManifestError(f"graph file {path} is missing", "copy the whole export directory again")
        return OrtGraph(self.ort.InferenceSession(str(path), options, providers=self.providers))

    def kv_decoder(self, batch: int) -> KVDecoder:
        graph = self.graph("decoder")
        assert isinstance(graph, OrtGraph)
        if self.io_binding:
            return BoundKVDecoder(graph, self.manifest, batch, self.device)
        return HostKVDecoder(graph, self.manifest, batch)
