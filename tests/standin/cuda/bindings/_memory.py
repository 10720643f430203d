"""cudart stand-in: device and pinned allocations, copies, memset (see runtime.py's docstring)."""

from __future__ import annotations

import ctypes

from . import _gpu
from ._gpu import OK, Work, liveness
from ._types import cudaError_t, cudaHostAllocDefault, cudaMemcpyKind, cudaStream_t

_H2D, _D2H, _D2D = (cudaMemcpyKind.cudaMemcpyHostToDevice, cudaMemcpyKind.cudaMemcpyDeviceToHost,
                    cudaMemcpyKind.cudaMemcpyDeviceToDevice)


def cudaMalloc(size: int) -> tuple[cudaError_t, int]:
    refused = _gpu.refuse_while_capturing(relaxed_allowed=True)
    if refused:
        return refused, 0
    size = int(size)
    if size <= 0:
        return cudaError_t.cudaErrorInvalidValue, 0
    if _gpu.used_memory() + size > _gpu.total_memory():
        return cudaError_t.cudaErrorMemoryAllocation, 0
    return OK, _gpu.allocate_device(size)


def cudaFree(devPtr: int) -> tuple[cudaError_t]:
    """Synchronizes the device first (queued work may still use the memory), as cudaFree does."""
    refused = _gpu.refuse_while_capturing()
    if refused:
        return (refused,)
    if int(devPtr) == 0:
        return (OK,)
    status = _gpu.run_all()
    allocation = _gpu.device.pop(int(devPtr), None)
    if allocation is None:  # unknown pointer or double free
        return (cudaError_t.cudaErrorInvalidDevicePointer,)
    allocation.memory.close()  # type: ignore[attr-defined]
    return (status,)


def cudaMallocHost(size: int) -> tuple[cudaError_t, int]:
    return cudaHostAlloc(size, cudaHostAllocDefault)


def cudaHostAlloc(size: int, flags: int) -> tuple[cudaError_t, int]:
    refused = _gpu.refuse_while_capturing(relaxed_allowed=True)
    if refused:
        return refused, 0
    if int(size) <= 0 or int(flags) & ~0x7:
        return cudaError_t.cudaErrorInvalidValue, 0
    if _gpu.integrated() and _gpu.used_memory() + int(size) > _gpu.total_memory():
        return cudaError_t.cudaErrorMemoryAllocation, 0
    return OK, _gpu.allocate_pinned(int(size))


def cudaFreeHost(ptr: int) -> tuple[cudaError_t]:
    refused = _gpu.refuse_while_capturing()
    if refused:
        return (refused,)
    status = _gpu.run_all()
    if _gpu.pinned.pop(int(ptr), None) is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    return (status,)


def _where(ptr: int, count: int) -> str | None:
    """"device", "pinned" or "pageable" for [ptr, ptr + count); None if it straddles an allocation's end."""
    if _gpu.locate(ptr, count) is not None:
        return "device"
    if _gpu.locate(ptr, count, _gpu.pinned) is not None:
        return "pinned"
    if ptr >= _gpu.DEVICE_BASE or _gpu.in_pinned(ptr) or _gpu.in_pinned(ptr + count - 1):
        return None
    return "pageable"


def cudaMemcpyAsync(dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: int | cudaStream_t
                    ) -> tuple[cudaError_t]:
    """Pageable host memory: host to device synchronizes the stream, then reads the host buffer before returning;
    device to host is synchronous. Pinned host memory is read or written when the stream runs the copy."""
    dst, src, count = int(dst), int(src), int(count)
    where = (_where(dst, count), _where(src, count))
    kind = cudaMemcpyKind(kind)
    if kind == cudaMemcpyKind.cudaMemcpyDefault:
        kind = {("device", "device"): _D2D, ("device", "pinned"): _H2D, ("device", "pageable"): _H2D,
                ("pinned", "device"): _D2H, ("pageable", "device"): _D2H}.get(where, kind)  # type: ignore[arg-type]
    devices = {_H2D: (True, False), _D2H: (False, True), _D2D: (True, True)}.get(kind)
    if devices is None or count <= 0 or None in where or tuple(w == "device" for w in where) != devices:
        return (cudaError_t.cudaErrorInvalidValue,)  # pointers are not where `kind` says (or out of bounds)
    found = _gpu.stream_of(stream)
    if found is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if "pageable" in where:
        if found.capture is not None:  # a captured copy would read the host buffer at launch: CUDA refuses
            found.invalidated = cudaError_t.cudaErrorStreamCaptureInvalidated
            return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
        _gpu.calls["implicit_synchronize"] += 1
        status = _gpu.run_stream(found)
        if status != OK:
            return (status,)
        if kind == _D2H:
            ctypes.memmove(dst, _gpu.read_device(src, count), count)
            return (OK,)
        staged = ctypes.string_at(src, count)
        return (_gpu.enqueue(found, Work(lambda: _gpu.write_device(dst, staged), liveness((dst, count)))),)

    def copy() -> None:
        data = _gpu.read_device(src, count) if where[1] == "device" else ctypes.string_at(src, count)
        if where[0] == "device":
            _gpu.write_device(dst, data)
        else:
            ctypes.memmove(dst, data, count)

    return (_gpu.enqueue(found, Work(copy, liveness((dst, count), (src, count)))),)


def cudaMemcpy2DAsync(dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: cudaMemcpyKind,
                      stream: int | cudaStream_t) -> tuple[cudaError_t]:
    """Device to device only (all janus-edge needs): `height` rows of `width` bytes; every row must lie inside one
    allocation on each side and the regions must not overlap (undefined in CUDA)."""
    dst, dpitch, src, spitch, width, height = (int(v) for v in (dst, dpitch, src, spitch, width, height))
    if cudaMemcpyKind(kind) != _D2D or width > min(dpitch, spitch) or height < 1:
        return (cudaError_t.cudaErrorInvalidValue,)
    dst_span, src_span = (height - 1) * dpitch + width, (height - 1) * spitch + width
    if _gpu.locate(dst, dst_span) is None or _gpu.locate(src, src_span) is None:
        return (cudaError_t.cudaErrorInvalidValue,)  # rows outside one allocation
    if dst < src + src_span and src < dst + dst_span:
        return (cudaError_t.cudaErrorInvalidValue,)  # overlapping source and destination

    def copy() -> None:
        rows = [_gpu.read_device(src + row * spitch, width) for row in range(height)]
        for row, data in enumerate(rows):
            _gpu.write_device(dst + row * dpitch, data)

    return (_gpu.enqueue(stream, Work(copy, liveness((dst, dst_span), (src, src_span)))),)


def cudaMemsetAsync(devPtr: int, value: int, count: int, stream: int | cudaStream_t) -> tuple[cudaError_t]:
    ptr, count = int(devPtr), int(count)
    if _gpu.locate(ptr, count) is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    data = bytes([int(value) & 0xFF]) * count
    return (_gpu.enqueue(stream, Work(lambda: _gpu.write_device(ptr, data), liveness((ptr, count)))),)


