"""The pretend GPU behind the cudart stand-in: device and pinned allocations, stream queues, the last error, call
counts. Work queued on a stream runs only when something synchronizes with it (see runtime.py's docstring)."""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from ._types import Work, cudaError_t, cudaEvent_t, cudaStream_t, cudaStreamCaptureMode

DEVICE_BASE = 0xD000_0000_0000  # above the canonical user-space range: never a host address
ALIGNMENT = 256  # cudaMalloc's alignment (TensorRT wants tensor addresses 256-byte aligned)
PAGE = 4096  # cudaMallocHost returns page-aligned host memory
OK = cudaError_t.cudaSuccess


@dataclass(eq=False)
class Allocation:
    base: int
    size: int
    memory: object  # an anonymous mmap (device: pages cost host RAM only once written) or a ctypes array (pinned)
    device: bool

    def read(self, offset: int, nbytes: int) -> bytes:
        if self.device:
            return bytes(self.memory[offset:offset + nbytes])  # type: ignore[index]
        return ctypes.string_at(self.base + offset, nbytes)

    def write(self, offset: int, data: bytes) -> None:
        if self.device:
            self.memory[offset:offset + len(data)] = data  # type: ignore[index]
        else:
            ctypes.memmove(self.base + offset, data, len(data))


device: dict[int, Allocation] = {}
pinned: dict[int, Allocation] = {}
streams: dict[int, cudaStream_t] = {}
events: dict[int, cudaEvent_t] = {}
graphs: dict[int, object] = {}  # cudaGraph_t and cudaGraphExec_t not yet destroyed
calls: Counter = Counter()
messages: list[str] = []  # what the stand-in reports (why a launch failed, ...)
last_error = OK
launches = 0  # successful cudaGraphLaunch calls in this process
_next_address = DEVICE_BASE
_sequence = itertools.count(1)


def log(message: str) -> None:
    messages.append(message)
    sys.stderr.write(f"[CUDA stand-in] {message}\n")


def total_memory() -> int:
    return int(os.environ.get("JANUS_STANDIN_MEMORY_BYTES", 80 << 30))


def integrated() -> bool:
    """Orin (8.7) and Thor (10.1 in CUDA 12's numbering, 11.0 in CUDA 13's): GPU and CPU share one memory."""
    return os.environ.get("JANUS_STANDIN_CC", "9.0") in ("8.7", "10.1", "11.0")


def used_memory() -> int:
    """Device allocations; on an integrated GPU pinned host memory comes out of the same memory."""
    return sum(a.size for a in device.values()) + (sum(a.size for a in pinned.values()) if integrated() else 0)


def allocate_device(size: int) -> int:
    global _next_address
    ptr = _next_address
    _next_address += (size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT + ALIGNMENT  # a gap catches overruns
    device[ptr] = Allocation(ptr, size, mmap.mmap(-1, size), True)
    return ptr


def allocate_pinned(size: int) -> int:
    raw = (ctypes.c_char * (size + PAGE))()
    ptr = (ctypes.addressof(raw) + PAGE - 1) // PAGE * PAGE
    pinned[ptr] = Allocation(ptr, size, raw, False)
    return ptr


def locate(ptr: int, nbytes: int, table: dict[int, Allocation] | None = None) -> tuple[Allocation, int] | None:
    """The allocation (device by default) holding [ptr, ptr + nbytes), and the offset in it."""
    for allocation in (device if table is None else table).values():
        if allocation.base <= ptr and ptr + nbytes <= allocation.base + allocation.size:
            return allocation, ptr - allocation.base
    return None


def in_pinned(ptr: int) -> bool:
    return any(a.base <= ptr < a.base + a.size for a in pinned.values())


def read_device(ptr: int, nbytes: int) -> bytes:
    found = locate(int(ptr), nbytes)
    if found is None:
        raise ValueError(f"stand-in: {nbytes} bytes at {int(ptr):#x} are not inside one device allocation")
    return found[0].read(found[1], nbytes)


def write_device(ptr: int, data: bytes) -> None:
    found = locate(int(ptr), len(data))
    if found is None:
        raise ValueError(f"stand-in: {len(data)} bytes at {int(ptr):#x} are not inside one device allocation")
    found[0].write(found[1], data)


def liveness(*ranges: tuple[int, int]) -> Callable[[], str | None]:
    """A `Work.stale` check: None while every (ptr, nbytes) still lies in the allocation it lay in now."""
    held = []
    for ptr, nbytes in ranges:
        found = locate(ptr, nbytes) or locate(ptr, nbytes, pinned)
        if found is not None:
            held.append((ptr, found[0]))

    def stale() -> str | None:
        for ptr, allocation in held:
            if device.get(allocation.base) is not allocation and pinned.get(allocation.base) is not allocation:
                return f"the memory at {ptr:#x} it reads or writes was freed"
        return None

    return stale


def capturing() -> list[cudaStream_t]:
    return [s for s in streams.values() if s.capture is not None]


def refuse_while_capturing(relaxed_allowed: bool = False) -> cudaError_t | None:
    """An unsafe call (allocation, free, device-wide sync) during a capture invalidates it, as in CUDA."""
    active = capturing()
    if relaxed_allowed and all(s.capture_mode == cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed for s in active):
        return None
    for stream in active:
        stream.invalidated = cudaError_t.cudaErrorStreamCaptureInvalidated
    return cudaError_t.cudaErrorStreamCaptureUnsupported if active else None


def stream_of(handle) -> cudaStream_t | None:
    found = streams.get(int(handle))
    return found if found is not None and not found.destroyed else None


def enqueue(stream, work: Work | Callable[[], None]) -> cudaError_t:
    """Queues `work` on `stream` (recorded instead if the stream is capturing); it runs when synchronized."""
    found = stream_of(stream)
    if found is None:
        return cudaError_t.cudaErrorInvalidResourceHandle
    work = work if isinstance(work, Work) else Work(work)
    if found.capture is not None:
        found.capture.append(work)
    else:
        found.pending.append((next(_sequence), work))
    return OK


def run_stream(stream: cudaStream_t, until: int | None = None) -> cudaError_t:
    """The device catching up: runs `stream`'s queued work (up to sequence number `until`) in order. Work that
    raises is a failed launch: the rest of that stream's queue is dropped and cudaErrorLaunchFailure returned."""
    while stream.pending and (until is None or stream.pending[0][0] <= until):
        _, work = stream.pending.popleft()
        try:
            work.run()
        except Exception as exc:  # a kernel that failed on the device
            stream.pending.clear()
            log(f"work on stream {int(stream):#x} failed: {exc}")
            return cudaError_t.cudaErrorLaunchFailure
    return OK


def run_all() -> cudaError_t:
    status = OK
    for stream in list(streams.values()):
        status = run_stream(stream) if status == OK else status
    return status


def concurrent_use(stream: cudaStream_t | None, scratch: tuple[int, int] | None) -> str | None:
    """Why TensorRT context memory `scratch` may not be used by new work on `stream`: work queued on another stream,
    not yet run and not waited for, uses it too (the two could run at once: undefined in TensorRT)."""
    if scratch is None or stream is None:
        return None
    for other in streams.values():
        for seq, work in other.pending if other is not stream else ():
            if work.scratch and work.scratch[0] < scratch[0] + scratch[1] and scratch[0] < sum(work.scratch):
                if not any(w.waits and w.waits[0] is other and w.waits[1] >= seq for _, w in stream.pending):
                    return (f"its context memory at {scratch[0]:#x} is used by work still queued on stream "
                            f"{int(other):#x}; order the streams with an event or use one stream")
    return None


def record(event: cudaEvent_t, stream: cudaStream_t) -> None:
    """Queues the event's completion on `stream` (or marks it captured while the stream captures)."""
    if stream.capture is not None:
        event.stream, event.captured, event.done = stream, True, False
        return
    seq = next(_sequence)
    event.stream, event.seq, event.done, event.captured, event.polled = stream, seq, False, False, False

    def complete() -> None:
        if event.seq == seq:
            event.done, event.time = True, time.perf_counter()

    stream.pending.append((seq, Work(complete)))


def wait_event(event: cudaEvent_t) -> cudaError_t:
    """Runs the event's stream up to the event (the host or another stream waits for it)."""
    if event.stream is None or event.done:
        return OK
    return run_stream(event.stream, event.seq)
