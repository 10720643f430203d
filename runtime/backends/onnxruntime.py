"""ONNX Runtime backend: the CPU by default, or any execution provider the installed onnxruntime offers.

On the CPU the decoder's KV cache is host memory the graph reads in place (`kv_host`); with a GPU provider (the
CUDA or TensorRT execution providers of onnxruntime-gpu) it lives in device memory behind IO binding
(`ort_device`); only the hidden states of the new positions come back to the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import kv
from ..errors import BackendError, ManifestError
from ..kv import kv_input
from ..manifest import Manifest
from ..tensor_names import ATTENTION_MASK, HIDDEN_STATES, INPUTS_EMBEDS, POSITION_IDS
from .base import Backend, GraphSession, KVDecoder, check_step, step_mask
from .kv_host import BufferPool, HostKVCache

if TYPE_CHECKING:
    from .ort_device import CudaCopies

DEVICE_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
# Short names for --provider: TensorRT's EP falls back to CUDA's for nodes TensorRT does not take
PROVIDER_ALIASES = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider"],
                    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}


PROVIDER_FIX = "install the onnxruntime-gpu build for this CUDA, cuDNN and TensorRT, or use --provider cpu"

class OrtGraph(GraphSession):
    def __init__(self, session):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if all(isinstance(value, np.ndarray) for value in feeds.values()):
            return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        binding = self.session.io_binding()  # some feeds stay where ONNX Runtime holds them (ort_device.OnDevice)
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value.value)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return {name: value.numpy() for name, value in zip(self.output_names, binding.get_outputs())}


class HostKVDecoder(KVDecoder):
    """The KV cache in host memory (`HostKVCache`), fed to ONNX Runtime as numpy views and updated in place.

    "in_place" form: the graph returns the new positions and this writes them into the cache; with `binding` the
    views are wrapped as OrtValues and bound once per bucket (the CPU provider reads them where they lie either
    way), without it they are plain `run()` inputs. "ort_gqa" form: each view is bound as both the cache input and
    the `present` output, and GroupQueryAttention writes the new positions into it (always bound).
    """

    cache: HostKVCache

    def __init__(self, graph: OrtGraph, manifest: Manifest, batch: int, capacity: int | None, pool: BufferPool,
                 binding: bool = False):
        model = manifest.model
        self.graph, self.batch, self.length, self.capacity = graph, batch, 0, capacity
        self.max_context = manifest.limits.max_context
        self.form = kv.kv_form(manifest.kv_cache.form)
        self.writes_cache = self.form.writes_cache  # the graph writes the new positions itself (ort_gqa)
        self.cache = HostKVCache(pool, model, manifest.kv_dtype, batch, capacity, self.max_context)
        # (cache tensor, the decoder output that writes it: its new positions, or itself in the ort_gqa form)
        self.new_outputs = [(name, self.form.output(name)) for name in self.cache.names]
        self.binding = graph.session.io_binding() if binding or self.writes_cache else None
        # the outputs that come back to the host each step: everything but the cache itself
        self.step_outputs = [n for n in graph.output_names if n == HIDDEN_STATES or not self.writes_cache]
        if self.binding is not None:  # bound first, so they lead the binding's outputs (the cache's follow)
            for name in self.step_outputs:
                self.binding.bind_output(name, "cpu")
        self._bind_cache()

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
        small = {INPUTS_EMBEDS: inputs_embeds, ATTENTION_MASK: mask, POSITION_IDS: position_ids}
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
            self.cache.write({name: outputs[output] for name, output in self.new_outputs}, self.length)
        self.length += seq
        hidden = outputs[HIDDEN_STATES]
        return hidden[:, -1:] if last_only else hidden

    def close(self) -> None:
        self.cache.release()
        self.binding = None


class OnnxRuntimeBackend(Backend):
    """`providers`: ONNX Runtime execution providers (names, (name, options) pairs, or `PROVIDER_ALIASES` words);
    the CPU's by default. With a GPU provider the KV cache lives in device memory (ort_device.py); `device_cache`
    puts it there on the CPU provider too (the same code, which the tests run)."""

    name = "onnxruntime"

    def __init__(self, directory: Path, manifest: Manifest, providers: list | None = None, threads: int = 0,
                 io_binding: bool | None = None, device_cache: bool = False):
        super().__init__(directory, manifest)
        try:
            import onnxruntime
        except ImportError:
            raise BackendError("onnxruntime is not installed", "pip install onnxruntime (or onnxruntime-gpu)") from None
        self.ort = onnxruntime
        self.providers = provider_list(providers or ["CPUExecutionProvider"])
        gpu = next(((name, options) for name, options in self.providers if name in DEVICE_PROVIDERS), None)
        if gpu is not None:  # before any session is built, and whether or not the provider is installed
            kv.check_support(manifest.kv_cache.form, backend=kv.ORT_GPU)
        available = onnxruntime.get_available_providers()
        for name, _ in self.providers:
            if name not in available:
                raise BackendError(f"ONNX Runtime provider {name} is not available here",
                                   f"choose from {', '.join(available)} (GPU providers need onnxruntime-gpu)")
        self.device = "cpu" if gpu is None else DEVICE_PROVIDERS[gpu[0]]
        self.device_id = 0 if gpu is None else int(gpu[1].get("device_id", 0))
        self.device_cache = self.device != "cpu" or device_cache
        self.io_binding = bool(io_binding)
        self.threads = threads
        self.copies: CudaCopies | None = None  # made on first use (`_gpu`)
        if self.device_cache:
            from .ort_device import ort_zeros

            self.pool = BufferPool(ort_zeros(self.device, self.device_id))
        else:
            self.pool = BufferPool()

    def _gpu(self) -> CudaCopies:
        """The CUDA stream every session of a GPU provider computes on and the cache's row copies are queued on;
        made on first use, and again if the backend is used after `close`."""
        if self.copies is None:
            from .ort_device import CudaCopies

            self.copies = CudaCopies()
        return self.copies

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

            providers = session_providers(providers, self.manifest, name, self._gpu().stream.ptr)
        errors = self.ort.capi.onnxruntime_pybind11_state
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        try:
            session = self.ort.InferenceSession(str(path), options, providers=providers)
        except errors.EPFail as exc:
            raise BackendError(f"ONNX Runtime could not start {wanted} for {path.name} ({exc})", PROVIDER_FIX) from None
        except (errors.InvalidProtobuf, errors.InvalidGraph, errors.NotImplemented, errors.Fail) as exc:
            raise BackendError(f"{path.name} cannot be loaded by ONNX Runtime {self.ort.__version__} ({exc})",
                               "re-run `janus-edge export` (or use the onnxruntime version it names)") from None
        # ONNX Runtime falls back to other providers instead of failing (and again at run time): a GPU cache read by a
        # session that silently moved to the CPU, or to another stream, would be garbage, so that is refused here
        session.disable_fallback()
        if session.get_providers()[0] != wanted:
            raise BackendError(f"ONNX Runtime fell back from {wanted} to {session.get_providers()[0]} for {path.name} "
                               "(see its 'EP Error' line above)", PROVIDER_FIX)
        return OrtGraph(session)

    def kv_decoder(self, batch: int, capacity: int | None = None) -> KVDecoder:
        graph = self.graph("decoder")
        assert isinstance(graph, OrtGraph)
        if self.device_cache:
            from .ort_device import DeviceKVDecoder, host_copy_rows

            copy_rows = self._gpu().copy_rows if self.device != "cpu" else host_copy_rows
            return DeviceKVDecoder(graph, self.manifest, batch, capacity, self.pool, copy_rows, self.device,
                                   self.device_id)
        return HostKVDecoder(graph, self.manifest, batch, capacity, self.pool, binding=self.io_binding)

    def embed(self, graph: str, ids: np.ndarray):
        """With the device cache, the embeddings stay on the device for the decoder (`ort_device.OnDevice`)."""
        if not self.device_cache:
            return super().embed(graph, ids)
        from .ort_device import device_embed

        session = self.graph(graph)
        assert isinstance(session, OrtGraph)
        return device_embed(session.session, self.manifest.graphs[graph], ids, self.device, self.device_id)

    def close(self) -> None:
        super().close()
        self.pool.clear()
        if self.copies is not None:
            self.copies.close()
            self.copies = None


def provider_list(providers: list) -> list[tuple[str, dict]]:
    """`providers` as (name, options) pairs, each `PROVIDER_ALIASES` word replaced by the providers it stands for."""
    result: list[tuple[str, dict]] = []
    for provider in providers:
        if isinstance(provider, (tuple, list)):
            result.append((provider[0], dict(provider[1])))
        else:
            result.extend((name, {}) for name in PROVIDER_ALIASES.get(provider, [provider]))
    return result
