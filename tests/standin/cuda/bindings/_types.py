"""Enums, handle types and flags of the cudart stand-in (names and values as in cuda-python / the CUDA headers)."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

cudaEventDefault, cudaEventBlockingSync, cudaEventDisableTiming = 0, 1, 2
cudaHostAllocDefault, cudaHostAllocPortable, cudaHostAllocMapped, cudaHostAllocWriteCombined = 0, 1, 2, 4
cudaStreamDefault, cudaStreamNonBlocking = 0, 1


class cudaError_t(IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidHostPointer = 16
    cudaErrorInvalidDevicePointer = 17
    cudaErrorInvalidMemcpyDirection = 21
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700
    cudaErrorLaunchFailure = 719
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureUnmatched = 903
    cudaErrorStreamCaptureIsolation = 905
    cudaErrorCapturedEvent = 907


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


_handles = itertools.count(0x1000, 16)


class _Handle:
    """cudaStream_t / cudaEvent_t / cudaGraph_t / cudaGraphExec_t: an opaque object with `getPtr()` and `int()`."""

    def __init__(self) -> None:
        self._ptr = next(_handles)

    def getPtr(self) -> int:
        return self._ptr

    def __int__(self) -> int:
        return self._ptr


@dataclass(eq=False)
class Work:
    """One unit of device work: `run()` when the stream gets to it; `stale()` names why a captured copy of it may no
    longer be replayed (a freed buffer, a changed TensorRT context), or returns None. `scratch` is the (pointer, size)
    of TensorRT context memory it uses; `waits` the (stream, sequence number) a cudaStreamWaitEvent waits for."""

    run: Callable[[], None]
    stale: Callable[[], str | None] = lambda: None
    scratch: tuple[int, int] | None = None
    waits: tuple["cudaStream_t", int] | None = None


@dataclass(eq=False)
class cudaStream_t(_Handle):
    pending: deque = field(default_factory=deque)  # (sequence number, Work) not yet run
    capture: list[Work] | None = None  # recorded work while capturing
    capture_mode: int = 0
    invalidated: cudaError_t | None = None
    destroyed: bool = False

    def __post_init__(self) -> None:
        _Handle.__init__(self)


@dataclass(eq=False)
class cudaGraph_t(_Handle):
    work: list[Work] = field(default_factory=list)
    destroyed: bool = False

    def __post_init__(self) -> None:
        _Handle.__init__(self)


@dataclass(eq=False)
class cudaGraphExec_t(_Handle):
    work: list[Work] = field(default_factory=list)
    launches: int = 0
    destroyed: bool = False

    def __post_init__(self) -> None:
        _Handle.__init__(self)


@dataclass(eq=False)
class cudaEvent_t(_Handle):
    flags: int = 0
    stream: cudaStream_t | None = None  # where it was last recorded (None: never)
    seq: int = 0
    done: bool = False
    captured: bool = False  # last recorded inside a capture: not queryable (cudaErrorCapturedEvent)
    polled: bool = False  # cudaEventQuery said NotReady once: the device finishes it by the next query
    time: float | None = None
    destroyed: bool = False

    def __post_init__(self) -> None:
        _Handle.__init__(self)


@dataclass
class cudaDeviceProp:
    name: bytes
    major: int
    minor: int
    totalGlobalMem: int
    integrated: int
    multiProcessorCount: int
