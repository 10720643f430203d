"""TEST-ONLY STAND-IN for cuda-python's `cuda.bindings.runtime` (cudart), backed by host memory.

Calls return tuples `(cudaError_t, *values)` exactly as cuda-python does. Device pointers are plain ints in an
address range no host pointer uses; every allocation is a bytearray. Work on a stream runs at once unless the
stream is capturing, in which case it is recorded into a graph and runs only when the instantiated graph is
launched (so a captured step that was never launched leaves no trace, as on a GPU).

`live_allocations()`, `read_device()`, `write_device()` and `enqueue()` are the stand-in's own helpers (leading
names not in cudart) for the TensorRT stand-in and for tests.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

DEVICE_BASE = 0xD000_0000_0000  # above the canonical user-space range: never a host address
ALIGNMENT = 256


class cudaError_t(IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevicePointer = 17
    cudaErrorInvalidMemcpyDirection = 21
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureUnmatched = 903


class cudaMemcpyKind(IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class _Handle:
    """cudaStream_t / cudaEvent_t / cudaGraph_t / cudaGraphExec_t: an opaque object with `getPtr()` and `int()`."""

    _next = 0x1000

    def __init__(self) -> None:
        _Handle._next += 16
        self._ptr = _Handle._next

    def getPtr(self) -> int:
        return self._ptr

    def __int__(self) -> int:
        return self._ptr


@dataclass(eq=False)
class cudaStream_t(_Handle):
    capture: list[Callable[[], None]] | None = None  # recorded work while capturing
    invalidated: bool = False

    def __post_init__(self) -> None:
        _Handle.__init__(self)


@dataclass(eq=False)
class cudaGraph_t(_Handle):
    work: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _Handle.__init__(self)


@dataclass(eq=False)
class cudaGraphExec_t(_Handle):
    work: list[Callable[[], None]] = field(default_factory=list)
    launches: int = 0

    def __post_init__(self) -> None:
        _Handle.__init__(self)


class cudaEvent_t(_Handle):
    time: float | None = None


@dataclass
class cudaDeviceProp:
    name: bytes
    major: int
    minor: int
    totalGlobalMem: int


_allocations: dict[int, bytearray] = {}
_streams: dict[int, cudaStream_t] = {}
_next_address = DEVICE_BASE
_OK = cudaError_t.cudaSuccess


def _total_memory() -> int:
    return int(os.environ.get("JANUS_STANDIN_MEMORY_MIB", "81559")) << 20


def _capturing() -> bool:
    return any(s.capture is not None for s in _streams.values())


def _invalidate_captures() -> None:
    for stream in _streams.values():
        if stream.capture is not None:
            stream.invalidated = True


def _locate(ptr: int, nbytes: int) -> tuple[bytearray, int] | None:
    """The allocation holding [ptr, ptr + nbytes), and the offset in it."""
    for base, memory in _allocations.items():
        if base <= ptr and ptr + nbytes <= base + len(memory):
            return memory, ptr - base
    return None


def live_allocations() -> dict[int, int]:
    """Device pointer -> size of every allocation not yet freed (stand-in helper: leak checks)."""
    return {base: len(memory) for base, memory in _allocations.items()}


def read_device(ptr: int, nbytes: int) -> bytes:
    found = _locate(int(ptr), nbytes)
    if found is None:
        raise ValueError(f"stand-in: {nbytes} bytes at {int(ptr):#x} are not inside one device allocation")
    memory, offset = found
    return bytes(memory[offset:offset + nbytes])


def write_device(ptr: int, data: bytes) -> None:
    found = _locate(int(ptr), len(data))
    if found is None:
        raise ValueError(f"stand-in: {len(data)} bytes at {int(ptr):#x} are not inside one device allocation")
    memory, offset = found
    memory[offset:offset + len(data)] = data


def enqueue(stream: int | cudaStream_t, work: Callable[[], None]) -> cudaError_t:
    """Runs `work` now, or records it if `stream` is capturing (stand-in helper for the TensorRT stand-in)."""
    found = _streams.get(int(stream))
    if found is None:
        return cudaError_t.cudaErrorInvalidResourceHandle
    if found.capture is not None:
        found.capture.append(work)
    else:
        work()
    return _OK


def cudaGetDevice() -> tuple[cudaError_t, int]:
    return _OK, 0


def cudaGetDeviceProperties(device: int) -> tuple[cudaError_t, cudaDeviceProp | None]:
    if device != 0:
        return cudaError_t.cudaErrorInvalidValue, None
    name = os.environ.get("JANUS_STANDIN_GPU", "NVIDIA H100 80GB HBM3").encode().ljust(256, b"\x00")
    major, minor = (int(x) for x in os.environ.get("JANUS_STANDIN_CC", "9.0").split("."))
    return _OK, cudaDeviceProp(name, major, minor, _total_memory())


def cudaMemGetInfo() -> tuple[cudaError_t, int, int]:
    used = sum(len(m) for m in _allocations.values())
    return _OK, _total_memory() - used, _total_memory()


def cudaMalloc(size: int) -> tuple[cudaError_t, int]:
    global _next_address
    if _capturing():  # allocation is not capturable: it invalidates the capture
        _invalidate_captures()
        return cudaError_t.cudaErrorStreamCaptureUnsupported, 0
    size = int(size)
    if size <= 0:
        return cudaError_t.cudaErrorInvalidValue, 0
    if sum(len(m) for m in _allocations.values()) + size > _total_memory():
        return cudaError_t.cudaErrorMemoryAllocation, 0
    ptr = _next_address
    _next_address += (size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT + ALIGNMENT  # a gap catches overruns
    _allocations[ptr] = bytearray(size)
    return _OK, ptr


def cudaFree(devPtr: int) -> tuple[cudaError_t]:
    if _capturing():
        _invalidate_captures()
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    if int(devPtr) == 0:
        return (_OK,)
    if _allocations.pop(int(devPtr), None) is None:  # unknown pointer or double free
        return (cudaError_t.cudaErrorInvalidDevicePointer,)
    return (_OK,)


def cudaMemcpyAsync(dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: int | cudaStream_t
                    ) -> tuple[cudaError_t]:
    dst, src, count = int(dst), int(src), int(count)
    dst_device, src_device = _locate(dst, count) is not None, _locate(src, count) is not None
    expected = {cudaMemcpyKind.cudaMemcpyHostToDevice: (True, False),
                cudaMemcpyKind.cudaMemcpyDeviceToHost: (False, True),
                cudaMemcpyKind.cudaMemcpyDeviceToDevice: (True, True)}.get(cudaMemcpyKind(kind))
    if expected is None or (dst_device, src_device) != expected:
        return (cudaError_t.cudaErrorInvalidValue,)  # pointers are not where `kind` says (or out of bounds)
    stream_obj = _streams.get(int(stream))
    if stream_obj is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if stream_obj.capture is not None and not (dst_device and src_device):
        # host memory is pageable here: a captured copy would read it at launch time, not now
        stream_obj.invalidated = True
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)

    def copy() -> None:
        data = read_device(src, count) if src_device else ctypes.string_at(src, count)
        if dst_device:
            write_device(dst, data)
        else:
            ctypes.memmove(dst, data, count)

    return (enqueue(stream_obj, copy),)


def cudaStreamCreate() -> tuple[cudaError_t, cudaStream_t]:
    stream = cudaStream_t()
    _streams[int(stream)] = stream
    return _OK, stream


def cudaStreamDestroy(stream: int | cudaStream_t) -> tuple[cudaError_t]:
    return (_OK if _streams.pop(int(stream), None) is not None else cudaError_t.cudaErrorInvalidResourceHandle,)


def cudaStreamSynchronize(stream: int | cudaStream_t) -> tuple[cudaError_t]:
    found = _streams.get(int(stream))
    if found is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if found.capture is not None:
        found.invalidated = True
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    return (_OK,)


def cudaStreamBeginCapture(stream: int | cudaStream_t, mode: cudaStreamCaptureMode) -> tuple[cudaError_t]:
    found = _streams.get(int(stream))
    if found is None or found.capture is not None:
        return (cudaError_t.cudaErrorIllegalState if found else cudaError_t.cudaErrorInvalidResourceHandle,)
    cudaStreamCaptureMode(mode)
    found.capture, found.invalidated = [], False
    return (_OK,)


def cudaStreamEndCapture(stream: int | cudaStream_t) -> tuple[cudaError_t, cudaGraph_t | None]:
    found = _streams.get(int(stream))
    if found is None or found.capture is None:
        return cudaError_t.cudaErrorStreamCaptureUnmatched, None
    work, invalidated = found.capture, found.invalidated
    found.capture, found.invalidated = None, False
    if invalidated:
        return cudaError_t.cudaErrorStreamCaptureInvalidated, None
    return _OK, cudaGraph_t(work)


def cudaGraphInstantiate(graph: cudaGraph_t, flags: int) -> tuple[cudaError_t, cudaGraphExec_t | None]:
    if not isinstance(graph, cudaGraph_t):
        return cudaError_t.cudaErrorInvalidValue, None
    return _OK, cudaGraphExec_t(list(graph.work))


def cudaGraphLaunch(graphExec: cudaGraphExec_t, stream: int | cudaStream_t) -> tuple[cudaError_t]:
    if not isinstance(graphExec, cudaGraphExec_t):
        return (cudaError_t.cudaErrorInvalidValue,)
    graphExec.launches += 1
    for work in graphExec.work:
        status = enqueue(stream, work)
        if status != _OK:
            return (status,)
    return (_OK,)


def cudaGraphDestroy(graph: cudaGraph_t) -> tuple[cudaError_t]:
    return (_OK,)


def cudaGraphExecDestroy(graphExec: cudaGraphExec_t) -> tuple[cudaError_t]:
    return (_OK,)


def cudaEventCreate() -> tuple[cudaError_t, cudaEvent_t]:
    return _OK, cudaEvent_t()


def cudaEventRecord(event: cudaEvent_t, stream: int | cudaStream_t) -> tuple[cudaError_t]:
    def record() -> None:
        event.time = time.perf_counter()

    return (enqueue(stream, record),)


def cudaEventSynchronize(event: cudaEvent_t) -> tuple[cudaError_t]:
    return (_OK,)


def cudaEventElapsedTime(start: cudaEvent_t, end: cudaEvent_t) -> tuple[cudaError_t, float]:
    if start.time is None or end.time is None:
        return cudaError_t.cudaErrorInvalidResourceHandle, 0.0
    return _OK, (end.time - start.time) * 1e3


def cudaEventDestroy(event: cudaEvent_t) -> tuple[cudaError_t]:
    return (_OK,)
