"""ONNX Runtime backend: the CPU by default, or any execution provider the installed onnxruntime offers.

On the CPU the decoder's KV cache is host memory the graph reads in place (`kv_host`); with a GPU provider (the
CUDA or TensorRT execution providers of onnxruntime-gpu) it lives in device memory behind IO binding
(`ort_device`); only the hidden states of the new positions come back to the host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import kv
from ..errors import BackendError, ManifestError
from ..kv import kv_input
from ..manifest import Manifest
from .base import Backend, GraphSession, KVDecoder, check_step, step_mask
from .kv_host import BufferPool, HostKVCache

DEVICE_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


class OrtGraph(GraphSession):
    def __init__(self, session):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class HostKVDecoder(KVDecoder):
    """The KV cache in host memory (`HostKVCache`), fed to ONNX Runtime as numpy views and updated in place.

    "in_place" form: the graph returns the new positions and this writes them into the cache; with `binding` the
    views are wrapped as OrtValues and bound once per bucket (the CPU provider reads them where they lie either
    way), without it they are plain `run()` inputs. "ort_gqa" form: each view is bound as both the cache input and
    the `present` output, and GroupQueryAttention writes the new positions into it (always bound).
    """

    def __init__(self, graph: OrtGraph, manifest: Manifest, batch: int, capacity: int | None, pool: BufferPool,
                 binding: bool = False):
        model = manifest.model
        self.graph, self.batch, self.length, self.capacity = graph, batch, 0, capacity
        self.max_context, self.names = manifest.limits.max_context, manifest.model.kv_names
        self.form = kv.kv_form(manifest.kv_cache.form)
        self.writes_cache = self.form.writes_cache  # the graph writes the new positions itself (ort_gqa)
        self.cache = HostKVCache(pool, self.names, batch, model.num_kv_heads, model.head_dim, manifest.kv_dtype,
                                 capacity, self.max_context)
        self.binding = graph.session.io_binding() if binding or self.writes_cache else None
        # the outputs that come back to the host each step: everything but the cache itself
        self.step_outputs = [n for n in graph.output_names if n == "hidden_states" or not self.writes_cache]
        if self.binding is not None:  # bound first, so they lead the binding's outputs (the cache's follow)
            for name in self.step_outputs:
                self.binding.bind_output(name, "cpu")
        self._bind_cache()

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def _bind_cache(self) -> None:
        if self.binding is None:
            return
        import onnxruntime

        for name, view in self.cache.views().items():
            value = onnxruntime.OrtValue.ortvalue_from_numpy(view)
            self.binding.bind_ortvalue_input(kv_input(name), value)
            if self.writes_cache:
                self.binding.bind_ortvalue_output(self.form.output(name), value)

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, inputs_embeds.shape, attention_mask.shape, self.max_context)
        seq = inputs_embeds.shape[1]
        if self.cache.reserve(self.length + seq, self.length):
            self._bind_cache()
        mask = attention_mask if self.writes_cache else step_mask(attention_mask, self.length, self.cache.slots)
        small = {"inputs_embeds": inputs_embeds, "attention_mask": mask, "position_ids": position_ids}
        if self.binding is None:
            outputs = self.graph.run({**small, **{kv_input(n): v for n, v in self.cache.views().items()}})
        else:
            for name, value in small.items():
                self.binding.bind_cpu_input(name, np.ascontiguousarray(value))
            # outputs are bound again every step: a binding keeps the last run's output values, whose shapes
            # (sequence 632 after a prefill) would be wrong for the next step (measured: ONNX Runtime refuses it)
            for name in self.step_outputs:
                self.binding.bind_output(name, "cpu")
            self.graph.session.run_with_iobinding(self.binding)
            values = self.binding.get_outputs()[:len(self.step_outputs)]  # not the bound cache: never copied
            outputs = {name: value.numpy() for name, value in zip(self.step_outputs, values)}
        if not self.writes_cache:
            self.cache.write({name: outputs[self.form.output(name)] for name in self.names}, self.length)
        self.length += seq
        hidden = outputs["hidden_states"]
        return hidden[:, -1:] if last_only else hidden

    def close(self) -> None:
        self.cache.release()
        self.binding = None


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
        self.device = next((DEVICE_PROVIDERS[n] for n in names if n in DEVICE_PROVIDERS), "cpu")
        if self.device != "cpu":  # before any session is built, and whether or not the provider is installed
            kv.check_support(manifest.kv_cache.form, backend=kv.ORT_GPU)
        for name in names:
            if name not in available:
                raise BackendError(f"ONNX Runtime provider {name} is not available here",
                                   f"choose from {', '.join(available)} (GPU providers need onnxruntime-gpu)")
        self.io_binding = self.device != "cpu" if io_binding is None else io_binding
        self.threads = threads
        self.pool = BufferPool()

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
        providers = self.providers
        if self.device != "cpu":
            from .ort_device import session_providers

            providers = session_providers(providers, self.manifest, name, self.directory / "ort_tensorrt_cache")
        errors = self.ort.capi.onnxruntime_pybind11_state
        try:
            return OrtGraph(self.ort.InferenceSession(str(path), options, providers=providers))
        except (errors.InvalidProtobuf, errors.InvalidGraph, errors.NotImplemented, errors.Fail) as exc:
            raise BackendError(f"{path.name} cannot be loaded by ONNX Runtime {self.ort.__version__} ({exc})",
                               "re-run `janus-edge export` (or use the onnxruntime version it names)") from None

    def kv_decoder(self, batch: int, capacity: int | None = None) -> KVDecoder:
        graph = self.graph("decoder")
        assert isinstance(graph, OrtGraph)
        if self.device != "cpu":
            from .ort_device import DeviceKVDecoder

            return DeviceKVDecoder(graph, self.manifest, batch, capacity, self.device)
        return HostKVDecoder(graph, self.manifest, batch, capacity, self.pool, binding=self.io_binding)

    def close(self) -> None:
        super().close()
        self.pool.clear()
