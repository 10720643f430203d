"""Request bodies of the OpenAI endpoints janus-edge serves. Unknown fields are refused (400) rather than silently
ignored, except the few that change nothing here (`user`, `model` is checked by the route)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(Strict):
    url: str
    detail: Optional[str] = None  # accepted, meaningless here: the model always sees its own image size


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[Union[TextPart, ImagePart]], None] = None
    name: Optional[str] = None


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    messages: list[Message] = Field(min_length=1)
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: Literal[1] = 1
    user: Optional[str] = None


class ImageGenerationRequest(Strict):
    prompt: str = Field(min_length=1)
    model: Optional[str] = None
    n: int = Field(1, ge=1)
    size: Optional[str] = None  # "WxH": only the export's image size is offered (None: that size)
    response_format: Literal["b64_json"] = "b64_json"
    seed: Optional[int] = None
    cfg_weight: Optional[float] = Field(None, ge=0)
    temperature: Optional[float] = Field(None, ge=0)
    speculative: Optional[str] = None  # janus-edge: sjd, maximal or gumbel (docs/SPECULATIVE.md), checked by the route
    window: Optional[int] = None  # positions per decoder pass with `speculative`
    user: Optional[str] = None
