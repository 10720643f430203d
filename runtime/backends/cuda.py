"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python (imported lazily).

`CudaRuntime` types every cudart function we call with cuda-python's own parameter names (cuda/bindings/runtime.pyx,
12.x), so mypy rejects a misspelled function or keyword (tests/test_tensorrt.py has a probe). Every call's status is
checked; a failure raises `BackendError` naming the call, never a silent bad pointer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, cast

import numpy as np

from ..errors import BackendError

Status = Any  # cudaError_t: an IntEnum in cuda-python


class CudaRuntime(Protocol):
    """The subset of `cuda.bindings.runtime` (cudart) janus-edge calls; each returns (status, *values)."""

    cudaMemcpyKind: Any
    cudaStreamCaptureMode: Any

    def cudaMalloc(self, size: int) -> tuple[Status, int]: ...
    def cudaFree(self, devPtr: int) -> tuple[Status]: ...
    def cudaMemsetAsync(self, devPtr: int, value: int, count: int, stream: Any) -> tuple[Status]: ...
    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[Status]: ...
    def cudaMemcpy2D(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int,
                     kind: Any) -> tuple[Status]: ...
    def cudaMemcpy2DAsync(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: Any,
                          stream: Any) -> tuple[Status]: ...
    def cudaStreamCreate(self) -> tuple[Status, Any]: ...
    def cudaStreamDestroy(self, stream: Any) -> tuple[Status]: ...
    def cudaStreamSynchronize(self, stream: Any) -> tuple[Status]: ...
    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple[Status]: ...
    def cudaStreamEndCapture(self, stream: Any) -> tuple[Status, Any]: ...
    def cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple[Status, Any]: ...
    def cudaGraphLaunch(self, graphExec: Any, stream: Any) -> tuple[Status]: ...
    def cudaGraphDestroy(self, graph: Any) -> tuple[Status]: ...
    def cudaGraphExecDestroy(self, graphExec: Any) -> tuple[Status]: ...
    def cudaGetDevice(self) -> tuple[Status, int]: ...
    def cudaGetDeviceProperties(self, device: int) -> tuple[Status, Any]: ...


def _cudart() -> CudaRuntime:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6 layout
        except ImportError:
            raise BackendError("cuda-python is not installed", "pip install cuda-python (JetPack: see docs/jetson.md)") \
                from None
    return cast(CudaRuntime, runtime)


def check(result: Any, call: str) -> Any:
    """cuda-python returns (status, *values); raises on a non-success status, returns the values."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        raise BackendError(f"CUDA call {call} failed with {status}", "check the GPU, driver and free device memory")
    return values[0] if len(values) == 1 else tuple(values)


class Stream:
    def __init__(self) -> None:
        self.cudart = _cudart()
        self.handle = check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        """The stream as the plain int TensorRT's `stream_handle` parameters take (cudaStream_t is an object)."""
        return int(self.handle)

    def synchronize(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")


class DeviceBuffer:
    """A device allocation of `nbytes`; holds a tensor of any shape/dtype that fits."""

    def __init__(self, nbytes: int):
        self.cudart = _cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(self.cudart.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise BackendError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer",
                               "the request is larger than the engines' profiles")
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.cudart.cudaMemcpyAsync(self.ptr, array.ctypes.data, array.nbytes, kind, stream.handle),
              "cudaMemcpyAsync(host to device)")
        stream.synchronize()  # the host array may be freed as soon as we return

    def download(self, shape: tuple[int, ...], dtype: np.dtype, stream: Stream) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.cudart.cudaMemcpyAsync(out.ctypes.data, self.ptr, out.nbytes, kind, stream.handle),
              "cudaMemcpyAsync(device to host)")
        stream.synchronize()
        return out

    def zero(self, stream: Stream) -> None:
        check(self.cudart.cudaMemsetAsync(self.ptr, 0, self.nbytes, stream.handle), "cudaMemsetAsync")

    def free(self) -> None:
        if self.ptr:
            check(self.cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __del__(self) -> None:  # a buffer nobody closed still goes back to the device
        try:
            self.free()
        except Exception:  # interpreter shutdown: the CUDA context may already be gone
            pass


@dataclass
class DeviceTensor:
    """A tensor of `shape` and `dtype` at the start of `buffer`."""

    buffer: DeviceBuffer
    shape: tuple[int, ...]
    dtype: np.dtype

    def download(self, stream: Stream) -> np.ndarray:
        return self.buffer.download(self.shape, self.dtype, stream)


def copy_rows(dst: int, dst_pitch: int, src: int, src_pitch: int, row_bytes: int, rows: int, stream: Stream) -> None:
    """Device to device: `rows` rows of `row_bytes` from rows `src_pitch` apart to rows `dst_pitch` apart (one
    strided cudaMemcpy2DAsync)."""
    cudart = stream.cudart
    check(cudart.cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows,
                                   cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle), "cudaMemcpy2DAsync")


class DevicePool:
    """Sets of device buffers (e.g. one per KV-cache tensor) that decoders borrow and return; `clear()` frees them."""

    def __init__(self) -> None:
        self.free: list[list[DeviceBuffer]] = []

    def take(self, count: int, nbytes: int, stream: Stream) -> list[DeviceBuffer]:
        """`count` buffers of at least `nbytes`: a returned set if one fits, else new zero-filled ones."""
        fitting = [i for i, s in enumerate(self.free) if len(s) == count and s[0].nbytes >= nbytes]
        if fitting:
            return self.free.pop(min(fitting, key=lambda i: self.free[i][0].nbytes))
        buffers = [DeviceBuffer(nbytes) for _ in range(count)]
        for buffer in buffers:  # unused cache slots are read (masked): they must hold finite values
            buffer.zero(stream)
        return buffers

    def give(self, buffers: list[DeviceBuffer]) -> None:
        self.free.append(buffers)

    def clear(self) -> None:
        for buffers in self.free:
            for buffer in buffers:
                buffer.free()
        self.free.clear()


class CudaGraph:
    """The work `record()` enqueues on `stream`, captured once into a CUDA graph and replayed with `launch()`.

    Nothing inside `record()` may allocate, free or synchronise (CUDA refuses it while capturing)."""

    def __init__(self, stream: Stream, record: Callable[[], None]):
        cudart, self.stream = stream.cudart, stream
        check(cudart.cudaStreamBeginCapture(stream.handle,
                                            cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        try:
            record()
        finally:
            graph = check(cudart.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            self.executable = check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            check(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def launch(self) -> None:
        check(self.stream.cudart.cudaGraphLaunch(self.executable, self.stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.executable is not None:
            check(self.stream.cudart.cudaGraphExecDestroy(self.executable), "cudaGraphExecDestroy")
            self.executable = None


def device_name_and_capability() -> tuple[str, str]:
    cudart = _cudart()
    device = check(cudart.cudaGetDevice(), "cudaGetDevice")
    props = check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00"), f"{props.major}.{props.minor}"
