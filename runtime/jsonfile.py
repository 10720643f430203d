"""Reading the JSON files users hand us (manifests, checkpoint configs) with one-line errors of the caller's type."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import JanusEdgeError


def read_object(path: Path, error: type[JanusEdgeError], missing: tuple[str, str], what: str, fix: str) -> dict:
    """The JSON object in `path`; `error(*missing)` if there is no such file, `error(..., fix)` if it is not
    valid JSON or not an object (`what` names what it should hold)."""
    if not path.is_file():
        raise error(*missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc})", fix) from None
    if not isinstance(data, dict):
        raise error(f"{path} should hold a JSON object (the {what})", fix)
    return data
