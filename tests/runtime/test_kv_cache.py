"""The in-place KV cache: the graph only reads it, a step allocates nothing cache-sized, capacity grows by buckets,
buffers are reused across requests, fp16 caches stay within their tolerance."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

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


def test_capacity_is_bucketed_sized_and_reused(export_hf):
    runtime = JanusRuntime.load(export_hf)  # a pool of its own: the session's holds whatever earlier tests gave back
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


def test_tensorrt_execution_provider_gets_profiles_an_engine_cache_and_the_stream(export_hf, tmp_path, monkeypatch):
    """The ONNX Runtime GPU providers' options (onnxruntime-gpu is not installed here: the option dict is what is
    checked): the TensorRT EP gets `janus-edge build`'s profiles for the export's limits in ORT's "name:AxB,..." form
    (an input named again starts the next profile) and a persistent engine cache in the user's cache directory;
    both GPU providers compute on the backend's stream; the caller's own options win."""
    from janus_edge.runtime.backends.onnxruntime import provider_list
    from janus_edge.runtime.backends.ort_device import session_providers
    from janus_edge.runtime.manifest import load_manifest
    from janus_edge.runtime.profiles import graph_profiles

    monkeypatch.setenv("JANUS_EDGE_CACHE_DIR", str(tmp_path))
    manifest = load_manifest(export_hf)
    assert provider_list(["tensorrt"]) == [("TensorrtExecutionProvider", {}), ("CUDAExecutionProvider", {})]
    providers = session_providers([("TensorrtExecutionProvider", {"device_id": "1"}), "CUDAExecutionProvider"],
                                  manifest, "decoder", stream=1234)
    (name, options), (cuda, cuda_options) = providers
    assert (name, cuda, options["device_id"]) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "1")
    for given in (options, cuda_options):
        assert given["user_compute_stream"] == "1234"
    cache = Path(options["trt_engine_cache_path"])
    assert options["trt_engine_cache_enable"] == "True" and cache.name == "decoder"
    assert cache.parent.parent == tmp_path / "ort-tensorrt" and Path(options["trt_timing_cache_path"]) == cache.parent
    model, limits = manifest.model, manifest.limits
    parsed: dict[str, list[dict[str, list[list[int]]]]] = {}
    for key in ("min", "opt", "max"):
        for entry in options[f"trt_profile_{key}_shapes"].split(","):
            input_name, dims = entry.split(":")
            ranges = parsed.setdefault(input_name, [])
            index = sum(1 for r in ranges if key in r)
            if index == len(ranges):
                ranges.append({})
            ranges[index][key] = [int(d) for d in dims.split("x")]
    assert set(parsed) == {t.name for t in manifest.graphs["decoder"].inputs}
    assert all(len(ranges) == 3 for ranges in parsed.values())  # prefill, decode, speculative decoding's verify
    prefill, decode, _ = parsed["past_key_values.0.key"]
    assert prefill["max"] == [limits.max_batch, model.num_kv_heads, limits.max_context, model.head_dim]
    assert parsed["attention_mask"][0]["max"] == [limits.max_batch, 2 * limits.max_context]
    assert parsed["inputs_embeds"][1]["max"] == [limits.max_batch, 1, model.hidden_size]  # decode: one position
    expected = graph_profiles(manifest, limits.max_batch, limits.max_context)["decoder"]
    for input_name, ranges in parsed.items():
        for index, r in enumerate(ranges):
            assert [r["min"], r["opt"], r["max"]] == expected[index][input_name], (input_name, index)
            assert all(lo <= o <= hi for lo, o, hi in zip(r["min"], r["opt"], r["max"]))
    vq = session_providers(["TensorrtExecutionProvider"], manifest, "vq_decoder", cache=tmp_path)[0][1]
    assert vq["trt_profile_min_shapes"] == f"image_ids:1x{model.num_image_tokens}"
    assert vq["trt_engine_cache_path"] == str(tmp_path / "vq_decoder") and "user_compute_stream" not in vq


@pytest.fixture(scope="module")
def device_runtime(export_hf):
    """The export on ONNX Runtime's CPU provider with the device cache: ort_device.py's code (buffers ONNX Runtime
    allocated, bound by address, rows copied by address), with a host row copy in place of cudaMemcpy2DAsync."""
    return JanusRuntime.load(export_hf, device_cache=True)


def _held(decoder) -> dict[str, np.ndarray]:
    """What a device cache's bucket view holds, read back through the buffers' OrtValues."""
    cache = decoder.cache
    size = int(np.prod(cache.shape))
    return {name: buffer.value.numpy()[:size].reshape(cache.shape)[:, :, :decoder.length]
            for name, buffer in zip(cache.names, cache.buffers)}


@pytest.mark.parametrize("capacity", [None, 2 * CAPACITY_BUCKET + 7])
def test_the_device_cache_matches_the_host_cache_across_buckets(runtime, device_runtime, capacity):
    """Grown and fixed-size device caches give the host cache's hidden states step after step, across bucket
    crossings, and their bucket's view holds the host cache's keys and values."""
    host, device = runtime.backend.kv_decoder(2, capacity), device_runtime.backend.kv_decoder(2, capacity)
    with host, device:
        embeds, mask, positions = _feeds(runtime, 2, 0, CAPACITY_BUCKET - 2, 1)
        mask[1, :5] = 0  # left padding in the second row
        outs = [d.step(embeds, mask, positions) * mask[:, :, None] for d in (host, device)]  # padding: unused
        np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-6)
        for step in range(CAPACITY_BUCKET + 4):
            embeds, new_mask, positions = _feeds(runtime, 2, host.length, 1, 100 + step)
            mask = np.concatenate([mask, new_mask[:, -1:]], axis=1)
            a, b = host.step(embeds, mask, positions), device.step(embeds, mask, positions)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=f"step {step}")
        assert device.cache.slots == host.cache.slots == min(bucket(device.length), capacity or bucket(device.length))
        views = host.cache.views()
        valid = mask[:, None, :host.length, None].astype(bool)  # padded positions hold unused values
        for name, held in _held(device).items():
            np.testing.assert_array_equal(np.where(valid, held, 0), np.where(valid, views[name][:, :, :host.length], 0))


def test_the_device_route_gives_the_host_routes_tokens(runtime, device_runtime):
    """Understanding and CFG generation with embeddings and hidden states left where ONNX Runtime holds them (the
    heads read them there; only a prefill's last position and the logits come to the host) give the host route's
    tokens."""
    from janus_edge.runtime.backends.ort_device import OnDevice

    assert isinstance(device_runtime.backend.embed("text_embedding", np.zeros((2, 1), np.int64)), OnDevice)
    assert device_runtime.understand([], "Hello", max_new_tokens=6).token_ids == \
        runtime.understand([], "Hello", max_new_tokens=6).token_ids
    np.testing.assert_array_equal(device_runtime.generate_images("a cat", n=1, seed=3).tokens,
                                  runtime.generate_images("a cat", n=1, seed=3).tokens)


def test_the_device_cache_copies_only_new_positions_and_reuses_buffers_zeroed_once(export_hf):
    """Per step, one row copy per cache tensor of exactly the new positions; at a bucket crossing, the valid
    positions once more; nothing else. Buffers are zero-filled when allocated and the next request reuses them
    as they are (no allocation, no second fill)."""
    from janus_edge.runtime import kv
    from janus_edge.runtime.backends.ort_device import OnDevice

    rt = JanusRuntime.load(export_hf, device_cache=True)
    backend, model, dtype = rt.backend, rt.manifest.model, rt.manifest.kv_dtype
    allocated, copied = [], []
    allocate = backend.pool.allocate
    backend.pool.allocate = lambda size, dtype: allocated.append(allocate(size, dtype)) or allocated[-1]
    tensors = len(model.kv_names)
    with backend.kv_decoder(2, capacity=100) as decoder:
        copy_rows = decoder.cache.copy_rows  # the host row copy: counted (bytes), then done
        decoder.cache.copy_rows = lambda *args: (copied.append(args[4] * args[5]), copy_rows(*args))
        assert len(allocated) == tensors + 1 and not any(b.value.numpy().any() for b in allocated)  # and a spare
        first = [b.ptr for b in decoder.cache.buffers]
        assert isinstance(decoder.step(*_feeds(rt, 2, 0, CAPACITY_BUCKET - 1, 0), last_only=True), np.ndarray)
        for length in (CAPACITY_BUCKET - 1, CAPACITY_BUCKET):  # the second step crosses into the last 36 slots
            copied.clear()
            assert isinstance(decoder.step(*_feeds(rt, 2, length, 1, length), last_only=True), OnDevice)
            moved = kv.cache_bytes(model, dtype, 2, length) if length == CAPACITY_BUCKET else 0
            assert (len(copied), sum(copied)) == (tensors * (2 if moved else 1), kv.cache_bytes(model, dtype, 2, 1)
                                                  + moved), length
        assert decoder.cache.slots == 100
    count = len(allocated)
    with backend.kv_decoder(2, capacity=64) as again:
        assert sorted(b.ptr for b in again.cache.buffers) == sorted(first) and len(allocated) == count
        assert any(b.value.numpy().any() for b in again.cache.buffers)  # not zeroed again: the mask hides them
        again.step(*_feeds(rt, 2, 0, 3, 0))
        assert len(allocated) == count  # the step buffers of the last request too
    rt.close()
