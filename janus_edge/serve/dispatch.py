"""Event-loop side of a job: queue it (429 when full), wait for it while watching the client and the deadline."""

from __future__ import annotations

import asyncio
import time

from fastapi import Request

from janus_edge.runtime.errors import JanusEdgeError

from .errors import APIError, from_runtime
from .jobs import Cancelled, Job
from .scheduler import QueueFull

POLL_S = 0.25  # how often a waiting handler looks for a vanished client


def submit(request: Request, job: Job) -> None:
    try:
        request.app.state.scheduler.submit(job)
    except QueueFull:
        limit = request.app.state.config.max_queue
        raise APIError(429, f"the server is busy ({limit} requests waiting or running); retry shortly",
                       "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}) from None


async def wait(request: Request, job: Job):
    """The job's result; cancels the job if the client disconnects or the deadline passes."""
    while True:
        done, _ = await asyncio.wait({job.future}, timeout=POLL_S)
        if done:
            return result(job)
        if await request.is_disconnected():
            job.cancel()
            raise APIError(499, "the client closed the connection", code="client_closed")
        if time.monotonic() > job.deadline + 5 * POLL_S:  # the worker missed it: a step longer than the deadline
            job.cancel()
            raise timed_out(request)


def result(job: Job):
    try:
        return job.future.result()
    except (Cancelled, JanusEdgeError) as exc:
        raise api_error(exc) from None


def api_error(exc: BaseException) -> APIError:
    """What a failure the worker reported looks like to the client."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, Cancelled):
        return APIError(504, f"the request was stopped: {exc}", "timeout_error", code="timeout")
    if isinstance(exc, JanusEdgeError):
        return from_runtime(exc)
    return APIError(500, f"internal error ({type(exc).__name__})", "server_error")


def timed_out(request: Request) -> APIError:
    limit = request.app.state.config.timeout_s
    return APIError(504, f"the request ran past the server's {limit:g} s limit", "timeout_error", code="timeout")
