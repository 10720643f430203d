"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python (imported lazily).

`CudaRuntime` types every cudart function we call with cuda-python's own parameter names (cuda/bindings/runtime.pyx,
12.x), so mypy rejects a misspelled function or keyword (tests/tensorrt/test_tensorrt.py has a probe). Every call's status is
checked; a failure raises `BackendError` naming the call, never a silent bad pointer.
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass
from typing import Any, Callable, Generic, Protocol, TypeVar, cast

import numpy as np

from ..errors import BackendError

Status = Any  # cudaError_t: an IntEnum in cuda-python


class CudaRuntime(Protocol):
    """The subset of `cuda.bindings.runtime` (cudart) janus-edge calls; each returns (status, *values)."""

    cudaMemcpyKind: Any
    cudaStreamCaptureMode: Any

    def cudaMalloc(self, size: int) -> tuple[Status, int]: ...
    def cudaFree(self, devPtr: int) -> tuple[Status]: ...
    def cudaMallocHost(self, size: int) -> tuple[Status, int]: ...
    def cudaFreeHost(self, ptr: int) -> tuple[Status]: ...
    def cudaMemGetInfo(self) -> tuple[Status, int, int]: ...
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
    def cudaGetLastError(self) -> tuple[Status]: ...
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


ALIGNMENT = 256  # TensorRT's rule for every tensor address (IExecutionContext.set_tensor_address)


def aligned(nbytes: int) -> int:
    """`nbytes` rounded up to TensorRT's address alignment: the stride of tensors packed into one allocation."""
    return -(-int(nbytes) // ALIGNMENT) * ALIGNMENT


class Stream:
    """One CUDA stream; counts its synchronisations so pinned staging knows when the host may rewrite it."""

    def __init__(self) -> None:
        self.cudart = _cudart()
        self.handle: Any = check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._native = self._native_handle()
        self.synchronizations = 0
        self.staging: KeyedBuffers[PinnedBuffer] = KeyedBuffers(self, lambda nbytes: PinnedBuffer(nbytes, self))

    @property
    def ptr(self) -> int:
        """The stream as the plain int TensorRT's `stream_handle` parameters take (cudaStream_t is an object)."""
        return self._native

    def _native_handle(self) -> int:
        """The handle's value: `get_cuda_native_handle` in cuda-bindings 13 (where `int()` of it is deprecated),
        `int()` before. (`getPtr()` is the address of the Python object's copy, not the handle.)"""
        try:
            from cuda.bindings.utils import get_cuda_native_handle
        except ImportError:
            return int(self.handle)
        return int(get_cuda_native_handle(self.handle))

    def synchronize(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")
        self.synchronizations += 1

    def destroy(self) -> None:
        """Waits for the stream's work, frees its staging buffers and destroys it; a failed wait (an earlier
        asynchronous error) still frees and destroys, then raises."""
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                check(self.cudart.cudaStreamSynchronize(handle), "cudaStreamSynchronize")
            finally:
                self.staging.free()
                check(self.cudart.cudaStreamDestroy(handle), "cudaStreamDestroy")


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost): copies to and from it run asynchronously on the stream, with no
    synchronize. The host may rewrite it only after the stream has passed the copy that last read it; `host()`
    waits only if no synchronisation happened since that copy (in the decode loop the token read is one)."""

    def __init__(self, nbytes: int, stream: Stream):
        self.stream, self.cudart = stream, stream.cudart
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(self.cudart.cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})"))
        self.copied_at: int | None = None  # the stream's synchronisation count when a copy last used it

    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A numpy view of the buffer's start, safe to write."""
        if self.copied_at is not None and self.stream.synchronizations == self.copied_at:
            self.stream.synchronize()
        count = int(np.prod(shape, dtype=np.int64))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        return np.frombuffer(memoryview(raw).cast("B"), dtype=np.uint8).view(dtype)[:count].reshape(shape)

    def copied(self) -> None:
        self.copied_at = self.stream.synchronizations

    def free(self) -> None:
        if self.ptr:
            check(self.cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


DOWNLOAD = "download"  # the staging key every download shares: each waits for the stream, so one is in use at a time


def staging_key(graph: str, tensor: str) -> str:
    """The staging buffer that uploads input `tensor` of `graph` (`trt_memory` counts them by the same keys)."""
    return f"{graph}:{tensor}"


class SizedBuffer(Protocol):
    """A pinned or device buffer: its size, and `free()`."""

    nbytes: int

    def free(self) -> None: ...


BufferT = TypeVar("BufferT", bound=SizedBuffer)


class KeyedBuffers(Generic[BufferT]):
    """Buffers by key (an engine's input or output; the stream's pinned staging: an engine input, a download), each
    grown to the largest size asked of its key and reused: sized once per request shape, never per step. An
    outgrown buffer is freed once the stream's queued work, which may still use it, is done."""

    def __init__(self, stream: Stream, allocate: Callable[[int], BufferT]):
        self.stream, self.allocate = stream, allocate
        self.buffers: dict[str, BufferT] = {}

    def buffer(self, key: str, nbytes: int) -> BufferT:
        found = self.buffers.get(key)
        if found is None or found.nbytes < nbytes:
            if found is not None:
                self.stream.synchronize()
                found.free()
            found = self.buffers[key] = self.allocate(nbytes)
        return found

    def __getitem__(self, key: str) -> BufferT:
        return self.buffers[key]

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values())

    def free(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers.clear()


class DeviceBuffer:
    """A device allocation of `nbytes`; holds a tensor of any shape/dtype that fits."""

    def __init__(self, nbytes: int):
        self.cudart = _cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(self.cudart.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def upload(self, array: np.ndarray, stream: Stream, key: str, offset: int = 0) -> None:
        """`array` into this buffer through the stream's pinned staging buffer `key`: no synchronize."""
        if offset + array.nbytes > self.nbytes:
            raise BackendError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer",
                               "the request is larger than the engines' profiles")
        staging = stream.staging.buffer(key, array.nbytes)
        staging.host(array.shape, array.dtype)[...] = array
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.cudart.cudaMemcpyAsync(self.ptr + offset, staging.ptr, array.nbytes, kind, stream.handle),
              "cudaMemcpyAsync(host to device)")
        staging.copied()

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


class DeviceArray(DeviceBuffer):
    """A device buffer of `size` elements of `dtype`, zero-filled on `stream` when allocated: what a `BufferPool`
    lends a device KV cache (unused cache slots are read, masked: they must hold finite values)."""

    def __init__(self, size: int, dtype: np.dtype, stream: Stream):
        self.size, self.dtype = int(size), np.dtype(dtype)
        super().__init__(self.size * self.dtype.itemsize)
        self.zero(stream)


@dataclass
class DeviceTensor:
    """A tensor of `shape` and `dtype` at `offset` bytes into `buffer`."""

    buffer: DeviceBuffer
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int = 0

    @property
    def ptr(self) -> int:
        return self.buffer.ptr + self.offset

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def download(self, stream: Stream) -> np.ndarray:
        """Copies the tensor into pinned memory and waits for the stream: the one synchronize of a decode step."""
        staging = stream.staging.buffer(DOWNLOAD, self.nbytes)
        kind = stream.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(stream.cudart.cudaMemcpyAsync(staging.ptr, self.ptr, self.nbytes, kind, stream.handle),
              "cudaMemcpyAsync(device to host)")
        staging.copied()
        stream.synchronize()
        return staging.host(self.shape, self.dtype).copy()


def copy_rows(dst: int, dst_pitch: int, src: int, src_pitch: int, row_bytes: int, rows: int, stream: Stream) -> None:
    """Device to device: `rows` rows of `row_bytes` from rows `src_pitch` apart to rows `dst_pitch` apart (one
    strided cudaMemcpy2DAsync)."""
    cudart = stream.cudart
    check(cudart.cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows,
                                   cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle), "cudaMemcpy2DAsync")


def upload_rows(dst: int, dst_pitch: int, src: PinnedBuffer, src_offset: int, src_pitch: int, row_bytes: int,
                rows: int, stream: Stream) -> None:
    """Pinned host to device: `rows` rows of `row_bytes` (one strided cudaMemcpy2DAsync, no synchronize)."""
    cudart = stream.cudart
    check(cudart.cudaMemcpy2DAsync(dst, dst_pitch, src.ptr + src_offset, src_pitch, row_bytes, rows,
                                   cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
          "cudaMemcpy2DAsync(host to device)")
    src.copied()


class CaptureFailed(BackendError):
    """A CUDA-graph capture failed; `__cause__` holds the original error. The caller runs without a graph."""


class CudaGraph:
    """The work `record()` enqueues on `stream`, captured into a CUDA graph and replayed with `launch()`.

    Nothing inside `record()` may allocate, free or synchronise (CUDA refuses it while capturing). If capture
    fails (TensorRT refuses to enqueue some engines under capture), it is handled as trtexec does
    (samples/common/sampleInference.cpp): the capture is ended, the error cleared with cudaGetLastError, any
    partial graph destroyed, and `CaptureFailed` raised from the original error, which no later check hides."""

    def __init__(self, stream: Stream, record: Callable[[], None]):
        cudart, self.stream = stream.cudart, stream
        self.executable: Any = None
        check(cudart.cudaStreamBeginCapture(stream.handle,
                                            cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        error: BaseException | None = None
        collecting = gc.isenabled()
        gc.disable()  # a collected DeviceBuffer would cudaFree inside the capture, which invalidates it
        try:
            record()
        except BaseException as exc:  # ends the capture below, whatever went wrong inside it
            error = exc
        finally:
            if collecting:
                gc.enable()
        status, graph = cudart.cudaStreamEndCapture(stream.handle)
        if error is None and int(status) != 0:
            error = BackendError(f"CUDA call cudaStreamEndCapture failed with {status}", "")
        if error is None:
            status, executable = cudart.cudaGraphInstantiate(graph, 0)
            if int(status) != 0:
                error = BackendError(f"CUDA call cudaGraphInstantiate failed with {status}", "")
            else:
                self.executable = executable
        if graph is not None:
            cudart.cudaGraphDestroy(graph)  # the executable keeps what it needs; a partial graph goes
        if error is not None:
            cudart.cudaGetLastError()  # clears the error the failed capture left, as trtexec does
            if not isinstance(error, BackendError):
                raise error  # a bug, not a refusal to capture: never hidden behind "runs without graphs"
            raise CaptureFailed(f"CUDA-graph capture failed ({error})",
                                "decoding continues without graphs") from error

    def launch(self) -> None:
        check(self.stream.cudart.cudaGraphLaunch(self.executable, self.stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.executable is not None:
            check(self.stream.cudart.cudaGraphExecDestroy(self.executable), "cudaGraphExecDestroy")
            self.executable = None


DRIVER_FIX = "run `make gpu-install`, which installs the cuda-python that matches this driver (docs/jetson.md)"


def first_call(call: str, function: Callable[..., Any], *args: Any) -> Any:
    """A CUDA call that may be the process's first, where a machine that cannot run CUDA shows: cuda-python raises
    (no libcuda) or returns an error status. Each becomes one `BackendError` with its fix, not a traceback."""
    try:
        result = function(*args)
    except RuntimeError as exc:  # cuda-python: "Failed to dlopen libcuda.so.1"
        raise BackendError(f"no NVIDIA driver is loaded ({call}: {exc})",
                           "install the NVIDIA driver (Jetson: JetPack), or run the container with --gpus all / "
                           "--runtime nvidia") from None
    status = getattr(result[0], "name", str(result[0])) if isinstance(result, tuple) else "cudaSuccess"
    if status == "cudaErrorNoDevice":
        raise BackendError("the NVIDIA driver sees no CUDA GPU",
                           "check nvidia-smi (Jetson: tegrastats) and CUDA_VISIBLE_DEVICES")
    if status == "cudaErrorInsufficientDriver":
        raise BackendError(f"this NVIDIA driver is older than the CUDA cuda-python was built for ({call} returned "
                           f"{status})", DRIVER_FIX)
    return check(result, call)


def device_name_and_capability() -> tuple[str, str]:
    cudart = _cudart()
    device = first_call("cudaGetDevice", cudart.cudaGetDevice)
    props = first_call("cudaGetDeviceProperties", cudart.cudaGetDeviceProperties, device)
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00"), f"{props.major}.{props.minor}"
