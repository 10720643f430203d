"""TEST-ONLY STAND-IN for cuda-python's `cuda.bindings.runtime` (cudart), backed by host memory (see
tests/standin/README.md for every rule).

Calls return tuples `(cudaError_t, *values)` exactly as cuda-python does, and a failed call sets the error that
cudaGetLastError returns once. Device pointers are plain ints in an address range no host pointer uses (every
allocation a bytearray, 256-byte aligned); pinned host memory (cudaMallocHost) is real host memory numpy can view.
Work queued on a stream runs only when the host synchronizes with it: cudaStreamSynchronize, cudaEventSynchronize
(up to the event), cudaDeviceSynchronize, a cudaEventQuery after one that said NotReady, or a call that implies a
synchronize (a pageable copy, cudaFree, cudaFreeHost, cudaStreamDestroy). A host read before that sees stale memory.

Stand-in helpers (not in cudart): live_allocations(), live_host_allocations(), live_streams(), live_events(),
live_graphs(), graph_launches(), call_counts(), reset_call_counts(), messages(), capturing(), read_device(),
write_device(), enqueue().
"""

from __future__ import annotations

import ast
import functools
import inspect
import os

from . import _gpu, _memory, _streams
from ._gpu import OK
from ._memory import (cudaFree, cudaFreeHost, cudaHostAlloc, cudaMalloc, cudaMallocHost,  # noqa: F401
                      cudaMemcpy2DAsync, cudaMemcpyAsync, cudaMemsetAsync)
from ._streams import (cudaEventCreate, cudaEventCreateWithFlags, cudaEventDestroy, cudaEventElapsedTime,  # noqa: F401
                       cudaEventQuery, cudaEventRecord, cudaEventSynchronize, cudaGraphDestroy, cudaGraphExecDestroy,
                       cudaGraphInstantiate, cudaGraphLaunch, cudaStreamBeginCapture, cudaStreamCreate,
                       cudaStreamCreateWithFlags, cudaStreamDestroy, cudaStreamEndCapture, cudaStreamSynchronize,
                       cudaStreamWaitEvent)
from ._types import (cudaDeviceProp, cudaError_t, cudaEvent_t, cudaEventBlockingSync, cudaEventDefault,  # noqa: F401
                     cudaEventDisableTiming, cudaGraph_t, cudaGraphExec_t, cudaHostAllocDefault, cudaHostAllocMapped,
                     cudaHostAllocPortable, cudaHostAllocWriteCombined, cudaMemcpyKind, cudaStream_t,
                     cudaStreamCaptureMode, cudaStreamDefault, cudaStreamNonBlocking)

ALIGNMENT = _gpu.ALIGNMENT


# --- stand-in helpers ------------------------------------------------------------------------------------------

def live_allocations() -> dict[int, int]:
    """Device pointer -> size of every allocation not yet freed (leak checks)."""
    return {base: a.size for base, a in _gpu.device.items()}


def live_host_allocations() -> dict[int, int]:
    """Pinned host pointer -> size of every cudaMallocHost/cudaHostAlloc allocation not yet freed."""
    return {base: a.size for base, a in _gpu.pinned.items()}


def live_streams() -> int:
    return sum(not s.destroyed for s in _gpu.streams.values())


def live_events() -> int:
    return len(_gpu.events)


def live_graphs() -> int:
    """cudaGraph_t and cudaGraphExec_t objects not yet destroyed."""
    return len(_gpu.graphs)


def graph_launches() -> int:
    """How many times any CUDA graph was launched (successfully) in this process."""
    return _gpu.launches


def call_counts() -> dict[str, int]:
    """Calls per cudart function and per TensorRT context method (execute_async_v3 ...) since the last reset, plus
    "implicit_synchronize": stream synchronizations a pageable copy forced."""
    return dict(_gpu.calls)


def reset_call_counts() -> None:
    _gpu.calls.clear()


def messages() -> list[str]:
    """What the stand-in reported (why a launch failed, ...), oldest first."""
    return list(_gpu.messages)


def capturing(stream: int | cudaStream_t) -> bool:
    """Whether `stream` is capturing (for the TensorRT stand-in)."""
    found = _gpu.stream_of(stream)
    return found is not None and found.capture is not None


def invalidate_capture(stream: int | cudaStream_t, status: cudaError_t) -> None:
    """Something not capturable ran inside `stream`'s capture (for the TensorRT stand-in): the capture is invalid
    and `status` becomes the last error, as in CUDA."""
    found = _gpu.stream_of(stream)
    if found is not None and found.capture is not None:
        found.invalidated = status
    _gpu.last_error = status


read_device, write_device, enqueue = _gpu.read_device, _gpu.write_device, _gpu.enqueue


# --- device, versions, errors ----------------------------------------------------------------------------------

def cudaGetDevice() -> tuple[cudaError_t, int]:
    return OK, 0


def cudaGetDeviceProperties(device: int) -> tuple[cudaError_t, cudaDeviceProp | None]:
    if device != 0:
        return cudaError_t.cudaErrorInvalidValue, None
    name = os.environ.get("JANUS_STANDIN_GPU", "NVIDIA H100 80GB HBM3").encode().ljust(256, b"\x00")
    major, minor = (int(x) for x in os.environ.get("JANUS_STANDIN_CC", "9.0").split("."))
    integrated = _gpu.integrated()
    return OK, cudaDeviceProp(name, major, minor, _gpu.total_memory(), int(integrated), 16 if integrated else 132)


def cudaDriverGetVersion() -> tuple[cudaError_t, int]:
    return OK, _driver()


def cudaRuntimeGetVersion() -> tuple[cudaError_t, int]:
    return OK, _runtime()


def cudaGetLastError() -> tuple[cudaError_t]:
    error, _gpu.last_error = _gpu.last_error, OK
    return (error,)


def cudaPeekAtLastError() -> tuple[cudaError_t]:
    return (_gpu.last_error,)


def cudaMemGetInfo() -> tuple[cudaError_t, int, int]:
    return OK, _gpu.total_memory() - _gpu.used_memory(), _gpu.total_memory()


def cudaDeviceSynchronize() -> tuple[cudaError_t]:
    refused = _gpu.refuse_while_capturing()
    return (refused or _gpu.run_all(),)


# --- every cudart call: counted, refused on a too-old driver, its error kept for cudaGetLastError -----------------

def _driver() -> int:
    return int(os.environ.get("JANUS_STANDIN_DRIVER", "12060"))


def _runtime() -> int:
    return int(os.environ.get("JANUS_STANDIN_CUDA_RUNTIME", "12060"))


def _results(function) -> int:
    """How many values `function` returns (its return annotation's tuple length)."""
    node = ast.parse(function.__annotations__["return"], mode="eval").body
    return len(node.slice.elts) if isinstance(node.slice, ast.Tuple) else 1  # type: ignore[attr-defined]


def _api(function):
    name, results = function.__name__, _results(function)
    checks_driver = name not in ("cudaDriverGetVersion", "cudaRuntimeGetVersion", "cudaGetLastError",
                                 "cudaPeekAtLastError")

    @functools.wraps(function)
    def call(*args, **kwargs):
        _gpu.calls[name] += 1
        if checks_driver and os.environ.get("JANUS_STANDIN_DEVICES", "1") == "0":  # a machine without a GPU
            result = (cudaError_t.cudaErrorNoDevice,) + (None,) * (results - 1)
        elif checks_driver and _driver() // 1000 < _runtime() // 1000:  # cuda-python 13 on a CUDA 12 driver
            result = (cudaError_t.cudaErrorInsufficientDriver,) + (None,) * (results - 1)
        else:
            result = function(*args, **kwargs)
        if checks_driver and result[0] not in (OK, cudaError_t.cudaErrorNotReady):
            _gpu.last_error = result[0]
        return result

    return call


_MODULES = (__name__, _memory.__name__, _streams.__name__)
for _name, _function in list(globals().items()):
    if _name.startswith("cuda") and inspect.isfunction(_function) and _function.__module__ in _MODULES:
        globals()[_name] = _api(_function)
del _name, _function
