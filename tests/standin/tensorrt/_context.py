"""IExecutionContext of the TensorRT stand-in.

Rules enforced (each a False return plus an error log, as TensorRT reports them):
- the first context gets profile 0; a profile held by another live context of the engine cannot be selected;
  selecting a profile forgets the input shapes;
- input shapes must lie inside the selected profile; every IO tensor needs a 256-byte aligned address inside one
  device allocation large enough for its shape and dtype before execute_async_v3; streams are plain ints;
- context memory: a USER_MANAGED context runs only after `set_device_memory(memory, size)` gave it a live,
  256-byte aligned device allocation of at least the active profile's `get_device_memory_size_for_profile_v2`;
  the context scribbles over that memory when it runs (so sharing it with a tensor corrupts the tensor), and
  contexts sharing it must not run at once: work queued on another stream that uses it, not yet run and not waited
  for with cudaStreamWaitEvent, makes execute_async_v3 (and cudaGraphLaunch of such work) fail;
- CUDA graphs (TensorRT developer guide, "CUDA Graphs"): after changing input shapes or the profile, enqueue once
  outside capture before capturing; an engine marked not capturable (built with WEIGHT_STREAMING, or named in
  JANUS_STANDIN_NOT_CAPTURABLE) fails inside a capture and invalidates it; work captured before the context's
  profile, an input shape, a tensor address or its device memory changed, or after its context was destroyed, is
  stale: cudaGraphLaunch refuses it (on TensorRT it would silently run old state).
Work runs when the stream does (cuda/bindings/_gpu.py), reading its inputs from device memory then.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import numpy as np

from cuda.bindings import _gpu, _memory
from cuda.bindings import runtime as cudart

from ._common import Dims, ILogger, TensorIOMode, nptype

if TYPE_CHECKING:
    from ._engine import ICudaEngine

SCRIBBLE = 64 << 10  # bytes of context memory overwritten at each end when the context runs


class DeviceAllocation:
    """Device memory TensorRT allocates for itself (not counted as the user's cudart calls); freed on release."""

    def __init__(self, nbytes: int) -> None:
        status, self.ptr = _memory.cudaMalloc(nbytes)
        if status != 0:
            raise MemoryError(f"cudaMalloc({nbytes}) failed: {status!r}")
        self.nbytes = nbytes

    def release(self) -> None:
        if self.ptr:
            _memory.cudaFree(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        self.release()


class IExecutionContext:
    def __init__(self, engine: "ICudaEngine", strategy: str, profile: int) -> None:
        self.engine, self._strategy = engine, strategy
        self._profile = profile
        self._owned: DeviceAllocation | None = None  # context memory TensorRT allocated (STATIC, ON_PROFILE_CHANGE)
        self._user_memory: tuple[int, int] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._generation, self._change = 0, ""  # captured work remembers the generation it was captured at
        self._state_changed = True  # shapes or profile changed since the last enqueue outside capture
        if strategy == "STATIC":
            self._owned = DeviceAllocation(engine.device_memory_size_v2)
        elif strategy == "ON_PROFILE_CHANGE" and profile >= 0:
            self._owned = DeviceAllocation(engine.get_device_memory_size_for_profile_v2(profile))

    @property
    def active_optimization_profile(self) -> int:
        return self._profile

    def _error(self, message: str) -> bool:
        self.engine._logger.log(ILogger.Severity.ERROR, message)
        return False

    def _changed(self, what: str) -> None:
        self._generation, self._change = self._generation + 1, what

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        _gpu.calls["set_optimization_profile_async"] += 1
        if not isinstance(stream_handle, int):
            raise TypeError("set_optimization_profile_async(): stream_handle must be an int")
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            return self._error(f"profile index {profile_index} out of range")
        owner = self.engine._live_owner(profile_index)
        if owner is not None and owner is not self:
            return self._error(f"profile {profile_index} is already used by another execution context")
        if profile_index != self._profile:
            if self._strategy == "ON_PROFILE_CHANGE":
                if self._owned is not None:
                    self._owned.release()
                try:
                    self._owned = DeviceAllocation(self.engine.get_device_memory_size_for_profile_v2(profile_index))
                except MemoryError:
                    self._owned = None
                    return self._error(f"out of device memory for profile {profile_index}'s context memory")
            self._changed(f"optimization profile ({self._profile} -> {profile_index})")
        self.engine._profile_owners.pop(self._profile, None)
        self.engine._profile_owners[profile_index] = weakref.ref(self)
        self._profile, self._shapes, self._state_changed = profile_index, {}, True
        return True

    def set_input_shape(self, name: str, shape: Dims | tuple | list) -> bool:
        _gpu.calls["set_input_shape"] += 1
        if self.engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return self._error(f"set_input_shape: {name!r} is not an input tensor")
        if self._profile < 0:
            return self._error("set_input_shape: no optimization profile selected for this context")
        shape = tuple(Dims(shape))
        low, _, high = (tuple(d) for d in self.engine.get_tensor_profile_shape(name, self._profile))
        if len(shape) != len(low) or not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return self._error(f"set_input_shape: {name} {shape} is outside profile {self._profile} [{low}, {high}]")
        if self._shapes.get(name) != shape:
            self._state_changed = True
            self._changed(f"input shape of {name}")
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
        _gpu.calls["set_tensor_address"] += 1
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
            return self._error(f"set_tensor_address: no tensor named {name!r}")
        if int(memory) % _gpu.ALIGNMENT:
            return self._error(f"set_tensor_address: the address {int(memory):#x} of {name} is not "
                               f"{_gpu.ALIGNMENT}-byte aligned")
        if self._addresses.get(name) != int(memory):
            self._changed(f"address of {name}")
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def set_device_memory(self, memory: int, size: int) -> None:
        _gpu.calls["set_device_memory"] += 1
        if self._strategy != "USER_MANAGED":
            self._error("set_device_memory: the context was not created with ExecutionContextAllocationStrategy."
                        "USER_MANAGED")
            return
        if int(memory) % _gpu.ALIGNMENT:
            self._error(f"set_device_memory: {int(memory):#x} is not {_gpu.ALIGNMENT}-byte aligned")
        if self._user_memory != (int(memory), int(size)):
            self._changed("device memory (set_device_memory)")
        self._user_memory = (int(memory), int(size))

    def _memory(self) -> tuple[int, int] | str:
        """(pointer, size) of the context memory the active profile runs in, or why there is none."""
        needed = self.engine.get_device_memory_size_for_profile_v2(self._profile)
        if self._owned is not None:
            return self._owned.ptr, self._owned.nbytes
        if self._user_memory is None:
            return "no device memory: a USER_MANAGED context needs set_device_memory() before execute_async_v3"
        ptr, size = self._user_memory
        if ptr % _gpu.ALIGNMENT or size < needed or _gpu.locate(ptr, size) is None:
            return (f"the memory given to set_device_memory ({size} bytes at {ptr:#x}) must be a live, "
                    f"{_gpu.ALIGNMENT}-byte aligned device allocation of at least {needed} bytes (profile "
                    f"{self._profile}'s get_device_memory_size_for_profile_v2)")
        return ptr, size

    def execute_async_v3(self, stream_handle: int) -> bool:
        _gpu.calls["execute_async_v3"] += 1
        if not isinstance(stream_handle, int):
            raise TypeError("execute_async_v3(): incompatible function arguments: stream_handle must be an int")
        missing = self.infer_shapes()
        if self._profile < 0 or missing:
            return self._error(f"execute_async_v3: input shapes not set: {missing} (profile {self._profile})")
        unset = [n for n in self.engine._order if not self._addresses.get(n)]
        if unset:
            return self._error(f"execute_async_v3: no address set for tensors {unset}")
        shapes = {**self._shapes, **self.engine._output_shapes(self._shapes)}
        sizes = {name: int(np.prod(shape)) * np.dtype(nptype(self.engine.get_tensor_dtype(name))).itemsize
                 for name, shape in shapes.items()}
        for name, nbytes in sizes.items():  # every tensor must fit in one device allocation
            if nbytes and _gpu.locate(self._addresses[name], nbytes) is None:
                return self._error(f"execute_async_v3: {name} {shapes[name]} does not fit the device memory at "
                                   f"{self._addresses[name]:#x}")
        memory = self._memory()
        if isinstance(memory, str):
            return self._error(f"execute_async_v3: {memory}")
        capturing = cudart.capturing(stream_handle)
        if capturing and not self.engine._capturable():
            cudart.invalidate_capture(stream_handle, cudart.cudaError_t.cudaErrorStreamCaptureUnsupported)
            return self._error("execute_async_v3: this engine is not capturable (weight streaming): operation not "
                               "permitted when stream is capturing")
        if capturing and self._state_changed:
            return self._error("execute_async_v3 while capturing: input shapes or the profile changed since the "
                               "last enqueue; enqueue once outside capture first")
        clash = None if capturing else _gpu.concurrent_use(_gpu.stream_of(stream_handle), memory)
        if clash:
            return self._error(f"execute_async_v3: {clash}")
        if not capturing:
            self._state_changed = False
        return _gpu.enqueue(stream_handle, self._work(shapes, sizes, memory)) == _gpu.OK

    def _work(self, shapes: dict, sizes: dict, memory: tuple[int, int]) -> _gpu.Work:
        """The enqueued inference: inputs read from device memory when the stream runs it."""
        engine, addresses, inputs = self.engine, dict(self._addresses), self._inputs()
        context, generation = weakref.ref(self), self._generation
        alive = _gpu.liveness(memory, *((addresses[name], nbytes) for name, nbytes in sizes.items()))

        def stale() -> str | None:
            current = context()
            if current is None:
                return "its TensorRT execution context was destroyed"
            if current._generation != generation:
                return f"the TensorRT execution context's {current._change} changed since the capture"
            return alive()

        def run() -> None:  # the context's state was read at enqueue: later changes do not touch queued work
            feeds = {}
            for name in inputs:
                raw = _gpu.read_device(addresses[name], sizes[name])
                feeds[name] = np.frombuffer(raw, nptype(engine.get_tensor_dtype(name))).reshape(shapes[name])
            results = engine._run(feeds)
            ptr, size = memory
            for start in {ptr, ptr + max(size - SCRIBBLE, 0)}:  # activations overwrite the context memory
                _gpu.write_device(start, b"\xcd" * min(size, SCRIBBLE))
            for name, value in results.items():
                value = np.ascontiguousarray(value, nptype(engine.get_tensor_dtype(name)))
                _gpu.write_device(addresses[name], value.tobytes())

        return _gpu.Work(run, stale, scratch=memory)
