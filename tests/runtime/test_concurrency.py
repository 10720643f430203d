"""Lifecycle and concurrency of one runtime: close() frees deterministically and is idempotent; threads sharing
a runtime get the results of serial runs (requests take turns on a per-runtime lock); a nested request from the
thread holding the runtime is refused; a request cancelled through `should_stop` hands its KV cache back, and the
next request equals a fresh run. The stand-in case checks device allocations on the TensorRT backend's code (the
TEST-ONLY stand-in of tests/standin/, not a GPU)."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import pytest

from janus_edge.runtime import JanusRuntime
from janus_edge.runtime.errors import Cancelled, RequestError
from standin_env import standin_imports

PHOTO = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)


@dataclass(frozen=True)
class Request:
    kind: str  # understand, stream or generate
    seed: int

    def run(self, runtime: JanusRuntime, should_stop=None):
        if self.kind == "generate":
            return runtime.generate_images("a red fox", n=1, seed=self.seed, should_stop=should_stop).tokens.tolist()
        options = {"max_new_tokens": 12, "temperature": 1.0, "seed": self.seed, "should_stop": should_stop}
        if self.kind == "stream":
            return "".join(runtime.stream_understand([PHOTO], "Describe it.", **options))
        return runtime.understand([PHOTO], "What is this?", **options).token_ids


# four threads, each a different mix; every request seeded, so a serial run fixes each result
PLANS = [[Request("understand", 1), Request("generate", 11)], [Request("stream", 2), Request("understand", 3)],
         [Request("understand", 4), Request("stream", 5)], [Request("stream", 6), Request("understand", 7)]]


@pytest.fixture(scope="module")
def serial(export_hf) -> dict[Request, object]:
    with JanusRuntime.load(export_hf) as runtime:
        return {request: request.run(runtime) for plan in PLANS for request in plan}


def test_close_frees_sessions_and_buffers_deterministically_and_is_idempotent(export_hf):
    runtime = JanusRuntime.load(export_hf)
    expected = runtime.understand([PHOTO], "What is this?", max_new_tokens=4).token_ids
    with runtime.chat() as chat:
        chat.ask("Hello?", max_new_tokens=2)
    sessions = [weakref.ref(graph.session) for graph in runtime.backend._sessions.values()]
    assert sessions and runtime.backend.pool.free  # graphs loaded, a KV buffer set pooled
    runtime.close()
    assert all(ref() is None for ref in sessions)  # freed at close(), without waiting for a garbage collection
    assert runtime.backend._sessions == {} and runtime.backend.pool.free == []
    runtime.close()  # idempotent
    chat.close()
    assert runtime.understand([PHOTO], "What is this?", max_new_tokens=4).token_ids == expected  # reloads
    with runtime:
        pass
    assert runtime.backend._sessions == {}


def test_threads_sharing_a_runtime_get_the_serial_results_one_request_at_a_time(export_hf, serial):
    runtime = JanusRuntime.load(export_hf)
    results: dict[Request, object] = {}
    trace: list[Request] = []  # the request each decoder step belongs to, in the order the steps ran
    errors: list[BaseException] = []

    def work(plan: list[Request]) -> None:
        try:
            for request in plan:
                results[request] = request.run(runtime, should_stop=lambda r=request: trace.append(r) or False)
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(plan,)) for plan in PLANS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert results == serial
    runs = [request for i, request in enumerate(trace) if i == 0 or trace[i - 1] != request]
    assert sorted(runs, key=str) == sorted(serial, key=str)  # each request's steps ran as one block, unbroken


def test_a_nested_request_on_the_holding_thread_is_refused_and_other_threads_wait(export_hf):
    runtime = JanusRuntime.load(export_hf)
    expected = runtime.understand([], "Hi", max_new_tokens=3).token_ids
    pieces = runtime.stream_understand([PHOTO], "Describe it.", max_new_tokens=8)
    next(pieces)
    with pytest.raises(RequestError, match="already running a request on this thread"):
        runtime.understand([], "Hi", max_new_tokens=3)
    waiting: list = []
    other = threading.Thread(target=lambda: waiting.append(runtime.understand([], "Hi", max_new_tokens=3).token_ids))
    other.start()
    other.join(timeout=0.5)
    assert other.is_alive() and not waiting  # blocked while the stream holds the runtime
    pieces.close()
    other.join(timeout=120)
    assert waiting == [expected]


def _stop_after(steps: int):
    """A should_stop callback that says stop at its `steps`-th call, and counts its calls."""
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= steps

    return should_stop, calls


@pytest.mark.parametrize("request_", [Request("understand", 8), Request("stream", 9), Request("generate", 13)],
                         ids=["understand", "stream", "generate"])
def test_a_cancelled_request_returns_its_cache_and_the_next_equals_a_fresh_run(request_, export_hf):
    runtime = JanusRuntime.load(export_hf)
    expected = request_.run(runtime)  # loads the graphs and pools a buffer set sized for this request
    pool = runtime.backend.pool
    baseline = sorted(id(buffer) for buffers in pool.free for buffer in buffers)
    should_stop, calls = _stop_after(4)
    with pytest.raises(Cancelled, match="should_stop"):
        request_.run(runtime, should_stop)
    assert len(calls) == 4  # it stopped mid-way, at the step that asked
    assert sorted(id(buffer) for buffers in pool.free for buffer in buffers) == baseline  # all back, none new
    assert request_.run(runtime) == expected  # what the freshly loaded runtime gave before the cancellation


def test_cancel_from_another_thread_with_an_event(export_hf):
    runtime = JanusRuntime.load(export_hf)
    cancel, started, outcome = threading.Event(), threading.Event(), []

    def generate() -> None:
        try:
            runtime.generate_images("a red fox", n=1, progress=lambda step, total: started.set(),
                                    should_stop=cancel.is_set)
            outcome.append("finished")
        except Cancelled:
            outcome.append("cancelled")

    worker = threading.Thread(target=generate)
    worker.start()
    assert started.wait(timeout=120)
    cancel.set()
    worker.join(timeout=120)
    assert outcome == ["cancelled"]
    assert runtime.understand([], "Hi", max_new_tokens=2).token_ids  # the runtime is free again


def test_chat_cancelled_mid_answer_keeps_a_consistent_cache(export_hf):
    runtime = JanusRuntime.load(export_hf)
    with runtime.chat(max_new_tokens=6) as chat, JanusRuntime.load(export_hf).chat(max_new_tokens=6) as fresh:
        should_stop, _ = _stop_after(3)
        with pytest.raises(Cancelled):
            chat.ask("What is in the picture?", images=[PHOTO], should_stop=should_stop)
        fresh.turns = list(chat.turns)  # the same history (the cancelled turn with its partial answer)
        assert chat.ask("And the colours?").token_ids == fresh.ask("And the colours?").token_ids


def test_standin_tensorrt_cancelled_generation_returns_every_device_allocation(standin_engines, runtime):
    with standin_imports():
        from cuda.bindings import runtime as cudart

        engines = JanusRuntime.load(standin_engines)
        allocations = []
        for steps in (20, 7, 20):  # the first run loads the engines and sizes their buffers; then nothing new
            with pytest.raises(Cancelled):
                engines.generate_images("a red fox", n=1, temperature=0, should_stop=_stop_after(steps)[0])
            allocations.append(dict(cudart.live_allocations()))
        assert allocations[1] == allocations[0] == allocations[2]  # the cache went back to the pool, reused
        question = {"max_new_tokens": 8}
        assert engines.understand([PHOTO], "What?", **question).token_ids == \
            runtime.understand([PHOTO], "What?", **question).token_ids
        engines.close()
        assert cudart.live_allocations() == {}
