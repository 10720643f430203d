"""OpenAI-style error objects: `{"error": {"message", "type", "param", "code"}}` with a 4xx or 5xx status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from janus_edge.runtime.errors import JanusEdgeError

log = logging.getLogger("janus_edge.serve")


class APIError(Exception):
    """A request the server refuses; `status` is the HTTP status, `headers` extra response headers."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.param, self.code), self.status, self.headers)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_runtime(exc: JanusEdgeError) -> APIError:
    """A runtime user error (bad image, prompt over the context, batch too large ...) is the client's 400."""
    return APIError(400, f"{exc.message}; fix: {exc.hint}" if exc.hint else exc.message, code=type(exc).__name__)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(JanusEdgeError)
    async def _runtime_error(request: Request, exc: JanusEdgeError):
        return from_runtime(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(location) or None
        if first.get("type") == "json_invalid" or (first.get("type") == "model_attributes_type" and not location):
            return APIError(400, "the request body is not a valid JSON object", code="invalid_json").response()
        message = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request")
        return APIError(400, message, param=param, code=first.get("type")).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), kind).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return APIError(500, f"internal error ({type(exc).__name__}); the server keeps running, please report it",
                        "server_error").response()
