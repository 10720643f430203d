"""TensorRT optimisation profiles for a build: the runtime's shape arithmetic (`runtime/profiles.py`, which ONNX
Runtime's TensorRT execution provider uses too) for the rows and context of one target and request size.

Batch counts rows: 2 x the images per generation request (CFG rows), the same `images` and `context`
`janus-edge plan` is given (`request_limits`), never more than the export's limits.
"""

from __future__ import annotations

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import Manifest
from janus_edge.runtime.profiles import Profile, graph_profiles

from .targets import Target


def request_limits(manifest: Manifest, target: Target, images: int | None = None,
                   context: int | None = None) -> tuple[int, int]:
    """(rows, context) the engines are built for: `images` per generation request (default 1) are 2 x images CFG
    rows; `context` defaults to the target's limit; neither beyond the export's."""
    if (images is not None and images < 1) or (context is not None and context < 1):
        raise RequestError(f"--images {images} / --context {context} must be positive",
                           "leave them out to build for one image and the target's context")
    rows = min(2 * (images or 1), manifest.limits.max_batch)
    return rows, min(context or target.max_context, manifest.limits.max_context)


def engine_profiles(manifest: Manifest, target: Target, images: int | None = None,
                    context: int | None = None) -> dict[str, list[Profile]]:
    """Every engine's profiles for `target`, `images` per request and `context` (see `request_limits`)."""
    return graph_profiles(manifest, *request_limits(manifest, target, images, context))
