"""POST /v1/chat/completions: answers (non-streaming, batched when greedy) and server-sent-event streams."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from . import dispatch
from .inputs import conversation
from .jobs import Cancelled, ChatJob, Sampling, StreamJob
from .schemas import ChatCompletionRequest

FINISH = {"eos": "stop", "length": "length", "context": "length"}


def add_chat_route(app: FastAPI) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        from .app import check_model

        state = request.app.state
        check_model(body.model, state.config)
        start = time.monotonic()
        turns = await run_in_threadpool(conversation, body.messages, state.config.allow_local_files)
        prompt_tokens = len(state.runtime.prompts.understanding(turns))
        limit = body.max_completion_tokens or body.max_tokens or \
            state.runtime.manifest.generation.understanding_max_new_tokens
        sampling = Sampling(limit, body.temperature or 0.0, body.top_p, body.seed)
        reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.config.model_name}
        if body.stream:
            stream = StreamJob(loop=asyncio.get_running_loop(), timeout_s=state.config.timeout_s, turns=turns,
                               sampling=sampling)
            dispatch.submit(request, stream)
            usage = body.stream_options.include_usage if body.stream_options else False
            return await _stream(request, stream, reply, prompt_tokens, usage, start)
        job = ChatJob(loop=asyncio.get_running_loop(), timeout_s=state.config.timeout_s, turns=turns,
                      sampling=sampling)
        dispatch.submit(request, job)
        answer = await dispatch.wait(request, job)
        state.metrics.latency.labels("chat").observe(time.monotonic() - start)
        completion = len(answer.token_ids)
        return {**reply, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": FINISH[answer.finish_reason], "logprobs": None}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                          "total_tokens": prompt_tokens + completion}}


async def _stream(request: Request, job: StreamJob, reply: dict, prompt_tokens: int, include_usage: bool,
                  start: float):
    """Waits for the first piece (so that a request the runtime refuses still gets a plain 400), then streams."""
    state = request.app.state
    first = await _next(request, job)
    if first[0] == "error":
        raise dispatch.api_error(first[1])
    chunk = {**reply, "object": "chat.completion.chunk"}

    def event(delta: dict, finish: str | None = None, **extra) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**chunk, 'choices': [choice], **extra})}\n\n".encode()

    async def events():
        item = first
        try:
            yield event({"role": "assistant", "content": ""})
            while item[0] == "piece":
                yield event({"content": item[1]})
                item = await _next(request, job, watch_client=False)
            if item[0] == "error":  # a failure mid-stream: an OpenAI-style error event, then the end
                error = dispatch.api_error(item[1])
                yield f"data: {json.dumps({'error': {'message': error.message, 'type': error.type}})}\n\n".encode()
            else:
                tokens = len(state.runtime.tokenizer.encode(item[1]))
                finish = "length" if tokens >= job.sampling.max_new_tokens else "stop"
                yield event({}, finish)
                if include_usage:
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                             "total_tokens": prompt_tokens + tokens}
                    yield f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"
            state.metrics.latency.labels("chat_stream").observe(time.monotonic() - start)
        finally:
            job.cancel()  # no-op once finished; frees the worker when the client went away mid-stream

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _next(request: Request, job: StreamJob, watch_client: bool = True) -> tuple:
    """The next item from the worker. Once streaming, Starlette itself notices a vanished client and closes the
    generator (whose `finally` cancels the job), so only the wait for the first piece watches the client."""

    while True:
        try:
            return await asyncio.wait_for(job.pieces.get(), dispatch.POLL_S)
        except asyncio.TimeoutError:
            if watch_client and await request.is_disconnected():
                job.cancel()
                return ("error", Cancelled("the client closed the connection"))
            if time.monotonic() > job.deadline + 5 * dispatch.POLL_S:
                job.cancel()
                return ("error", dispatch.timed_out(request))
