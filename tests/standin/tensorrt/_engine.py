"""Runtime side of the TensorRT stand-in: deserialise a plan (bytes or an IStreamReader), engines, device memory.

Rules enforced (each a False return or None plus an error log, as TensorRT reports them):
- the plan deserialises only on the TensorRT version and compute capability it was built with (another GPU model
  of the same capability loads with a warning, as in TensorRT); an IStreamReader must deliver every byte asked for;
- engine weights are a device allocation of the plan's weight size, freed when the engine goes;
- context memory per profile is the builder's figure (see _build.py) and
  `create_execution_context(strategy)` allocates as TensorRT does: STATIC the maximum over profiles now,
  ON_PROFILE_CHANGE the selected profile's size (again on every change), USER_MANAGED nothing (the user calls
  `set_device_memory`); the execution context itself is in _context.py.
"""

from __future__ import annotations

import json
import os
import weakref
from enum import IntEnum

import numpy as np

from ._build import PLAN_MAGIC, IHostMemory, machine
from ._common import VERSION, DataType, Dims, ILogger, IStreamReader, TensorIOMode, nptype
from ._context import DeviceAllocation, IExecutionContext

_HEADER_LENGTH = 17  # 16 digits and a newline
_CHUNK = 64 << 20  # an IStreamReader is read this much at a time


class ExecutionContextAllocationStrategy(IntEnum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


def _read(source: "bytes | IStreamReader", size: int, offset: int) -> bytes | None:
    if isinstance(source, IStreamReader):
        chunks = []
        while size > 0:
            chunk = bytes(source.read(min(size, _CHUNK)))  # type: ignore[attr-defined]
            if not chunk or len(chunk) > min(size, _CHUNK):
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)
    data = bytes(source[offset:offset + size])
    return data if len(data) == size else None


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def _refuse(self, message: str) -> None:
        self.logger.log(ILogger.Severity.ERROR, f"IRuntime::deserializeCudaEngine: {message}")

    def deserialize_cuda_engine(self, serialized_engine: "bytes | IStreamReader") -> "ICudaEngine | None":
        source = serialized_engine if isinstance(serialized_engine, IStreamReader) else memoryview(serialized_engine)
        magic = _read(source, len(PLAN_MAGIC), 0)
        if magic != PLAN_MAGIC:
            self._refuse("the data is not an engine plan")
            return None
        length = _read(source, _HEADER_LENGTH, len(PLAN_MAGIC))
        header_bytes = _read(source, int(length), len(PLAN_MAGIC) + _HEADER_LENGTH) if length else None
        if header_bytes is None:
            self._refuse("the plan ends inside its header")
            return None
        header = json.loads(header_bytes)
        here = machine()
        if header["trt"] != VERSION:
            self._refuse(f"The engine plan file is not compatible with this version of TensorRT, expecting library "
                         f"version {VERSION} got {header['trt']}")
            return None
        if header["cc"] != here["cc"]:
            self._refuse(f"The engine plan file is generated on an incompatible device, expecting compute "
                         f"{here['cc']} got compute {header['cc']}")
            return None
        if header["gpu"] != here["gpu"]:
            self.logger.log(ILogger.Severity.WARNING, "Using an engine plan file across different models of devices "
                            "is not recommended and is likely to affect performance or even cause errors.")
        onnx_bytes = _read(source, header["weights_bytes"], len(PLAN_MAGIC) + _HEADER_LENGTH + len(header_bytes))
        if onnx_bytes is None:
            self._refuse("the plan ends before its weights do (a short read from the stream)")
            return None
        try:
            weights = DeviceAllocation(len(onnx_bytes))
        except MemoryError:
            self._refuse("out of device memory for the engine's weights")
            return None
        return ICudaEngine(header, onnx_bytes, weights, self.logger)


class ICudaEngine:
    def __init__(self, header: dict, onnx_bytes: bytes, weights: DeviceAllocation, logger: ILogger) -> None:
        self._header = header
        self._io = {t["name"]: t for t in header["io"]}
        self._order = [t["name"] for t in header["io"]]
        self._profiles = header["profiles"]
        self._onnx, self._weights, self._logger = onnx_bytes, weights, logger
        self._session = None
        self._shape_cache: dict[tuple, dict[str, tuple[int, ...]]] = {}
        self._profile_owners: dict[int, weakref.ref] = {}
        self._contexts: weakref.WeakSet = weakref.WeakSet()  # live contexts

    @property
    def name(self) -> str:
        return self._header["name"]

    @property
    def num_io_tensors(self) -> int:
        return len(self._order)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    @property
    def device_memory_size(self) -> int:
        return max(self._header["device_memory_sizes"])

    @property
    def device_memory_size_v2(self) -> int:
        """Context memory a STATIC context allocates: the maximum over the profiles."""
        return max(self._header["device_memory_sizes"])

    def get_device_memory_size_for_profile(self, profile_index: int) -> int:
        return self.get_device_memory_size_for_profile_v2(profile_index)

    def get_device_memory_size_for_profile_v2(self, profile_index: int) -> int:
        if not 0 <= profile_index < len(self._profiles):
            raise ValueError(f"profile index {profile_index} out of range")
        return int(self._header["device_memory_sizes"][profile_index])

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
        strategy = ExecutionContextAllocationStrategy(strategy)
        profile = -1 if self._live_owner(0) else 0
        try:
            context = IExecutionContext(self, strategy.name, profile)
        except MemoryError:
            self._logger.log(ILogger.Severity.ERROR, "out of device memory for an execution context")
            return None
        self._contexts.add(context)
        if profile == 0:
            self._profile_owners[0] = weakref.ref(context)
        return context

    def serialize(self) -> IHostMemory:
        encoded = json.dumps(self._header).encode()
        return IHostMemory(PLAN_MAGIC + b"%016d\n" % len(encoded) + encoded + self._onnx)

    def _capturable(self) -> bool:
        marked = os.environ.get("JANUS_STANDIN_NOT_CAPTURABLE", "").split(",")
        return self._header["capturable"] and self.name not in marked

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
