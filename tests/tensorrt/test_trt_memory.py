"""The TensorRT backend's memory and hot loop on the TEST-ONLY STAND-IN (tests/standin/: host memory, not a GPU):
`plan_engines` states what the backend allocates for a request, a CUDA-graph capture failure changes no token, and
a greedy generation step makes a fixed, small number of CUDA and TensorRT calls with one synchronize (the token
read). Plus `plan`'s separate memory lines for the full-size 1B on an Orin Nano (a preset: no export needed)."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from standin_env import standin_imports

IMAGE = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def engines(small_standin_engines):
    """Engines for one image and a 1024-token context, as `janus-edge build --images 1 --context 1024`
    makes them: the session's (tests/conftest.py)."""
    return small_standin_engines


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


SPECULATIVE_WINDOW = 16  # the default window: the step buffers and the head's logits are that wide


def test_backend_allocates_what_plan_engines_states(engines, monkeypatch):
    """Understanding, generation and speculative generation (window 16), each on a fresh backend with every engine
    loaded: the peak device memory the stand-in saw equals `plan_engines`' figure for that request kind within 5 %,
    pinned staging too, and `device_memory_bytes()` accounts for every live allocation."""
    from janus_edge.plan import plan_engines
    from janus_edge.runtime.backends.trt_memory import DEVICE

    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        for kind in ("understanding", "generation", "speculative"):
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
                    options = {"speculative": "gumbel", "window": SPECULATIVE_WINDOW} if kind == "speculative" else {}
                    runtime.generate_images("a red fox", n=1, temperature=0, **options)
                    context = len(runtime.prompts.generation("a red fox")) + runtime.manifest.model.num_image_tokens - 1
                window = SPECULATIVE_WINDOW if kind == "speculative" else None
                planned = plan_engines(engines, 1, context, window).requests[kind.replace("speculative", "generation")]
                device = sum(planned[c] for c in DEVICE)
                assert abs(meter.peak["device"] - base - device) <= 0.05 * device, (kind, meter.peak, planned)
                assert abs(meter.peak["pinned"] - planned["staging"]) <= 0.05 * planned["staging"], (kind, planned)
                held = backend.device_memory_bytes()
                assert abs(sum(held[c] for c in DEVICE) - (meter.live["device"] - base)) <= 0.05 * meter.live["device"]
                assert held["prefill_io"] == 0  # the request's prefill buffer went with its decoder
                # the step buffers (a verify pass's width) exactly, the engines' IO (the window's logits) within 5 %
                assert held["step_io"] == planned["step_io"], (kind, held, planned)
                assert abs(held["io"] - planned["io"]) <= 0.05 * planned["io"], (kind, held, planned)
            monkeypatch.undo()
            assert cudart.live_allocations() == {}


def _greedy_tokens(engines, capturable: bool, caplog):
    """Greedy image tokens (plain and speculative: verify passes), and text tokens; with `capturable` False the
    stand-in refuses to capture the decoder engine, as TensorRT does for some engines (weight streaming). Streams,
    graphs and memory must all be gone after close."""
    machine = {} if capturable else {"JANUS_STANDIN_NOT_CAPTURABLE": "decoder"}
    with standin_imports(**machine):
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        with caplog.at_level(logging.WARNING, logger="janus_edge.runtime.backends.trt_decoder"):
            with JanusRuntime.load(engines) as runtime:
                images = runtime.generate_images("a red fox", n=1, temperature=0).tokens
                speculated = runtime.generate_images("a red fox", n=1, temperature=0, speculative="maximal",
                                                     window=4).tokens
                np.testing.assert_array_equal(speculated, images)
                text = runtime.understand([IMAGE], "What is it?", max_new_tokens=8).token_ids
                error = runtime.backend.graph("decoder").capture_error
        assert cudart.live_allocations() == {} and not cudart.live_host_allocations()
        assert not cudart.live_streams() and not cudart.live_graphs()
        return images, text, error


def test_capture_failure_falls_back_once_with_the_same_tokens(engines, caplog):
    captured, captured_text, none = _greedy_tokens(engines, True, caplog)
    assert none is None and not caplog.records
    fallback, fallback_text, error = _greedy_tokens(engines, False, caplog)
    np.testing.assert_array_equal(fallback, captured)
    assert fallback_text == captured_text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "capture of the decoder engine failed" in warnings[0].getMessage()
    assert "failed to enqueue engine decoder" in str(error)  # the original error, kept


def test_greedy_generation_step_calls(engines):
    """Every steady decode step of a greedy CFG generation makes the same CUDA + TensorRT calls (the stand-in's
    counters), none of them a (re)binding, and exactly one stream synchronize: the token read (no copy forces one
    either). docs/BENCHMARKS.md quotes the count."""
    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        snapshots = []
        with JanusRuntime.load(engines) as runtime:
            cudart.reset_call_counts()
            runtime.generate_images("a red fox", n=1, temperature=0,
                                    progress=lambda *_: snapshots.append(Counter(cudart.call_counts())))
            layers = runtime.manifest.model.num_layers
        steps = [snapshots[i + 1] - snapshots[i] for i in range(len(snapshots) - 1)]
        steady = [s for i, s in enumerate(steps) if i > 0 and steps[i - 1] == s]
        assert len(steady) > len(steps) * 0.8
        step = steady[0]
        print(f"\ncalls per greedy CFG decode step: {sum(step.values())} {dict(sorted(step.items()))}")
        whole = snapshots[-1]
        assert whole.get("set_optimization_profile_async", 0) <= 2  # once per request phase, not per call
        assert whole.get("implicit_synchronize", 0) == 0  # no pageable copy forced a synchronize
        # uploads from pinned staging: image ids, position ids (cudaMemcpyAsync), the mask's changed columns (one 2D
        # copy); the K/V writes: one 2D copy per cache tensor; engines: generation embedding, head, CFG sampler, and
        # the decoder's CUDA-graph launch; the token read: one download and the step's one synchronize
        assert step == Counter({"cudaMemcpyAsync": 3, "cudaMemcpy2DAsync": 1 + 2 * layers, "execute_async_v3": 3,
                                "cudaGraphLaunch": 1, "cudaStreamSynchronize": 1}), step


def test_two_decoders_sharing_the_context_recapture_their_graphs(engines, export_hf):
    """Two requests' decoders interleave steps on the one decoder context: each binding change makes the other's
    graph stale, so each re-captures before replaying (the stand-in refuses a stale graph), and both match ONNX
    Runtime's hidden states."""
    with standin_imports():
        from janus_edge.runtime import JanusRuntime

        with JanusRuntime.load(engines) as gpu, JanusRuntime.load(export_hf) as cpu:
            trt, ort = gpu.backend, cpu.backend
            ids = np.random.default_rng(2).integers(0, 100, (2, 40))
            pairs = [(trt.kv_decoder(1, 64), ort.kv_decoder(1, 64)) for _ in range(2)]
            for row, (decoder, reference) in enumerate(pairs):
                mask, positions = np.ones((1, 8), np.int64), np.arange(8)[None]
                decoder.step(trt.embed("text_embedding", ids[row:row + 1, :8]), mask, positions, last_only=True)
                reference.step(ort.run("text_embedding", input_ids=ids[row:row + 1, :8])["inputs_embeds"], mask,
                               positions, last_only=True)
            for step in range(8, 20):
                for row, (decoder, reference) in enumerate(pairs):
                    mask, positions = np.ones((1, step + 1), np.int64), np.full((1, 1), step)
                    token = ids[row:row + 1, step:step + 1]
                    hidden = decoder.step(trt.embed("text_embedding", token), mask, positions)
                    expected = reference.step(ort.run("text_embedding", input_ids=token)["inputs_embeds"], mask,
                                              positions)
                    np.testing.assert_allclose(hidden.download(trt.stream), expected, atol=1e-5)
            assert all(decoder.captures >= 10 for decoder, _ in pairs)  # recaptured after the other one bound
            for decoder, reference in pairs:
                decoder.close()
                reference.close()


def test_plan_states_memory_parts_for_1b_int8_w4_fp16_on_orin_nano():
    from janus_edge.export.tensorrt.targets import TARGETS
    from janus_edge.plan import format_plan, make_plan, plan_model
    from janus_edge.runtime.backends.trt_decoder import PREFILL_CHUNK
    from janus_edge.runtime.kv import bytes_per_position

    dims = plan_model("janus-pro-1b")
    plan = make_plan("janus-pro-1b", dims, TARGETS["orin-nano-8gb"], "int8,w4,fp16", 2048, 1)
    text = format_plan(plan)
    for line in ("engines (weights) total", "contexts (shared scratch)", "KV cache", "KV spare + step buffers",
                 "prefill buffers", "build peak"):
        assert line in text, text
    parts = sum(plan.weights_bytes.values()) + plan.activation_bytes + plan.kv_cache_bytes \
        + plan.runtime_buffers_bytes + plan.prefill_bytes
    assert plan.total_bytes == pytest.approx(parts) and plan.build_peak_bytes not in (0, plan.total_bytes)
    # the prefill runs in chunks: its buffer holds one chunk's new keys/values for 2 rows (and its small inputs),
    # far less than the cache a whole-context pass would need again
    per_position = bytes_per_position(dims, plan.kv_dtype)
    assert 2 * PREFILL_CHUNK * per_position <= plan.prefill_bytes < plan.kv_cache_bytes / 2
    data = plan.to_dict()
    assert {"prefill_bytes", "build_peak_bytes", "activation_bytes", "kv_cache_bytes"} <= set(data)
