"""What every measurement shares: the settings, one result, timings with their spread, memory and bandwidth."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from janus_edge.runtime.pipelines.speculative import DEFAULT_WINDOW

STAGES = ("load", "vision", "prefill", "ttft", "decode", "images", "understand", "vq")
IMAGE_COUNTS = (1, 2, 4, 8)  # images per generation call: the CFG batch is 2n rows, reading the weights once a step
UNDERSTAND_BATCHES = (1, 2, 4)


@dataclass
class Settings:
    runs: int = 5
    warmup: int = 1
    prompt_lengths: tuple = (64, 640)
    past: int = 600  # KV length at which decode steps are timed (one image + a question)
    image_counts: tuple = IMAGE_COUNTS  # n images per generation call to time (those the export's max batch allows)
    image_runs: int = 1  # full generations (one step per image token) per n
    understand_batches: tuple = UNDERSTAND_BATCHES
    understand_tokens: int = 16  # max new tokens per understanding request (EOS may stop it sooner)
    stages: tuple = STAGES
    threads: int = 0  # PyTorch intra-op threads; 0: every core of this machine
    seed: int = 0
    flow_steps: int = 30  # Euler steps per JanusFlow image (the images stage)
    speculative: tuple = ()  # speculative decoding modes to time next to the plain loop (one image per call)
    window: int = DEFAULT_WINDOW  # their window


@dataclass
class Result:
    label: str
    kind: str  # "export" or "reference"
    precision: str
    backend: str = ""  # onnxruntime or tensorrt (exports); pytorch (reference)
    reference: dict = field(default_factory=dict)  # exactly what a reference row is (attention, dtype, threads...)
    metrics: dict = field(default_factory=dict)  # name -> timing ({median, min, max, runs, unit}) or a number
    throughput: dict = field(default_factory=lambda: {"images": [], "understanding": [], "speculative": []})
    weight_bytes: dict = field(default_factory=dict)  # graph (or module) -> bytes
    kv: dict = field(default_factory=dict)  # {"bytes_per_position_per_row", "itemsize"} in the KV dtype
    floors: dict = field(default_factory=dict)  # "b1", "b2" -> bytes read per step, floors and ratios; "flow_step"
    error: str = ""


def timing(samples_ms: list[float], unit: str = "ms") -> dict:
    scale = 1e-3 if unit == "s" else 1.0
    return {"median": statistics.median(samples_ms) * scale, "min": min(samples_ms) * scale,
            "max": max(samples_ms) * scale, "runs": len(samples_ms), "unit": unit}


def timed(fn: Callable[[], object], runs: int, warmup: int, sync: Callable[[], object] = lambda: None,
          unit: str = "ms") -> dict:
    """Median, min and max of `runs` calls after `warmup` untimed ones; `sync` waits for a GPU's queued work."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return timing(samples, unit)


def copy_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """STREAM-style copy bandwidth (bytes read + written per second), best of `repeats`, in GB/s."""
    source = np.ones(megabytes * (1 << 20) // 4, dtype=np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def gemm_gflops(size: int = 1024, repeats: int = 3) -> float:
    """This CPU's measured fp32 matrix-multiply rate (numpy's BLAS, best of `repeats`), GFLOP/s: what a
    compute-bound step can at best reach here (a measured rate, not a datasheet peak)."""
    a = np.ones((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def peak_host_mb() -> float:
    """This process's peak resident memory. VmHWM (Linux) restarts at exec; ru_maxrss would carry the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX (x86) / the bf16 feature (Arm): where PyTorch's bf16 CPU kernels run natively."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith(("flags", "Features")) for word in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def throughput_rows(result: Result, settings: Settings, max_batch: int, sync=lambda: None, *, generate, understand
                    ) -> None:
    """Images per minute for each n a call may hold (2n CFG rows within `max_batch`), and understanding requests
    per minute for each batch; `generate(n)` and `understand(batch)` make one call."""
    if "images" in settings.stages and settings.image_runs:
        for n in (n for n in settings.image_counts if 2 * n <= max_batch):
            call = timed(lambda: generate(n), settings.image_runs, 0, sync, unit="s")
            per_image = {**call, **{k: call[k] / n for k in ("median", "min", "max")}}
            result.throughput["images"].append({"n": n, "seconds_per_image": per_image,
                                                "images_per_minute": 60 / per_image["median"]})
    if "understand" in settings.stages:
        for batch in (b for b in settings.understand_batches if b <= max_batch):
            call = timed(lambda: understand(batch), settings.runs, settings.warmup, sync, unit="s")
            result.throughput["understanding"].append({
                "batch": batch, "max_new_tokens": settings.understand_tokens, "seconds_per_call": call,
                "requests_per_minute": 60 * batch / call["median"]})
