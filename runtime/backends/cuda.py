"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python (imported lazily).

Every call's status is checked; a failure raises `BackendError` naming the call, never a silent bad pointer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BackendError


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6 layout
        except ImportError:
            raise BackendError("cuda-python is not installed", "pip install cuda-python (JetPack: see docs/jetson.md)") \
                from None
    return runtime


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

    def free(self) -> None:
        if self.ptr:
            check(self.cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __del__(self) -> None:  # a request's KV cache goes back to the device when its decoder is dropped
        try:
            self.free()
        except Exception:  # interpreter shutdown: the CUDA context may already be gone
            pass


def device_name_and_capability() -> tuple[str, str]:
    cudart = _cudart()
    device = check(cudart.cudaGetDevice(), "cudaGetDevice")
    props = check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00"), f"{props.major}.{props.minor}"
