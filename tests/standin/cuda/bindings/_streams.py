"""cudart stand-in: streams, capture, graphs and events (see runtime.py's docstring)."""

from __future__ import annotations

from . import _gpu
from ._gpu import OK, Work
from ._types import cudaError_t, cudaEvent_t, cudaEventDefault, cudaEventDisableTiming, cudaGraph_t, cudaGraphExec_t, \
    cudaStream_t, cudaStreamCaptureMode, cudaStreamDefault, cudaStreamNonBlocking


def cudaStreamCreate() -> tuple[cudaError_t, cudaStream_t]:
    return cudaStreamCreateWithFlags(cudaStreamDefault)


def cudaStreamCreateWithFlags(flags: int) -> tuple[cudaError_t, cudaStream_t | None]:
    """cudaStreamNonBlocking or not, streams here never synchronize with the legacy default stream (unused)."""
    if int(flags) not in (cudaStreamDefault, cudaStreamNonBlocking):
        return cudaError_t.cudaErrorInvalidValue, None
    stream = cudaStream_t()
    _gpu.streams[int(stream)] = stream
    return OK, stream


def cudaStreamDestroy(stream: int | cudaStream_t) -> tuple[cudaError_t]:
    """Queued work still completes (the device finishes it), then the handle is invalid."""
    found = _gpu.stream_of(stream)
    if found is None or found.capture is not None:
        return (cudaError_t.cudaErrorInvalidResourceHandle if found is None else cudaError_t.cudaErrorIllegalState,)
    status = _gpu.run_stream(found)
    found.destroyed = True
    del _gpu.streams[int(found)]
    return (status,)


def cudaStreamSynchronize(stream: int | cudaStream_t) -> tuple[cudaError_t]:
    found = _gpu.stream_of(stream)
    if found is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if found.capture is not None:
        found.invalidated = cudaError_t.cudaErrorStreamCaptureInvalidated
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    return (_gpu.run_stream(found),)


def cudaStreamWaitEvent(stream: int | cudaStream_t, event: cudaEvent_t, flags: int) -> tuple[cudaError_t]:
    """Later work on `stream` waits for the event's work (on its own stream) to finish."""
    found = _gpu.stream_of(stream)
    if found is None or not isinstance(event, cudaEvent_t) or event.destroyed:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if event.stream is None or event.done:
        return (OK,)
    if found.capture is not None:
        if event.captured:
            return (OK,)  # an ordering inside the same capture
        found.invalidated = cudaError_t.cudaErrorStreamCaptureIsolation  # a dependency outside the capture
        return (cudaError_t.cudaErrorStreamCaptureIsolation,)
    source, seq = event.stream, event.seq
    return (_gpu.enqueue(found, Work(lambda: _raise_on(_gpu.run_stream(source, seq)), waits=(source, seq))),)


def _raise_on(status: cudaError_t) -> None:
    if status != OK:
        raise RuntimeError(f"the awaited stream failed with {status!r}")


def cudaStreamBeginCapture(stream: int | cudaStream_t, mode: cudaStreamCaptureMode) -> tuple[cudaError_t]:
    found = _gpu.stream_of(stream)
    if found is None or found.capture is not None:
        return (cudaError_t.cudaErrorIllegalState if found else cudaError_t.cudaErrorInvalidResourceHandle,)
    found.capture, found.capture_mode, found.invalidated = [], cudaStreamCaptureMode(mode), None
    return (OK,)


def cudaStreamEndCapture(stream: int | cudaStream_t) -> tuple[cudaError_t, cudaGraph_t | None]:
    found = _gpu.stream_of(stream)
    if found is None or found.capture is None:
        return cudaError_t.cudaErrorStreamCaptureUnmatched, None
    work, invalidated = found.capture, found.invalidated
    found.capture, found.invalidated = None, None
    if invalidated is not None:
        return cudaError_t.cudaErrorStreamCaptureInvalidated, None
    graph = cudaGraph_t(work)
    _gpu.graphs[int(graph)] = graph
    return OK, graph


def cudaGraphInstantiate(graph: cudaGraph_t, flags: int) -> tuple[cudaError_t, cudaGraphExec_t | None]:
    if not isinstance(graph, cudaGraph_t) or graph.destroyed:
        return cudaError_t.cudaErrorInvalidValue, None
    executable = cudaGraphExec_t(list(graph.work))
    _gpu.graphs[int(executable)] = executable
    return OK, executable


def cudaGraphLaunch(graphExec: cudaGraphExec_t, stream: int | cudaStream_t) -> tuple[cudaError_t]:
    """Queues the graph's work on `stream`. A graph whose baked-in state changed (a freed buffer, a TensorRT
    context whose profile, shapes, addresses or memory changed) is refused: on a GPU it would silently run old
    state (undefined behaviour)."""
    if not isinstance(graphExec, cudaGraphExec_t) or graphExec.destroyed:
        return (cudaError_t.cudaErrorInvalidValue,)
    if _gpu.stream_of(stream) is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    for work in graphExec.work:
        reason = work.stale() or _gpu.concurrent_use(_gpu.stream_of(stream), work.scratch)
        if reason:
            _gpu.log(f"cudaGraphLaunch: stale graph: {reason}; capture it again")
            return (cudaError_t.cudaErrorLaunchFailure,)
    graphExec.launches += 1
    _gpu.launches += 1
    for work in graphExec.work:
        _gpu.enqueue(stream, work)
    return (OK,)


def cudaGraphDestroy(graph: cudaGraph_t) -> tuple[cudaError_t]:
    return _destroy(graph, cudaGraph_t)


def cudaGraphExecDestroy(graphExec: cudaGraphExec_t) -> tuple[cudaError_t]:
    return _destroy(graphExec, cudaGraphExec_t)


def _destroy(handle, kind: type) -> tuple[cudaError_t]:
    if not isinstance(handle, kind) or handle.destroyed:
        return (cudaError_t.cudaErrorInvalidValue,)
    handle.destroyed = True
    _gpu.graphs.pop(int(handle), None)
    return (OK,)


# --- events ----------------------------------------------------------------------------------------------------

def cudaEventCreate() -> tuple[cudaError_t, cudaEvent_t]:
    return cudaEventCreateWithFlags(cudaEventDefault)


def cudaEventCreateWithFlags(flags: int) -> tuple[cudaError_t, cudaEvent_t | None]:
    if int(flags) & ~0x7:
        return cudaError_t.cudaErrorInvalidValue, None
    event = cudaEvent_t(flags=int(flags))
    _gpu.events[int(event)] = event
    return OK, event


def _live_event(event) -> bool:
    return isinstance(event, cudaEvent_t) and not event.destroyed


def cudaEventRecord(event: cudaEvent_t, stream: int | cudaStream_t) -> tuple[cudaError_t]:
    found = _gpu.stream_of(stream)
    if found is None or not _live_event(event):
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    _gpu.record(event, found)
    return (OK,)


def cudaEventSynchronize(event: cudaEvent_t) -> tuple[cudaError_t]:
    if not _live_event(event):
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if event.captured:
        return (cudaError_t.cudaErrorCapturedEvent,)
    return (_gpu.wait_event(event),)


def cudaEventQuery(event: cudaEvent_t) -> tuple[cudaError_t]:
    """NotReady while the event's work is queued; the device has finished it by the next query."""
    if not _live_event(event):
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if event.captured:
        return (cudaError_t.cudaErrorCapturedEvent,)
    if event.stream is None or event.done:
        return (OK,)
    if not event.polled:
        event.polled = True
        return (cudaError_t.cudaErrorNotReady,)
    return (_gpu.wait_event(event),)


def cudaEventElapsedTime(start: cudaEvent_t, end: cudaEvent_t) -> tuple[cudaError_t, float]:
    if not (_live_event(start) and _live_event(end)) or (start.flags | end.flags) & cudaEventDisableTiming:
        return cudaError_t.cudaErrorInvalidResourceHandle, 0.0
    if start.time is None or end.time is None or not (start.done and end.done):
        return cudaError_t.cudaErrorNotReady, 0.0
    return OK, (end.time - start.time) * 1e3


def cudaEventDestroy(event: cudaEvent_t) -> tuple[cudaError_t]:
    if not _live_event(event):
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    event.destroyed = True
    _gpu.events.pop(int(event), None)
    return (OK,)


