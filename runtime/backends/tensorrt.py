"""TensorRT backend: engines built by `janus-edge build`, device-resident buffers, one CUDA stream.

- Every engine's inputs and outputs live in device buffers that grow to the largest shape seen.
- The decoder's KV cache is preallocated on the device for the maximum context (two buffers per tensor, used in
  turn as past and present), and never copied to the host.
- Per greedy decode step only token ids cross between host and device: embeddings, hidden states and logits stay
  on the device, and CFG mixing and argmax run in a small sampler engine. Sampling at a temperature downloads the
  mixed logits and draws on the host (no CumSum on the device: slow before TensorRT 10.8).
- Not done: CUDA-graph capture of the decode step. The decoder graph's past length grows every step (its KV is
  concatenated inside the graph), so shapes never repeat; capture needs a static-cache decoder graph.

TensorRT and cuda-python are imported lazily: this module imports on machines that have neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import BackendError, InternalError
from ..manifest import Manifest
from ..sampling import Sampler
from .base import Backend, GraphSession, KVDecoder, check_step
from .cuda import DeviceBuffer, Stream, device_name_and_capability
from .engine_manifest import EngineManifest, check_compatible

if TYPE_CHECKING:
    import tensorrt as trt

SAMPLERS = {"plain": "sampler", "cfg": "cfg_sampler"}


@dataclass
class DeviceTensor:
    buffer: DeviceBuffer
    shape: tuple[int, ...]
    dtype: np.dtype


Feed = Union[np.ndarray, DeviceTensor]


def require_tensorrt() -> None:
    """Raises a user error unless the TensorRT library (not only its type stubs) can be imported."""
    try:
        import tensorrt
    except ImportError:
        raise BackendError("TensorRT is not installed", "on Jetson it comes with JetPack; see docs/jetson.md") \
            from None
    if not hasattr(tensorrt, "Runtime"):  # type stubs or an empty namespace package, not the library
        raise BackendError("`import tensorrt` found no TensorRT library (only stubs?)",
                           "install TensorRT's Python bindings for this machine")


def _dims(dims: Any) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


class TrtGraph(GraphSession):
    """One engine, with an execution context per optimisation profile."""

    def __init__(self, engine: "trt.ICudaEngine", stream: Stream):
        import tensorrt as trt

        self.engine, self.stream = engine, stream
        self.inputs = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)
                       if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT]
        self.outputs = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)
                        if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in self.inputs + self.outputs}
        self.contexts: list["trt.IExecutionContext"] = []
        for profile in range(engine.num_optimization_profiles):
            context = engine.create_execution_context()
            if context is None:
                raise BackendError("TensorRT could not create an execution context (out of device memory?)",
                                   "free device memory or build with a smaller --max-context")
            if not context.set_optimization_profile_async(profile, stream.ptr):
                raise InternalError(f"TensorRT refused optimisation profile {profile} for a new context")
            self.contexts.append(context)
        self.buffers: dict[str, DeviceBuffer] = {}

    def _profile(self, shapes: dict[str, tuple[int, ...]]) -> int:
        for index in range(len(self.contexts)):
            ranges = {name: self.engine.get_tensor_profile_shape(name, index) for name in shapes}
            if all(all(lo <= d <= hi for d, lo, hi in zip(shape, _dims(ranges[name][0]), _dims(ranges[name][2])))
                   for name, shape in shapes.items()):
                return index
        raise BackendError(f"no optimisation profile of this engine accepts input shapes {shapes}",
                           "rebuild the engines with larger limits (janus-edge build --max-batch/--max-context)")

    def _buffer(self, key: str, nbytes: int) -> DeviceBuffer:
        buffer = self.buffers.get(key)
        if buffer is None or buffer.nbytes < nbytes:
            if buffer is not None:
                buffer.free()
            # grow to the next power of two: a mask that gains a column every step reallocates log2(n) times
            buffer = self.buffers[key] = DeviceBuffer(1 << max(int(nbytes) - 1, 1).bit_length())
        return buffer

    def run_device(self, feeds: dict[str, Feed], bound: dict[str, DeviceTensor] | None = None
                   ) -> dict[str, DeviceTensor]:
        """Runs on device tensors (host arrays are uploaded); outputs in `bound` are written where they point."""
        shapes = {name: tuple(value.shape) for name, value in feeds.items()}
        context = self.contexts[self._profile(shapes)]
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value, dtype=self.dtypes[name])
                buffer = self._buffer(name, value.nbytes)
                buffer.upload(value, self.stream)
            else:
                buffer = value.buffer
            if not context.set_input_shape(name, shapes[name]):
                raise InternalError(f"TensorRT refused shape {shapes[name]} for input {name}")
            if not context.set_tensor_address(name, buffer.ptr):
                raise InternalError(f"TensorRT refused the address of input {name}")
        outputs = {}
        for name in self.outputs:
            shape = _dims(context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            target = bound[name].buffer if bound and name in bound else self._buffer(name, nbytes)
            if not context.set_tensor_address(name, target.ptr):
                raise InternalError(f"TensorRT refused the address of output {name}")
            outputs[name] = DeviceTensor(target, shape, self.dtypes[name])
        if not context.execute_async_v3(self.stream.ptr):
            raise BackendError("TensorRT failed to enqueue the engine", "see TensorRT's log above")
        return outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.run_device(dict(feeds))
        return {name: t.buffer.download(t.shape, t.dtype, self.stream) for name, t in outputs.items()}


class TrtKVDecoder(KVDecoder):
    """KV cache in two preallocated device buffers per tensor, swapped every step (past <-> present)."""

    def __init__(self, graph: TrtGraph, manifest: Manifest, batch: int):
        model = manifest.model
        self.graph, self.batch, self.length = graph, batch, 0
        self.max_context = manifest.limits.max_context
        self.kv_shape = (batch, model.num_kv_heads, model.head_dim)
        names = [f"{i}.{kind}" for i in range(model.num_layers) for kind in ("key", "value")]
        nbytes = batch * model.num_kv_heads * self.max_context * model.head_dim * 4
        self.caches = {name: (DeviceBuffer(nbytes), DeviceBuffer(nbytes)) for name in names}
        self.current = 0

    def step(self, inputs_embeds: Feed, attention_mask: np.ndarray, position_ids: np.ndarray,
             last_only: bool = False):
        check_step(self, tuple(inputs_embeds.shape), attention_mask.shape, self.max_context)
        batch, heads, head_dim = self.kv_shape
        seq = inputs_embeds.shape[1]
        feeds: dict[str, Feed] = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                                  "position_ids": position_ids}
        bound = {}
        for name, buffers in self.caches.items():
            feeds[f"past_key_values.{name}"] = DeviceTensor(buffers[self.current], (batch, heads, self.length,
                                                                                     head_dim), np.dtype(np.float32))
            bound[f"present.{name}"] = DeviceTensor(buffers[1 - self.current], (), np.dtype(np.float32))
        outputs = self.graph.run_device(feeds, bound)
        self.current, self.length = 1 - self.current, self.length + seq
        hidden = outputs["hidden_states"]
        if last_only and seq > 1:  # once per request: slice the prefill's last position on the host
            return hidden.buffer.download(hidden.shape, hidden.dtype, self.graph.stream)[:, -1:]
        return hidden


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, directory: Path, manifest: Manifest):
        super().__init__(directory, manifest)
        require_tensorrt()
        import tensorrt as trt

        self.engines = EngineManifest.read(directory)
        gpu, capability = device_name_and_capability()
        check_compatible(self.engines, directory, trt.__version__, gpu, capability)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.stream = Stream()

    def _open(self, name: str) -> TrtGraph:
        info = self.engines.engines.get(name)
        if info is None:
            raise BackendError(f"no engine for graph {name!r} in {self.directory}", "rebuild the engines")
        engine = self.runtime.deserialize_cuda_engine((self.directory / info.file).read_bytes())
        if engine is None:
            raise BackendError(f"TensorRT could not load {info.file}", "rebuild the engines on this machine")
        return TrtGraph(engine, self.stream)

    def graph(self, name: str) -> TrtGraph:
        if name not in self._sessions:
            self._sessions[name] = self._open(name)
        session = self._sessions[name]
        assert isinstance(session, TrtGraph)
        return session

    def kv_decoder(self, batch: int) -> TrtKVDecoder:
        return TrtKVDecoder(self.graph("decoder"), self.manifest, batch)

    def embed(self, graph: str, ids: np.ndarray) -> DeviceTensor:
        name = self.manifest.graphs[graph].inputs[0].name
        return self.graph(graph).run_device({name: ids})["inputs_embeds"]

    def choose(self, head: str, hidden, sampler: Sampler, cfg_weight: float | None = None) -> np.ndarray:
        """Greedy: CFG mix and argmax in the sampler engine, only token ids come back. Sampling: the (mixed)
        logits come back and the host sampler draws, exactly as on ONNX Runtime (see export/sampler_graph.py)."""
        logits = self.graph(head).run_device({"hidden_states": hidden})["logits"]
        flat = DeviceTensor(logits.buffer, (logits.shape[0], logits.shape[-1]), logits.dtype)
        feeds: dict[str, Feed] = {"logits": flat}
        if cfg_weight is not None:
            feeds["cfg_weight"] = np.array([cfg_weight], np.float32)
        greedy = sampler.temperature == 0 and sampler.top_k is None and sampler.top_p is None
        if not greedy and cfg_weight is None:
            return sampler(flat.buffer.download(flat.shape, flat.dtype, self.stream))
        outputs = self.graph(SAMPLERS["cfg" if cfg_weight is not None else "plain"]).run_device(feeds)
        chosen = outputs["greedy" if greedy else "mixed"]
        host = chosen.buffer.download(chosen.shape, chosen.dtype, self.stream)
        return host if greedy else sampler(host)
