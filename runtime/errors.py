"""Error types shared by every part of janus-edge.

`JanusEdgeError` and its subclasses are *user* errors: bad input, missing or tampered files, a request the
export cannot serve. They carry a one-line message naming the problem and, in `hint`, the fix. The CLI prints
them without a traceback and exits with status 2. Anything else that escapes is an internal bug and keeps its
traceback.
"""

from __future__ import annotations


class JanusEdgeError(Exception):
    """A problem with what the user gave us (files, images, prompts, options)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CheckpointError(JanusEdgeError):
    """A model directory that cannot be read as a Janus checkpoint."""


class ManifestError(JanusEdgeError):
    """An export directory whose manifest or files are missing, tampered with or of another version."""


class ImageError(JanusEdgeError):
    """An image that cannot be decoded or is unreasonable to decode."""


class RequestError(JanusEdgeError):
    """A request the export cannot serve: prompt over the context, batch over the exported maximum, bad options."""


class Cancelled(JanusEdgeError):
    """A request stopped by its caller's `should_stop` callback; its KV cache went back to the pool."""


class BackendError(JanusEdgeError):
    """A backend that is not installed or cannot run the graphs on this machine."""


class InternalError(RuntimeError):
    """A bug in janus-edge: an invariant that should hold did not. Not the user's fault; please report it."""
