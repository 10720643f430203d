"""Chat messages -> runtime `Turn`s, and `image_url` parts -> decoded images.

Images come as base64 `data:` URLs, or as local paths (`file://` URLs or plain paths) when the server was started
with `--allow-local-files DIR` and the resolved path lies under DIR. Nothing is ever fetched from the network.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from urllib.parse import unquote, urlparse

from janus_edge.runtime import Turn
from janus_edge.runtime.errors import ImageError
from janus_edge.runtime.images import load_image

from .errors import APIError, from_runtime
from .schemas import ImagePart, Message


def conversation(messages: list[Message], allowed_dir: Path | None) -> list[Turn]:
    """user, assistant, user, ... -> Turns (each earlier turn with its answer); the last message asks."""
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        param = f"messages.{index}"
        if message.role in ("system", "developer"):
            raise APIError(400, f"{param}: {message.role} messages are not supported; the export's prompt format "
                           "fixes the system prompt (send user and assistant messages only)", param=param)
        expected = "user" if index % 2 == 0 else "assistant"
        if message.role != expected:
            raise APIError(400, f"{param}: expected a {expected} message (messages alternate user, assistant, ... "
                           "and end with user), got {message.role}", param=param)
        text, images = _content(message, param, allowed_dir)
        if message.role == "user":
            turns.append(Turn(text, images))
        elif images:
            raise APIError(400, f"{param}: assistant messages cannot hold images", param=param)
        else:
            turns[-1].answer = text
    if messages[-1].role != "user":
        raise APIError(400, "the last message must be the user's question", param=f"messages.{len(messages) - 1}")
    return turns


def _content(message: Message, param: str, allowed_dir: Path | None) -> tuple[str, list]:
    if message.content is None or isinstance(message.content, str):
        return message.content or "", []
    texts, images = [], []
    for index, part in enumerate(message.content):
        if isinstance(part, ImagePart):
            images.append(decode_image_url(part.image_url.url, f"{param}.content.{index}", allowed_dir))
        else:
            texts.append(part.text)
    return "\n".join(texts), images


def decode_image_url(url: str, param: str, allowed_dir: Path | None):
    """A decoded RGB PIL image (the runtime's own defensive loader), or a 400 naming the part."""
    source: bytes | Path
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise APIError(400, f"{param}: a data URL must be data:image/<type>;base64,<data>", param=param)
        try:
            source = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, f"{param}: the data URL's payload is not valid base64", param=param) from None
    else:
        source = _local_path(url, param, allowed_dir)
    try:
        return load_image(source)
    except ImageError as exc:
        error = from_runtime(exc)
        error.message, error.param = f"{param}: {error.message}", param
        raise error from None


def _local_path(url: str, param: str, allowed_dir: Path | None) -> Path:
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise APIError(400, f"{param}: {parsed.scheme} URLs are not fetched; send the image as a base64 data URL",
                       param=param)
    if allowed_dir is None:
        raise APIError(400, f"{param}: local image paths are disabled; send a base64 data URL or start the server "
                       "with --allow-local-files DIR", param=param)
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else url).resolve()
    if not path.is_relative_to(allowed_dir):
        raise APIError(403, f"{param}: {path} is outside the allowed folder {allowed_dir}", "permission_error",
                       param=param)
    if not path.is_file():
        raise APIError(400, f"{param}: {path} is not a file", param=param)
    return path
