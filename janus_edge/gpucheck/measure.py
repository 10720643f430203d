"""What one generation request costs on this GPU: prefill and decode-step time, and the device memory the engines
and the request take (cudaMemGetInfo's free memory before loading, after loading every engine, and inside the
request), next to what `plan` predicts for the same engines, images and context.

Times are wall-clock on the host around calls that end in a host read (the prefill's last hidden state, each
step's sampled token), so each includes the synchronisation the product pays. On the stand-in they measure the
CPU and mean nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from janus_edge.runtime.backends.cuda import _cudart, check
from janus_edge.runtime.sampling import Sampler
from janus_edge.runtime.sizing import request_capacity

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


def measure_request(backend, manifest, steps: int = DECODE_STEPS) -> tuple[dict[str, Any], int, int]:
    """One CFG generation request (one image, two rows): prefill, then `steps` greedy decode steps through the
    generation head and the CFG sampler. Returns the timing, the free device memory inside the request, and the
    capacity the request's KV cache was sized for."""
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
        free_in_request = free_device_memory()
    timed = times[WARMUP_STEPS:] or times
    timing = {"rows": rows, "prefill_tokens": prompt_length, "prefill_ms": prefill_ms,
              "decode_steps": len(timed), "decode_step_ms": float(np.median(timed)),
              "decode_step_ms_max": float(np.max(timed)), "first_steps_ms": times[:WARMUP_STEPS]}
    return timing, free_in_request, capacity


def planned_bytes(engine_dir: Path, images: int, context: int) -> tuple[int | None, dict | None, str | None]:
    """`janus_edge.plan.plan_engines(engine_dir, images, context)`: the device memory plan predicts for these
    engines (its `total_bytes`), the whole prediction, and a note when plan cannot say."""
    plan_module = importlib.import_module("janus_edge.plan")
    plan_engines = getattr(plan_module, "plan_engines", None)
    if plan_engines is None:
        return None, None, "plan_engines(engine_dir, images, context) is not in this janus-edge yet"
    prediction = plan_engines(engine_dir, images, context)
    is_record = dataclasses.is_dataclass(prediction) and not isinstance(prediction, type)
    data = dataclasses.asdict(prediction) if is_record else dict(prediction)
    total = data.get("total_bytes")
    return (int(total) if total is not None else None), data, (None if total is not None else
                                                              "plan_engines gave no total_bytes")
