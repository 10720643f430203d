"""The in-place KV cache: the graph only reads it, a step allocates nothing cache-sized, capacity grows by buckets,
buffers are reused across requests, fp16 caches stay within their tolerance."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest

from janus_edge.runtime import JanusRuntime
from janus_edge.runtime.kv import CAPACITY_BUCKET, bucket, request_capacity


@pytest.mark.parametrize("fixture", ["export_hf", "export_fp16"])
def test_the_decoder_graph_only_reads_the_cache(request, fixture):
    """Each cache input feeds MatMuls (and a Shape) directly: no Concat, Transpose, Cast or copy of it, and the
    graph returns only the new positions' keys/values."""
    directory = request.getfixturevalue(fixture)
    proto = onnx.load(str(directory / "decoder.onnx"))
    consumers: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    cache_inputs = [t.name for t in proto.graph.input if t.name.startswith("past_key_values.")]
    assert cache_inputs
    for name in cache_inputs:
        assert consumers[name] <= {"MatMul", "Shape"}, (name, consumers[name])
    outputs = {t.name: [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim] for t in proto.graph.output}
    assert all(shape[2] == "sequence" for name, shape in outputs.items() if name.startswith("new_key_values."))


def _feeds(runtime, rows: int, length: int, seq: int, seed: int):
    rng = np.random.default_rng(seed)
    embeds = rng.standard_normal((rows, seq, runtime.manifest.model.hidden_size), dtype=np.float32)
    positions = np.arange(length, length + seq)[None].repeat(rows, 0)
    return embeds, np.ones((rows, length + seq), np.int64), positions


def test_step_allocations_do_not_grow_with_the_past(runtime):
    """Python-side allocations of one decode step (numpy: the step's inputs, outputs and the cache write) are the
    same near the start and far into a cache: nothing the size of the cache is copied or returned per step."""
    manifest = runtime.manifest
    one_tensor = manifest.kv_cache_bytes(2, 640) // (2 * manifest.model.num_layers)
    peaks = {}
    for length in (10, 600):
        with runtime.backend.kv_decoder(2, capacity=640) as decoder:
            decoder.step(*_feeds(runtime, 2, 0, length, 0))
            step = _feeds(runtime, 2, length, 1, length)
            decoder.step(*step)  # warm: the first step at a width binds or moves
            decoder.rewind(length)
            tracemalloc.start()
            decoder.step(*step)
            peaks[length] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert peaks[600] - peaks[10] < one_tensor / 8, (peaks, one_tensor)


def test_capacity_is_bucketed_sized_and_reused(runtime):
    assert bucket(1) == CAPACITY_BUCKET and bucket(CAPACITY_BUCKET + 1) == 2 * CAPACITY_BUCKET
    assert request_capacity(10_000, 4096) == 4096
    backend = runtime.backend
    with backend.kv_decoder(2, capacity=request_capacity(100, 4096)) as decoder:
        assert decoder.nbytes == runtime.manifest.kv_cache_bytes(2, 128)
        first = [id(b) for b in decoder.cache.buffers]
    with backend.kv_decoder(2, capacity=100) as decoder:  # a smaller request takes the same warm buffers
        assert [id(b) for b in decoder.cache.buffers] == first
    with backend.kv_decoder(2, capacity=1000) as big, backend.kv_decoder(2, capacity=64) as small:
        assert [id(b) for b in small.cache.buffers] == first and big.nbytes > small.nbytes
    with backend.kv_decoder(2, capacity=64) as again:  # the smallest buffers that fit
        assert [id(b) for b in again.cache.buffers] == first


def test_growing_across_buckets_gives_the_same_hidden_states(runtime):
    """A cache that grows (None) moves its rows at each bucket crossing; a cache sized up front never moves.
    Both give the same hidden states step after step, including the steps right after a crossing."""
    grown, fixed = runtime.backend.kv_decoder(2), runtime.backend.kv_decoder(2, capacity=4 * CAPACITY_BUCKET)
    with grown, fixed:
        embeds, mask, positions = _feeds(runtime, 2, 0, CAPACITY_BUCKET - 2, 1)
        mask[1, :5] = 0  # left padding in the second row
        outs = [d.step(embeds, mask, positions) * mask[:, :, None] for d in (grown, fixed)]  # padding: unused
        np.testing.assert_array_equal(outs[0], outs[1])
        for step in range(CAPACITY_BUCKET + 4):
            length = grown.length
            embeds, new_mask, positions = _feeds(runtime, 2, length, 1, 100 + step)
            mask = np.concatenate([mask, new_mask[:, -1:]], axis=1)
            a, b = grown.step(embeds, mask, positions), fixed.step(embeds, mask, positions)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=f"step {step}")
        assert grown.cache.slots == bucket(grown.length)
        assert fixed.cache.slots == bucket(fixed.length)


def test_a_fixed_capacity_off_the_bucket_holds_exactly_its_positions(runtime):
    """A cache sized up front to a capacity that is not a whole bucket fills to its last slot, then refuses."""
    from janus_edge.runtime.errors import InternalError

    capacity = 2 * CAPACITY_BUCKET - 1
    with runtime.backend.kv_decoder(1, capacity=capacity) as decoder:
        decoder.step(*_feeds(runtime, 1, 0, capacity - 1, 0))  # a prefill into the partial second bucket
        decoder.step(*_feeds(runtime, 1, capacity - 1, 1, 1))
        assert decoder.length == capacity == decoder.cache.slots
        with pytest.raises(InternalError, match=f"sized for {capacity} positions"):
            decoder.step(*_feeds(runtime, 1, capacity, 1, 2))


def test_fp16_cache_stays_within_its_tolerance(export_fp16, runtime):
    """fp16 export: the cache is held in fp16; hidden states stay within 2e-2 relative L2 of fp32 (DESIGN.md)."""
    half = JanusRuntime.load(export_fp16)
    assert half.manifest.kv_dtype == "float16"
    embeds, mask, positions = _feeds(runtime, 2, 0, 20, 2)
    with half.backend.kv_decoder(2) as a, runtime.backend.kv_decoder(2) as b:
        assert a.cache.buffers[0].dtype == np.float16
        a.step(embeds, mask, positions), b.step(embeds, mask, positions)
        step = _feeds(runtime, 2, 20, 1, 3)
        got, expected = a.step(*step), b.step(*step)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 2e-2
    assert half.understand([], "Hello", max_new_tokens=4).token_ids


def test_runtime_and_backend_close(export_hf):
    with JanusRuntime.load(export_hf) as rt:
        rt.understand([], "Hi", max_new_tokens=2)
        assert rt.backend.pool.free and rt.backend._sessions
    assert not rt.backend.pool.free and not rt.backend._sessions


def test_tensorrt_execution_provider_gets_profiles_and_an_engine_cache(export_hf, tmp_path):
    """The ONNX Runtime TensorRT EP options (onnxruntime-gpu is not installed here: the options are what is checked):
    explicit min/opt/max shapes for every dynamic input in ORT's "name:AxBxC,..." form, and a persistent engine
    cache; the caller's own options are kept."""
    from janus_edge.runtime.backends.ort_device import session_providers
    from janus_edge.runtime.manifest import load_manifest

    manifest = load_manifest(export_hf)
    providers = session_providers([("TensorrtExecutionProvider", {"device_id": "1"}), "CUDAExecutionProvider"],
                                  manifest, "decoder", tmp_path)
    (name, options), cuda = providers
    assert (name, cuda, options["device_id"]) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "1")
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path / "decoder")
    model, limits = manifest.model, manifest.limits
    parsed = {}
    for key in ("min", "opt", "max"):
        entries = options[f"trt_profile_{key}_shapes"].split(",")
        parsed[key] = {e.split(":")[0]: [int(d) for d in e.split(":")[1].split("x")] for e in entries}
    assert set(parsed["min"]) == {t.name for t in manifest.graphs["decoder"].inputs}
    cache = "past_key_values.0.key"
    assert parsed["max"][cache] == [limits.max_batch, model.num_kv_heads, limits.max_context, model.head_dim]
    assert parsed["max"]["attention_mask"] == [limits.max_batch, 2 * limits.max_context]
    for name in parsed["min"]:
        assert all(lo <= o <= hi for lo, o, hi in zip(parsed["min"][name], parsed["opt"][name], parsed["max"][name]))
    vq = session_providers(["TensorrtExecutionProvider"], manifest, "vq_decoder", tmp_path)[0][1]
    assert vq["trt_profile_min_shapes"] == f"image_ids:1x{model.num_image_tokens}"
