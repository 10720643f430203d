"""The FastAPI application: configuration, the request guards (API key, body size), and the small routes.

`create_app(runtime, config)` builds an app around an already loaded `JanusRuntime`; `janus-edge serve` runs it with
uvicorn. The chat and image routes live in `chat.py` and `generations.py`.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

from .chat import add_chat_route
from .errors import APIError, error_body, install_error_handlers
from .generations import add_image_route
from .metrics import CONTENT_TYPE, Metrics
from .scheduler import Scheduler

OPEN_PATHS = ("/health", "/metrics")  # load balancers and Prometheus scrape these without the key
DRAIN_LIMIT = 256 * 1024 * 1024  # bodies refused for size are read and dropped up to this; larger ones cut off
ENDPOINTS = ("/v1/chat/completions", "/v1/images/generations", "/v1/models", *OPEN_PATHS)


@dataclass
class ServeConfig:
    model_name: str
    api_key: str | None = None
    max_queue: int = 64
    allow_local_files: Path | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 600.0


def create_app(runtime, config: ServeConfig) -> FastAPI:
    metrics = Metrics()
    app = FastAPI(title="janus-edge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime, app.state.config, app.state.metrics = runtime, config, metrics
    app.state.scheduler = Scheduler(runtime, metrics, config.max_queue)
    app.router.add_event_handler("shutdown", app.state.scheduler.stop)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, config=config, metrics=metrics)
    add_chat_route(app)
    add_image_route(app)
    created = int(time.time())

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": created,
                                            "owned_by": "janus-edge"}]}

    @app.get("/health")
    async def health():
        scheduler = app.state.scheduler
        alive = scheduler.thread.is_alive()
        body = {"status": "ok" if alive else "worker stopped", "load": scheduler.load(),
                "max_queue": config.max_queue}
        return Response(_json(body), 200 if alive else 503, media_type="application/json")

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    return app


def check_model(requested: str | None, config: ServeConfig) -> None:
    if requested is not None and requested != config.model_name:
        raise APIError(404, f"model {requested!r} is not served here; this server serves {config.model_name!r}",
                       "not_found_error", "model", "model_not_found")


class RequestGuard:
    """ASGI middleware: the API key (401) and the body-size limit (413) before any handler reads the body; counts
    responses by endpoint and status."""

    def __init__(self, app, config: ServeConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"

        async def counted_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        await self._guarded(scope, receive, counted_send)

    async def _guarded(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.config.api_key and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.config.api_key.encode()):
                return await _send_error(send, APIError(401, "missing or wrong API key (send Authorization: Bearer "
                                                        "KEY)", "authentication_error", code="invalid_api_key"))
        limit = self.config.max_body_bytes
        too_large = APIError(413, f"the request body is over the {limit:,}-byte limit; send smaller images",
                             code="request_too_large")
        declared = headers.get("content-length", "")
        if declared.isdigit():
            if int(declared) > limit:
                if int(declared) <= DRAIN_LIMIT:
                    await _drain(receive)  # a client still sending would miss the answer if the socket closed
                return await _send_error(send, too_large)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True  # no length given (chunked): read up to the limit, then replay
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > limit:
                return await _send_error(send, too_large)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


async def _drain(receive) -> None:
    """Reads and discards a refused body (never holding it), so the client reads the 413 instead of a reset."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _send_error(send, error: APIError) -> None:
    body = _json(error_body(error.message, error.type, error.param, error.code))
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _json(value) -> bytes:
    import json

    return json.dumps(value).encode()
