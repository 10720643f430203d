"""POST /v1/images/generations: PNGs of the export's image size (384x384 for Janus-Pro) as base64, with
janus-edge's cfg_weight, temperature and speculative decoding (`speculative`, `window`)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from typing import Any

from fastapi import FastAPI, Request

from janus_edge.runtime.pipelines import requests

from . import dispatch
from .errors import APIError
from .jobs import ImageJob
from .schemas import ImageGenerationRequest



def offered_size(manifest) -> str:
    """The one `size` this export generates, "WxH" (`ModelInfo.image_size` per side)."""
    side = manifest.model.image_size
    return f"{side}x{side}"


def add_image_route(app: FastAPI) -> None:
    @app.post("/v1/images/generations")
    async def generate(body: ImageGenerationRequest, request: Request):
        from .app import check_model

        state = request.app.state
        check_model(body.model, state.config)
        offered = offered_size(state.runtime.manifest)
        if body.size not in (None, offered):
            raise APIError(400, f"size {body.size!r} is not offered; sizes: {offered}", param="size",
                           code="unsupported_size")
        most = state.runtime.manifest.limits.max_batch // 2
        if body.n > most:
            raise APIError(400, f"n={body.n} is over this export's limit of {most} images per request (each image "
                           "takes 2 batch rows for guidance)", param="n", code="n_too_large")
        start = time.monotonic()
        requests.speculative(body.speculative, body.window)  # a bad mode or window: 400 now, not after queueing
        speculative: dict[str, Any] = {k: v for k, v in (("speculative", body.speculative), ("window", body.window))
                                       if v is not None}
        job = ImageJob(loop=asyncio.get_running_loop(), timeout_s=state.config.timeout_s, prompt=body.prompt,
                       n=body.n, cfg_weight=body.cfg_weight, temperature=body.temperature, seed=body.seed,
                       **speculative)
        dispatch.submit(request, job)
        result = await dispatch.wait(request, job)
        data = [{"b64_json": await asyncio.to_thread(_png_base64, image)} for image in result.images]
        state.metrics.latency.labels("images").observe(time.monotonic() - start)
        extra = {"speculative": result.speculative} if result.speculative else {}  # passes, tokens per pass
        return {"created": int(time.time()), "data": data, **extra}


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
