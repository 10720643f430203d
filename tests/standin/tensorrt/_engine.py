"""Runtime side of the TensorRT stand-in: deserialise a plan, execution contexts, enqueue on a stream.

Rules enforced (each a False return or None plus an error log, as TensorRT reports them):
- the plan deserialises only on the TensorRT version and compute capability it was built with (another GPU model
  of the same capability loads with a warning, as in TensorRT);
- engine weights and each context's activation memory are device allocations (freed when the object goes);
- the first context gets profile 0; a profile held by another live context of the engine cannot be selected;
  selecting a profile forgets the input shapes;
- input shapes must lie inside the selected profile; every IO tensor needs an address (inside one device
  allocation large enough for its shape and dtype) before execute_async_v3; streams are plain ints.
"""

from __future__ import annotations

import json
import weakref
from enum import IntEnum

import numpy as np

from cuda.bindings import runtime as cudart

from ._build import PLAN_MAGIC, IHostMemory, machine
from ._common import VERSION, DataType, Dims, ILogger, TensorIOMode, nptype


class ExecutionContextAllocationStrategy(IntEnum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class _DeviceAllocation:
    def __init__(self, nbytes: int) -> None:
        status, self.ptr = cudart.cudaMalloc(nbytes)
        if status != cudart.cudaError_t.cudaSuccess:
            raise MemoryError(f"cudaMalloc({nbytes}) failed: {status!r}")

    def __del__(self) -> None:
        cudart.cudaFree(self.ptr)


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> "ICudaEngine | None":
        data = bytes(serialized_engine)
        if not data.startswith(PLAN_MAGIC):
            self.logger.log(ILogger.Severity.ERROR, "IRuntime::deserializeCudaEngine: the data is not an engine plan")
            return None
        header_line, _, onnx_bytes = data[len(PLAN_MAGIC):].partition(b"\n")
        header = json.loads(header_line)
        here = machine()
        if header["trt"] != VERSION:
            self.logger.log(ILogger.Severity.ERROR, f"The engine plan file is not compatible with this version of "
                            f"TensorRT, expecting library version {VERSION} got {header['trt']}")
            return None
        if header["cc"] != here["cc"]:
            self.logger.log(ILogger.Severity.ERROR, f"The engine plan file is generated on an incompatible device, "
                            f"expecting compute {here['cc']} got compute {header['cc']}")
            return None
        if header["gpu"] != here["gpu"]:
            self.logger.log(ILogger.Severity.WARNING, "Using an engine plan file across different models of devices "
                            "is not recommended and is likely to affect performance or even cause errors.")
        try:
            weights = _DeviceAllocation(len(onnx_bytes))
        except MemoryError:
            self.logger.log(ILogger.Severity.ERROR, "out of device memory for the engine's weights")
            return None
        return ICudaEngine(header, onnx_bytes, weights, self.logger, data)


class ICudaEngine:
    def __init__(self, header: dict, onnx_bytes: bytes, weights: _DeviceAllocation, logger: ILogger,
                 plan: bytes) -> None:
        self._io = {t["name"]: t for t in header["io"]}
        self._order = [t["name"] for t in header["io"]]
        self._profiles = header["profiles"]
        self._onnx, self._weights, self._logger, self._plan = onnx_bytes, weights, logger, plan
        self._session = None
        self._shape_cache: dict[tuple, dict[str, tuple[int, ...]]] = {}
        self._profile_owners: dict[int, weakref.ref] = {}
        self.device_memory_size = int(header["device_memory_size"])

    @property
    def num_io_tensors(self) -> int:
        return len(self._order)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def get_tensor_name(self, index: int) -> str:
        return self._order[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode(self._io[name]["mode"]) if name in self._io else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType(self._io[name]["dtype"])

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._io[name]["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if self.get_tensor_mode(name) != TensorIOMode.INPUT or not 0 <= profile_index < len(self._profiles):
            raise ValueError(f"no profile shape for {name!r} in profile {profile_index}")
        return [Dims(s) for s in self._profiles[profile_index][name]]

    def create_execution_context(self, strategy: ExecutionContextAllocationStrategy =
                                 ExecutionContextAllocationStrategy.STATIC) -> "IExecutionContext | None":
        try:
            memory = _DeviceAllocation(self.device_memory_size)
        except MemoryError:
            self._logger.log(ILogger.Severity.ERROR, "out of device memory for an execution context")
            return None
        context = IExecutionContext(self, memory)
        if not self._live_owner(0):
            self._profile_owners[0] = weakref.ref(context)
            context._profile = 0
        return context

    def serialize(self) -> IHostMemory:
        return IHostMemory(self._plan)

    def _live_owner(self, profile: int) -> "IExecutionContext | None":
        owner = self._profile_owners.get(profile)
        return owner() if owner is not None else None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        if self._session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(self._onnx, options, providers=["CPUExecutionProvider"])
        outputs = [n for n in self._order if self._io[n]["mode"] == TensorIOMode.OUTPUT]
        return dict(zip(outputs, self._session.run(outputs, feeds)))

    def _output_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Output shapes for these input shapes (TensorRT infers them; here: one run on zeros, cached)."""
        key = tuple(sorted(shapes.items()))
        if key not in self._shape_cache:
            feeds = {name: np.zeros(shape, nptype(self.get_tensor_dtype(name))) for name, shape in shapes.items()}
            self._shape_cache[key] = {name: value.shape for name, value in self._run(feeds).items()}
        return self._shape_cache[key]


class IExecutionContext:
    def __init__(self, engine: ICudaEngine, memory: _DeviceAllocation) -> None:
        self.engine, self._memory = engine, memory
        self._profile = -1
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    @property
    def active_optimization_profile(self) -> int:
        return self._profile

    def _error(self, message: str) -> bool:
        self.engine._logger.log(ILogger.Severity.ERROR, message)
        return False

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        if not isinstance(stream_handle, int):
            raise TypeError("set_optimization_profile_async(): stream_handle must be an int")
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            return self._error(f"profile index {profile_index} out of range")
        owner = self.engine._live_owner(profile_index)
        if owner is not None and owner is not self:
            return self._error(f"profile {profile_index} is already used by another execution context")
        self.engine._profile_owners.pop(self._profile, None)
        self.engine._profile_owners[profile_index] = weakref.ref(self)
        self._profile, self._shapes = profile_index, {}
        return True

    def set_input_shape(self, name: str, shape: Dims | tuple | list) -> bool:
        if self.engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return self._error(f"set_input_shape: {name!r} is not an input tensor")
        if self._profile < 0:
            return self._error("set_input_shape: no optimization profile selected for this context")
        shape = tuple(Dims(shape))
        low, _, high = (tuple(d) for d in self.engine.get_tensor_profile_shape(name, self._profile))
        if len(shape) != len(low) or not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return self._error(f"set_input_shape: {name} {shape} is outside profile {self._profile} [{low}, {high}]")
        self._shapes[name] = shape
        return True

    def _inputs(self) -> list[str]:
        return [n for n in self.engine._order if self.engine.get_tensor_mode(n) == TensorIOMode.INPUT]

    def infer_shapes(self) -> list[str]:
        return [name for name in self._inputs() if name not in self._shapes]

    def get_tensor_shape(self, name: str) -> Dims:
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return Dims(self._shapes.get(name, self.engine.get_tensor_shape(name)))
        if self.infer_shapes():
            return self.engine.get_tensor_shape(name)  # unknown until every input shape is set
        return Dims(self.engine._output_shapes(self._shapes)[name])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
            return self._error(f"set_tensor_address: no tensor named {name!r}")
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        if not isinstance(stream_handle, int):
            raise TypeError("execute_async_v3(): incompatible function arguments: stream_handle must be an int")
        missing = self.infer_shapes()
        if self._profile < 0 or missing:
            return self._error(f"execute_async_v3: input shapes not set: {missing} (profile {self._profile})")
        unset = [n for n in self.engine._order if not self._addresses.get(n)]
        if unset:
            return self._error(f"execute_async_v3: no address set for tensors {unset}")
        shapes = {**self._shapes, **self.engine._output_shapes(self._shapes)}
        for name, shape in shapes.items():  # every tensor must fit in one device allocation
            nbytes = int(np.prod(shape)) * np.dtype(nptype(self.engine.get_tensor_dtype(name))).itemsize
            if nbytes and cudart._locate(self._addresses[name], nbytes) is None:
                return self._error(f"execute_async_v3: {name} {shape} does not fit the device memory at "
                                   f"{self._addresses[name]:#x}")
        addresses, inputs = dict(self._addresses), self._inputs()

        def work() -> None:
            feeds = {}
            for name in inputs:
                dtype = np.dtype(nptype(self.engine.get_tensor_dtype(name)))
                raw = cudart.read_device(addresses[name], int(np.prod(shapes[name])) * dtype.itemsize)
                feeds[name] = np.frombuffer(raw, dtype).reshape(shapes[name])
            for name, value in self.engine._run(feeds).items():
                value = np.ascontiguousarray(value, nptype(self.engine.get_tensor_dtype(name)))
                cudart.write_device(addresses[name], value.tobytes())

        return cudart.enqueue(stream_handle, work) == cudart.cudaError_t.cudaSuccess
