"""What one generation request costs on this GPU: prefill and decode-step time, and the device memory the engines
and a request take (cudaMemGetInfo's free memory before loading, after loading every engine, at every step of a
generation and after it), next to what `plan_engines` predicts for the same engines, images and context.

Times are wall-clock on the host around calls that end in a host read (the prefill's last hidden state, each
step's sampled token), so each includes the synchronisation the product pays. On the stand-in they measure the
CPU and mean nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from janus_edge.runtime.backends.cuda import _cudart, check
from janus_edge.runtime.sampling import Sampler
from janus_edge.runtime.kv import request_capacity

from .forced import PROMPT

PREFILL_TOKENS = 640  # one image (578 tokens) and a question, as export/tensorrt/profiles.py's typical prompt
DECODE_STEPS = 32
WARMUP_STEPS = 2  # the first decode steps bind, run and capture the CUDA graph


def free_device_memory() -> int:
    cudart: Any = _cudart()
    free, _total = check(cudart.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free)


def open_every_engine(backend, names) -> None:
    """Deserialises every engine and creates its execution context now, so loading is measured apart from the
    request."""
    for name in names:
        backend.graph(name)


def measure_request(backend, manifest, steps: int = DECODE_STEPS) -> dict[str, Any]:
    """One CFG generation request (one image, two rows), timed: prefill, then `steps` greedy decode steps through
    the generation head and the CFG sampler."""
    rows, context = 2, manifest.limits.max_context
    prompt_length = max(1, min(PREFILL_TOKENS, context // 2 - steps - 1))
    capacity = request_capacity(prompt_length + steps + 1, context)
    ids = np.random.default_rng(0).integers(0, manifest.model.vocab_size, (rows, prompt_length))
    greedy, weight = Sampler(), manifest.generation.cfg_weight
    times = []
    with backend.kv_decoder(rows, capacity) as decoder:
        start = time.perf_counter()
        hidden = decoder.step(backend.embed("text_embedding", ids), np.ones_like(ids),
                              np.tile(np.arange(prompt_length), (rows, 1)), last_only=True)
        token = backend.choose("generation_head", hidden, greedy, weight)
        prefill_ms = (time.perf_counter() - start) * 1e3
        for index in range(steps):
            position = prompt_length + index
            start = time.perf_counter()
            step_ids = np.tile(np.asarray(token).reshape(1, 1), (rows, 1))
            hidden = decoder.step(backend.embed("generation_embedding", step_ids),
                                  np.ones((rows, position + 1), np.int64), np.full((rows, 1), position))
            token = backend.choose("generation_head", hidden, greedy, weight)
            times.append((time.perf_counter() - start) * 1e3)
    timed = times[WARMUP_STEPS:] or times
    return {"rows": rows, "prefill_tokens": prompt_length, "prefill_ms": prefill_ms,
              "decode_steps": len(timed), "decode_step_ms": float(np.median(timed)),
              "decode_step_ms_max": float(np.max(timed)), "first_steps_ms": times[:WARMUP_STEPS]}


def generation_memory(gpu_rt, engine_dir: Path, free_before: int, free_loaded: int, integrated: bool
                      ) -> dict[str, Any]:
    """One greedy image generation on the freshly loaded engines, for one image and the request's context. Judged:
    the most the backend itself held (`device_memory_bytes`: `trt_memory`'s device categories, engines and scratch
    included; on an integrated GPU (Jetson) its pinned staging too) against `plan_engines`' figure. Reported, not
    judged: the free device memory read at every step, since cudaMemGetInfo also sees the CUDA context, lazily
    loaded kernels and the driver's page rounding, which no plan counts, and on a Jetson every host allocation."""
    from janus_edge.plan import plan_engines
    from janus_edge.runtime.backends.trt_memory import CATEGORIES, DEVICE

    counted = CATEGORIES if integrated else DEVICE
    held = lambda: sum(gpu_rt.backend.device_memory_bytes()[category] for category in counted)  # noqa: E731
    lowest, backend_peak = [free_loaded], [held()]

    def sample(*_) -> None:
        lowest.append(free_device_memory())
        backend_peak.append(held())

    gpu_rt.generate_images(PROMPT, n=1, temperature=0, progress=sample)
    sample()
    context = len(gpu_rt.prompts.generation(PROMPT)) + gpu_rt.manifest.model.num_image_tokens - 1
    planned = plan_engines(engine_dir, 1, context).requests["generation"]
    return {"backend_peak_bytes": max(backend_peak),
            "free_before_load_bytes": free_before, "engines_bytes": free_before - free_loaded,
            "request_bytes": free_loaded - min(lowest), "total_bytes": free_before - min(lowest),
            "request_images": 1, "request_context": context,
            "planned_bytes": int(sum(planned[category] for category in counted)),
            "plan": {category: int(nbytes) for category, nbytes in planned.items()},
            "note": "integrated GPU: shared memory, pinned staging counted" if integrated else None}
