"""The light runtime: numpy, pillow, tokenizers and a lazily imported backend; nothing else of ours."""

from .api import JanusRuntime
from .errors import JanusEdgeError
from .prompts import Turn

__all__ = ["JanusRuntime", "JanusEdgeError", "Turn"]
