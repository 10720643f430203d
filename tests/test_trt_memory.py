"""The TensorRT backend's memory and hot loop on the TEST-ONLY STAND-IN (tests/standin/: host memory, not a GPU):
`plan_engines` states what the backend allocates for a request, a CUDA-graph capture failure changes no token, and
a greedy generation step makes a fixed, small number of CUDA and TensorRT calls with one synchronize (the token
read). Plus `plan`'s separate memory lines for the full-size 1B on an Orin Nano (a preset: no export needed)."""

from __future__ import annotations

import inspect
import logging
from collections import Counter

import numpy as np
import pytest

from standin_env import standin_imports

IMAGE = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
CONTEXT = 1024


@pytest.fixture(scope="module")
def engines(tmp_path_factory, export_hf):
    """Engines for one image and a 1024-token context, as `janus-edge build --images 1 --context 1024` makes them."""
    out = tmp_path_factory.mktemp("trt-memory")
    with standin_imports():
        from janus_edge.export.tensorrt.build import build

        build(export_hf, out / "engines", "datacenter", timing_cache=str(out / "timing.cache"), images=1,
              context=CONTEXT, log=lambda m: None)
    return out / "engines"


class Meter:
    """Live and peak bytes of the stand-in's device and pinned allocations, from its allocation calls."""

    def __init__(self, cudart, monkeypatch):
        self.live = {"device": sum(cudart.live_allocations().values()), "pinned": 0}
        self.peak = dict(self.live)
        self.sizes: dict[int, tuple[str, int]] = {}
        for kind, alloc, free in (("device", "cudaMalloc", "cudaFree"), ("pinned", "cudaMallocHost", "cudaFreeHost")):
            monkeypatch.setattr(cudart, alloc, self._alloc(kind, getattr(cudart, alloc)))
            monkeypatch.setattr(cudart, free, self._free(getattr(cudart, free)))

    def _alloc(self, kind, real):
        def alloc(size):
            status, ptr = real(size)
            if int(status) == 0:
                self.sizes[int(ptr)] = (kind, int(size))
                self.live[kind] += int(size)
                self.peak[kind] = max(self.peak[kind], self.live[kind])
            return status, ptr
        return alloc

    def _free(self, real):
        def free(ptr):
            kind, size = self.sizes.pop(int(ptr), ("device", 0))
            self.live[kind] -= size
            return real(ptr)
        return free

    def reset_peak(self) -> None:
        self.peak = dict(self.live)


def test_backend_allocates_what_plan_engines_states(engines, monkeypatch):
    """Understanding and generation, each on a fresh backend with every engine loaded: the peak device memory the
    stand-in saw equals `plan_engines`' figure for that request kind within 5 %, pinned staging too, and
    `device_memory_bytes()` accounts for every live allocation."""
    from janus_edge.plan import plan_engines
    from janus_edge.runtime.backends.trt_memory import DEVICE

    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        for kind in ("understanding", "generation"):
            meter = Meter(cudart, monkeypatch)
            with JanusRuntime.load(engines) as runtime:
                backend = runtime.backend
                for name in backend.engines.engines:
                    backend.graph(name)
                meter.reset_peak()
                base = meter.live["device"] - sum(backend.device_memory_bytes()[c] for c in ("engines", "scratch"))
                if kind == "understanding":
                    result = runtime.understand([IMAGE], "Describe this image. " * 20, max_new_tokens=1)
                    context = int(result.timings["prefill_tokens"]) + 1
                else:
                    runtime.generate_images("a red fox", n=1, temperature=0)
                    context = len(runtime.prompts.generation("a red fox")) + runtime.manifest.model.num_image_tokens - 1
                planned = plan_engines(engines, 1, context).requests[kind]
                device = sum(planned[c] for c in DEVICE)
                assert abs(meter.peak["device"] - base - device) <= 0.05 * device, (kind, meter.peak, planned)
                assert abs(meter.peak["pinned"] - planned["staging"]) <= 0.05 * planned["staging"], (kind, planned)
                held = backend.device_memory_bytes()
                assert abs(sum(held[c] for c in DEVICE) - (meter.live["device"] - base)) <= 0.05 * meter.live["device"]
                assert held["prefill_io"] == 0  # the request's prefill buffer went with its decoder
            monkeypatch.undo()
            assert cudart.live_allocations() == {}


def _greedy_tokens(engines, capturable: bool, monkeypatch, caplog):
    with standin_imports():
        from cuda.bindings import runtime as cudart
        import tensorrt as trt

        from janus_edge.runtime import JanusRuntime

        if not capturable:  # TensorRT refuses to enqueue this engine under capture (e.g. weight streaming)
            real = trt.IExecutionContext.execute_async_v3

            def refuse(context, stream_handle):
                return False if cudart.capturing(stream_handle) else real(context, stream_handle)

            monkeypatch.setattr(trt.IExecutionContext, "execute_async_v3", refuse)
        with caplog.at_level(logging.WARNING, logger="janus_edge.runtime.backends.trt_decoder"):
            with JanusRuntime.load(engines) as runtime:
                images = runtime.generate_images("a red fox", n=1, temperature=0).tokens
                text = runtime.understand([IMAGE], "What is it?", max_new_tokens=8).token_ids
                decoder = runtime.backend.graph("decoder")
                error = decoder.capture_error
        monkeypatch.undo()
        assert cudart.live_allocations() == {}  # nothing leaked, captured or not
        return images, text, error


def test_capture_failure_falls_back_once_with_the_same_tokens(engines, monkeypatch, caplog):
    captured, captured_text, none = _greedy_tokens(engines, True, monkeypatch, caplog)
    assert none is None and not caplog.records
    fallback, fallback_text, error = _greedy_tokens(engines, False, monkeypatch, caplog)
    np.testing.assert_array_equal(fallback, captured)
    assert fallback_text == captured_text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "capture of the decoder engine failed" in warnings[0].getMessage()
    assert "failed to enqueue engine decoder" in str(error)  # the original error, kept


def test_greedy_generation_step_calls(engines, monkeypatch):
    """Every steady decode step of a greedy CFG generation makes the same CUDA + TensorRT calls, none of them a
    (re)binding, and exactly one stream synchronize: the token read. docs/BENCHMARKS.md quotes the count."""
    with standin_imports():
        from cuda.bindings import runtime as cudart
        import tensorrt as trt

        from janus_edge.runtime import JanusRuntime

        calls: Counter = Counter()

        def counted(owner, name):
            real = getattr(owner, name)

            def call(*args, **kwargs):
                calls[name] += 1
                return real(*args, **kwargs)
            monkeypatch.setattr(owner, name, call)

        for name in [n for n in dir(cudart) if n.startswith("cuda") and inspect.isfunction(getattr(cudart, n))]:
            counted(cudart, name)
        for name in ("execute_async_v3", "set_input_shape", "set_tensor_address", "set_optimization_profile_async",
                     "get_tensor_shape", "set_device_memory"):
            counted(trt.IExecutionContext, name)
        snapshots = []
        with JanusRuntime.load(engines) as runtime:
            runtime.generate_images("a red fox", n=1, temperature=0, progress=lambda *_: snapshots.append(Counter(calls)))
        monkeypatch.undo()
        steps = [snapshots[i + 1] - snapshots[i] for i in range(len(snapshots) - 1)]
        steady = [s for i, s in enumerate(steps) if i > 0 and steps[i - 1] == s]
        assert len(steady) > len(steps) * 0.8
        step = Counter({k: v for k, v in steady[0].items() if v})
        assert step["cudaStreamSynchronize"] == 1 and step["cudaGraphLaunch"] == 1, step
        assert not {"set_input_shape", "set_tensor_address", "set_optimization_profile_async"} & set(step), step
        print(f"\ncalls per greedy CFG decode step: {sum(step.values())} {dict(sorted(step.items()))}")
        layers = runtime.manifest.model.num_layers
        # uploads: image ids, position ids (cudaMemcpyAsync) and the mask's changed columns (one 2D copy); the K/V
        # writes, one 2D copy per cache tensor; engines: generation embedding, head, CFG sampler (+ the decoder's
        # graph launch); the token read: one download and its synchronize
        assert step == Counter({"cudaMemcpyAsync": 3, "cudaMemcpy2DAsync": 1 + 2 * layers, "execute_async_v3": 3,
                                "cudaGraphLaunch": 1, "cudaStreamSynchronize": 1}), step


def test_plan_states_memory_parts_for_1b_int8_w4_fp16_on_orin_nano():
    from janus_edge.export.tensorrt.targets import TARGETS
    from janus_edge.plan import format_plan, make_plan, plan_model

    dims, _ = plan_model("janus-pro-1b")
    plan = make_plan("janus-pro-1b", dims, TARGETS["orin-nano-8gb"], "int8,w4,fp16", 2048, 1)
    text = format_plan(plan)
    for line in ("engines (weights) total", "contexts (shared scratch)", "KV cache", "KV spare + step buffers",
                 "prefill buffers", "build peak"):
        assert line in text, text
    parts = sum(plan.weights_bytes.values()) + plan.activation_bytes + plan.kv_cache_bytes \
        + plan.runtime_buffers_bytes + plan.prefill_bytes
    assert plan.total_bytes == pytest.approx(parts) and plan.build_peak_bytes not in (0, plan.total_bytes)
    assert plan.prefill_bytes > 0.5 * plan.kv_cache_bytes  # a full-context prefill's new keys/values: stated
    data = plan.to_dict()
    assert {"prefill_bytes", "build_peak_bytes", "activation_bytes", "kv_cache_bytes"} <= set(data)
