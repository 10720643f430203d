"""TensorRT backend: engines built by `janus-edge build`, device-resident buffers, one CUDA stream.

- One execution context per engine (TensorRT's default allocation gives it activation memory for its largest
  profile, once); it switches optimisation profile when a call needs another (prefill <-> decode, once per request).
- Every engine's inputs and outputs live in device buffers that grow to the largest shape seen, reused afterwards.
- The decoder's KV cache lives on the device in the export's KV dtype, sized per request, written in place, and
  its decode step replays a CUDA graph (`trt_decoder`).
- Per greedy decode step only token ids cross between host and device: embeddings, hidden states and logits stay
  on the device, and CFG mixing and argmax run in a small sampler engine. Sampling at a temperature downloads the
  mixed logits and draws on the host (no CumSum on the device: slow before TensorRT 10.8).

TensorRT and cuda-python are imported lazily: this module imports on machines that have neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import BackendError, InternalError
from ..manifest import Manifest
from ..sampling import Sampler
from .base import Backend, GraphSession
from .cuda import DeviceBuffer, DevicePool, DeviceTensor, Stream, device_name_and_capability
from .engine_manifest import EngineManifest, check_compatible
from .trt_decoder import TrtKVDecoder

if TYPE_CHECKING:
    import tensorrt as trt

SAMPLERS = {"plain": "sampler", "cfg": "cfg_sampler"}


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
    """One engine with ONE execution context (activation memory for the largest profile, allocated once); the
    context switches profile when a call's shapes need another. Profile ranges are read once, here."""

    def __init__(self, engine: "trt.ICudaEngine", stream: Stream):
        import tensorrt as trt

        self.engine, self.stream = engine, stream
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in self.inputs + self.outputs}
        self.ranges = [{name: (_dims(low), _dims(high)) for name in self.inputs
                        for low, _, high in [engine.get_tensor_profile_shape(name, profile)]}
                       for profile in range(engine.num_optimization_profiles)]
        context = engine.create_execution_context()
        if context is None:
            raise BackendError("TensorRT could not create an execution context (out of device memory?)",
                               "free device memory or build with a smaller --max-context")
        self.context: "trt.IExecutionContext | None" = context
        self.profile = context.active_optimization_profile
        self.profile_changes = 0  # CUDA graphs captured at an older count are stale
        self.buffers: dict[str, DeviceBuffer] = {}

    def _profile(self, shapes: dict[str, tuple[int, ...]]) -> int:
        """The tightest profile that accepts `shapes` (decode steps fit the prefill profile too)."""
        fitting = [index for index, ranges in enumerate(self.ranges)
                   if all(all(lo <= d <= hi for d, lo, hi in zip(shape, *ranges[name])) for name, shape in shapes.items())]
        if not fitting:
            raise BackendError(f"no optimisation profile of this engine accepts input shapes {shapes}",
                               "rebuild the engines with larger limits (janus-edge build --max-batch/--max-context)")
        return min(fitting, key=lambda i: sum(np.prod(high, dtype=np.float64) for _, high in self.ranges[i].values()))

    def buffer(self, key: str, nbytes: int, exact: bool = False) -> DeviceBuffer:
        """This graph's IO buffer `key`, grown to hold `nbytes` (reused by every later call that fits)."""
        buffer = self.buffers.get(key)
        if buffer is None or buffer.nbytes < nbytes:
            if buffer is not None:
                buffer.free()
            # else grow to the next power of two: a mask that gains a column per step reallocates log2(n) times
            size = nbytes if exact else 1 << max(int(nbytes) - 1, 1).bit_length()
            buffer = self.buffers[key] = DeviceBuffer(size)
        return buffer

    def bind(self, inputs: dict[str, DeviceTensor], outputs: dict[str, DeviceBuffer]) -> dict[str, DeviceTensor]:
        """Sets the context's profile, input shapes and every IO address; returns the outputs' tensors. Outputs not
        in `outputs` go to this graph's own buffers."""
        context = self.context
        if context is None:
            raise InternalError("a closed TensorRT graph was used")
        shapes = {name: value.shape for name, value in inputs.items()}
        profile = self._profile(shapes)
        if profile != self.profile:
            if not context.set_optimization_profile_async(profile, self.stream.ptr):
                raise InternalError(f"TensorRT refused optimisation profile {profile}")
            self.profile, self.profile_changes = profile, self.profile_changes + 1
        for name, value in inputs.items():
            if not context.set_input_shape(name, value.shape):
                raise InternalError(f"TensorRT refused shape {value.shape} for input {name}")
            if not context.set_tensor_address(name, value.buffer.ptr):
                raise InternalError(f"TensorRT refused the address of input {name}")
        result = {}
        for name in self.outputs:
            shape = _dims(context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            target = outputs[name] if name in outputs else self.buffer(name, nbytes)
            if not context.set_tensor_address(name, target.ptr):
                raise InternalError(f"TensorRT refused the address of output {name}")
            result[name] = DeviceTensor(target, shape, self.dtypes[name])
        return result

    def execute(self) -> None:
        """Enqueues the bound work on the stream (recorded instead, while a CUDA graph is being captured)."""
        assert self.context is not None
        if not self.context.execute_async_v3(self.stream.ptr):
            raise BackendError("TensorRT failed to enqueue the engine", "see TensorRT's log above")

    def upload(self, name: str, value: np.ndarray) -> DeviceTensor:
        """A host array into this graph's buffer for input `name`."""
        value = np.ascontiguousarray(value, dtype=self.dtypes[name])
        buffer = self.buffer(name, value.nbytes)
        buffer.upload(value, self.stream)
        return DeviceTensor(buffer, tuple(value.shape), value.dtype)

    def run_device(self, feeds: dict[str, Feed]) -> dict[str, DeviceTensor]:
        """Runs on device tensors (host arrays are uploaded first)."""
        inputs = {name: self.upload(name, value) if isinstance(value, np.ndarray) else value
                  for name, value in feeds.items()}
        outputs = self.bind(inputs, {})
        self.execute()
        return outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.run_device(dict(feeds))
        return {name: t.download(self.stream) for name, t in outputs.items()}

    def close(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers.clear()
        self.context = None  # TensorRT frees the context's activation memory, then the engine's weights
        self.engine = None  # type: ignore[assignment]


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
        self.pool = DevicePool()  # KV-cache buffer sets, reused across requests
        self.cfg_weight: tuple[float, DeviceTensor] | None = None  # uploaded once per value, not per step

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

    def kv_decoder(self, batch: int, capacity: int | None = None) -> TrtKVDecoder:
        return TrtKVDecoder(self.graph("decoder"), self.manifest, batch, capacity, self.pool)

    def close(self) -> None:
        """Frees every device buffer, execution context and engine (decoders still open keep their cache until
        they close)."""
        self.stream.synchronize()
        for session in self._sessions.values():
            assert isinstance(session, TrtGraph)
            session.close()
        super().close()
        self.pool.clear()
        if self.cfg_weight is not None:
            self.cfg_weight[1].buffer.free()
            self.cfg_weight = None

    def embed(self, graph: str, ids: np.ndarray) -> DeviceTensor:
        name = self.manifest.graphs[graph].inputs[0].name
        return self.graph(graph).run_device({name: ids})["inputs_embeds"]

    def _cfg_weight(self, value: float) -> DeviceTensor:
        if self.cfg_weight is None:
            self.cfg_weight = (float("nan"), DeviceTensor(DeviceBuffer(4), (1,), np.dtype(np.float32)))
        if self.cfg_weight[0] != value:
            self.cfg_weight[1].buffer.upload(np.array([value], np.float32), self.stream)
            self.cfg_weight = (value, self.cfg_weight[1])
        return self.cfg_weight[1]

    def choose(self, head: str, hidden, sampler: Sampler, cfg_weight: float | None = None) -> np.ndarray:
        """Greedy: CFG mix and argmax in the sampler engine, only token ids come back. Sampling: the (mixed)
        logits come back and the host sampler draws, exactly as on ONNX Runtime (export/tensorrt/sampler_graph.py)."""
        logits = self.graph(head).run_device({"hidden_states": hidden})["logits"]
        flat = DeviceTensor(logits.buffer, (logits.shape[0], logits.shape[-1]), logits.dtype)
        feeds: dict[str, Feed] = {"logits": flat}
        if cfg_weight is not None:
            feeds["cfg_weight"] = self._cfg_weight(float(cfg_weight))
        greedy = sampler.temperature == 0 and sampler.top_k is None and sampler.top_p is None
        if not greedy and cfg_weight is None:
            return sampler(flat.download(self.stream))
        outputs = self.graph(SAMPLERS["cfg" if cfg_weight is not None else "plain"]).run_device(feeds)
        chosen = outputs["greedy" if greedy else "mixed"]
        host = chosen.download(self.stream)
        return host if greedy else sampler(host)
