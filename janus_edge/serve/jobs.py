"""Work items handed from the HTTP handlers (event loop) to the model's worker thread, and back.

A job carries its own cancellation flag and deadline; the worker checks them between decoding steps (through the
runtime's progress callback, or between streamed pieces) and stops by raising `Cancelled`, which unwinds the
runtime's pipeline and frees its KV cache.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from janus_edge.runtime import Turn


class Cancelled(Exception):
    """The client went away or the request ran past its deadline."""


@dataclass
class Job:
    loop: asyncio.AbstractEventLoop
    timeout_s: float
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.future: asyncio.Future = self.loop.create_future()
        self.deadline = self.enqueued + self.timeout_s

    def cancel(self) -> None:
        self.cancelled.set()

    def expired(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() > self.deadline

    def check(self, *_progress) -> None:
        """Raises `Cancelled` once the job is cancelled or late; doubles as the runtime's progress callback."""
        if self.expired():
            raise Cancelled("cancelled" if self.cancelled.is_set() else "timed out")

    def batch_key(self):
        """Jobs with equal keys (not None) may share one runtime call; None runs alone."""
        return None

    def resolve(self, result) -> None:
        self._call(lambda: None if self.future.done() else self.future.set_result(result))

    def fail(self, exc: BaseException) -> None:
        self._call(lambda: None if self.future.done() else self.future.set_exception(exc))

    def _call(self, callback) -> None:
        try:
            self.loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the event loop is closed: the server is shutting down, nobody waits any more
            pass


@dataclass
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None


@dataclass
class ChatJob(Job):
    turns: list[Turn] = field(default_factory=list)
    sampling: Sampling = field(default_factory=lambda: Sampling(1))

    def batch_key(self):
        """Jobs with equal keys may share one `understand_batch` call and still get exactly their serial answer.

        Only greedy requests qualify: sampled ones share the batch's single random generator, so a row's draws
        would depend on its neighbours and its seed would no longer reproduce the Python API's answer.
        """
        return ("greedy", self.sampling.max_new_tokens) if self.sampling.temperature == 0 else None


@dataclass
class StreamJob(ChatJob):
    def __post_init__(self):
        super().__post_init__()
        self.pieces: asyncio.Queue = asyncio.Queue()

    def batch_key(self):
        return None  # the runtime streams one conversation at a time

    def emit(self, item: tuple) -> None:
        """("piece", text), then ("done", full text) or ("error", exception)."""
        self._call(lambda: self.pieces.put_nowait(item))


@dataclass
class ImageJob(Job):
    prompt: str = ""
    n: int = 1
    cfg_weight: float | None = None
    temperature: float | None = None
    seed: int | None = None
    speculative: str | None = None  # runtime.pipelines.speculative's modes; None: the plain loop
    window: int | None = None
