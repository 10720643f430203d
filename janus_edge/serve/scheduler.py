"""One worker thread owns the runtime; a bounded queue feeds it; greedy understanding requests that are waiting
together run as one batch (up to the export's max batch rows).

Batching never changes an answer: only greedy requests with the same token budget share a call (see
`ChatJob.batch_key`), a batch that fails on one request is re-run one request at a time, and a row that a batch
stopped at the context limit (the batch's longest prompt sets the budget) is re-run alone.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from janus_edge.runtime.errors import JanusEdgeError

from .jobs import Cancelled, ChatJob, ImageJob, Job, StreamJob
from .metrics import Metrics

log = logging.getLogger("janus_edge.serve")


class QueueFull(Exception):
    pass


class Scheduler:
    def __init__(self, runtime, metrics: Metrics, max_queue: int):
        self.runtime, self.metrics, self.max_queue = runtime, metrics, max_queue
        self.max_batch = runtime.manifest.limits.max_batch
        self.waiting: collections.deque[Job] = collections.deque()
        self.running = 0
        self.condition = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="janus-edge-model", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        """Queues the job, or raises QueueFull when `max_queue` requests are already waiting or running."""
        with self.condition:
            if len(self.waiting) + self.running >= self.max_queue:
                self.metrics.rejected.inc()
                raise QueueFull
            self.waiting.append(job)
            self.metrics.queue_depth.set(len(self.waiting))
            self.condition.notify()

    def load(self) -> int:
        with self.condition:
            return len(self.waiting) + self.running

    def stop(self, timeout_s: float = 5.0) -> None:
        with self.condition:
            self.stopping = True
            for job in self.waiting:
                job.fail(Cancelled("the server is shutting down"))
            self.waiting.clear()
            self.condition.notify()
        self.thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self.condition:
                while not self.waiting and not self.stopping:
                    self.condition.wait()
                if self.stopping:
                    return
                batch = self._take()
                self.running = len(batch)
                self.metrics.queue_depth.set(len(self.waiting))
                self.metrics.running.set(self.running)
            try:
                self._run(batch)
            except Exception as exc:  # a bug must fail its requests, never the worker
                log.exception("internal error in the model worker")
                for job in batch:
                    job.fail(exc)
            finally:
                with self.condition:
                    self.running = 0
                    self.metrics.running.set(0)

    def _take(self) -> list[Job]:
        """The oldest live job, plus every waiting job that may share its batch."""
        while self.waiting:
            first = self.waiting.popleft()
            if not first.expired():
                break
            self._drop(first)
        else:
            return []
        key = first.batch_key()
        if key is None:
            return [first]
        batch, rest = [first], collections.deque[Job]()
        while self.waiting:
            job = self.waiting.popleft()
            if job.expired():
                self._drop(job)
            elif len(batch) < self.max_batch and job.batch_key() == key:
                batch.append(job)
            else:
                rest.append(job)
        self.waiting = rest
        return batch

    def _drop(self, job: Job) -> None:
        self.metrics.cancelled.inc()
        job.fail(Cancelled("cancelled while queued" if job.cancelled.is_set() else "timed out while queued"))

    def _run(self, batch: list[Job]) -> None:
        if not batch:
            return
        first = batch[0]
        try:
            if isinstance(first, StreamJob):
                self._stream(first)
            elif isinstance(first, ImageJob):
                self._generate(first)
            else:
                self._understand(batch)  # type: ignore[arg-type]
        except Cancelled as exc:
            self.metrics.cancelled.inc()
            for job in batch:
                job.fail(exc)

    def _understand(self, batch: list[ChatJob]) -> None:
        sampling = batch[0].sampling
        try:
            answers = self.runtime.understand_batch([job.turns for job in batch], sampling.max_new_tokens,
                                                    sampling.temperature, sampling.top_p, None, sampling.seed)
        except JanusEdgeError as exc:
            if len(batch) == 1:
                batch[0].fail(exc)
                return
            answers = [None] * len(batch)  # one request's fault: find it by running each alone
        self.metrics.batch_size.observe(len(batch))
        for job, answer in zip(batch, answers):
            if answer is None or (answer.finish_reason == "context" and len(batch) > 1):
                self._understand([job])
                continue
            self.metrics.tokens.inc(len(answer.token_ids))
            self.metrics.tokens_per_s.set(answer.timings.get("tokens_per_s", 0.0) * len(batch))
            job.resolve(answer)

    def _stream(self, job: StreamJob) -> None:
        *history, last = job.turns
        sampling = job.sampling
        pieces = self.runtime.stream_understand(last.images, last.question, history, sampling.max_new_tokens,
                                                sampling.temperature, sampling.top_p, None, sampling.seed)
        start, text = time.perf_counter(), ""
        try:
            for piece in pieces:
                job.check()
                text += piece
                job.emit(("piece", piece))
        except JanusEdgeError as exc:
            job.emit(("error", exc))
            job.fail(exc)
            return
        except Cancelled as exc:
            job.emit(("error", exc))
            raise
        finally:
            pieces.close()  # stops the runtime's generator: its KV cache goes with it
        tokens = len(self.runtime.tokenizer.encode(text))
        self.metrics.tokens.inc(tokens)
        self.metrics.tokens_per_s.set(tokens / max(time.perf_counter() - start, 1e-9))
        job.emit(("done", text))
        job.resolve(text)

    def _generate(self, job: ImageJob) -> None:
        start = time.perf_counter()
        try:
            result = self.runtime.generate_images(job.prompt, n=job.n, cfg_weight=job.cfg_weight,
                                                  temperature=job.temperature, seed=job.seed, progress=job.check,
                                                  speculative=job.speculative, window=job.window)
        except JanusEdgeError as exc:
            job.fail(exc)
            return
        self.metrics.images.inc(job.n)
        self.metrics.images_per_s.set(job.n / max(time.perf_counter() - start, 1e-9))
        job.resolve(result)
