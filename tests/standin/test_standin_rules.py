"""The TEST-ONLY stand-in's rules (tests/standin/README.md), each shown with a deliberately wrong call that fails and
the right call that passes, on small hand-made graphs (no export needed). Not a GPU result."""

from __future__ import annotations

import ctypes

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from standin_env import standin_imports

FLOAT = 4


def _add_one_graph(path, rms_norm: bool = False) -> str:
    """y = x + 1 on a [batch, 64] float input (dynamic batch); `rms_norm` adds an RMSNormalization first (opset 23:
    in the 10.16 parser's operator table, not in 10.3's; ONNX Runtime runs it)."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [helper.make_node("Add", ["normed" if rms_norm else "x", "one"], ["y"], name="add")]
    initializers = [one]
    if rms_norm:
        nodes.insert(0, helper.make_node("RMSNormalization", ["x", "scale"], ["normed"], name="norm"))
        initializers.append(helper.make_tensor("scale", TensorProto.FLOAT, [64], [1.0] * 64))
    graph = helper.make_graph(nodes, "add_one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], initializers)
    opset = 23 if rms_norm else 17
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return str(path)


def _build(trt, onnx_path: str, profiles=((1, 4),), weight_streaming: bool = False):
    """(serialized plan or None, logger): one profile per (min batch, max batch)."""
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        return None, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    for low, high in profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape("x", (low, 64), (high, 64), (high, 64))
        config.add_optimization_profile(profile)
    if weight_streaming:
        config.set_flag(trt.BuilderFlag.WEIGHT_STREAMING)
    return builder.build_serialized_network(network, config), logger


@pytest.fixture
def standin():
    with standin_imports():
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        yield trt, cudart


@pytest.fixture
def engine(standin, tmp_path):
    trt, _ = standin
    plan, _ = _build(trt, _add_one_graph(tmp_path / "add_one.onnx"), profiles=((1, 4), (1, 8)))
    return trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)


def _ok(result) -> None:
    assert int(result[0]) == 0, result


def _malloc(cudart, nbytes: int) -> int:
    status, ptr = cudart.cudaMalloc(nbytes)
    _ok((status,))
    return ptr


def _pinned(cudart, count: int) -> tuple[int, np.ndarray]:
    status, ptr = cudart.cudaMallocHost(count * FLOAT)
    _ok((status,))
    return ptr, np.ctypeslib.as_array((ctypes.c_float * count).from_address(ptr))


class Bound:
    """A context of `engine` with batch-2 input and output bound to fresh device buffers (profile 1 when another
    context holds profile 0)."""

    def __init__(self, cudart, engine, strategy=None, batch: int = 2):
        self.cudart, self.engine = cudart, engine
        self.context = engine.create_execution_context() if strategy is None else \
            engine.create_execution_context(strategy)
        self.stream = cudart.cudaStreamCreate()[1]
        self.nbytes = batch * 64 * FLOAT
        self.x, self.y = _malloc(cudart, self.nbytes), _malloc(cudart, self.nbytes)
        if self.context.active_optimization_profile < 0:
            assert self.context.set_optimization_profile_async(1, int(self.stream))
        assert self.context.set_input_shape("x", (batch, 64))
        assert self.context.set_tensor_address("x", self.x) and self.context.set_tensor_address("y", self.y)

    def output(self) -> np.ndarray:
        return np.frombuffer(self.cudart.read_device(self.y, self.nbytes), np.float32)

    def capture(self):
        """One enqueue outside capture (TensorRT's deferred shape work), then the capture; the graph executable."""
        cudart = self.cudart
        assert self.context.execute_async_v3(int(self.stream))
        _ok(cudart.cudaStreamSynchronize(self.stream))
        _ok(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        assert self.context.execute_async_v3(int(self.stream))
        status, graph = cudart.cudaStreamEndCapture(self.stream)
        _ok((status,))
        status, executable = cudart.cudaGraphInstantiate(graph, 0)
        _ok(cudart.cudaGraphDestroy(graph))
        return executable


# --- streams run late ------------------------------------------------------------------------------------------

def test_queued_work_runs_only_when_the_host_synchronizes(standin, engine):
    trt, cudart = standin
    bound = Bound(cudart, engine)
    cudart.write_device(bound.x, np.full(2 * 64, 2, np.float32).tobytes())
    assert bound.context.execute_async_v3(int(bound.stream))
    assert not bound.output().any()  # wrong: reading before synchronizing sees stale memory
    _ok(cudart.cudaStreamSynchronize(bound.stream))
    assert (bound.output() == 3).all()  # right
    # an event recorded after the work: querying says NotReady first; synchronizing on it runs the work
    _ok(cudart.cudaMemsetAsync(bound.y, 0, bound.nbytes, bound.stream))
    status, event = cudart.cudaEventCreate()
    _ok(cudart.cudaEventRecord(event, bound.stream))
    assert cudart.cudaEventQuery(event)[0] == cudart.cudaError_t.cudaErrorNotReady
    assert (bound.output() == 3).all()  # the memset has not run
    _ok(cudart.cudaEventSynchronize(event))
    assert not bound.output().any() and cudart.cudaEventQuery(event)[0] == 0
    # another stream waiting for the event runs after it; cudaDeviceSynchronize runs everything
    other = cudart.cudaStreamCreate()[1]
    _ok(cudart.cudaMemsetAsync(bound.x, 0, bound.nbytes, bound.stream))
    _ok(cudart.cudaEventRecord(event, bound.stream))
    _ok(cudart.cudaStreamWaitEvent(other, event, 0))
    _ok(cudart.cudaMemsetAsync(bound.y, 7, 4, other))
    _ok(cudart.cudaStreamSynchronize(other))
    assert cudart.read_device(bound.y, 4) == bytes([7]) * 4 and not any(cudart.read_device(bound.x, bound.nbytes))
    assert bound.context.execute_async_v3(int(bound.stream))
    _ok(cudart.cudaDeviceSynchronize())
    assert (bound.output() == 1).all()


def test_pageable_uploads_read_the_host_at_the_call_pinned_ones_when_the_stream_runs(standin):
    _, cudart = standin
    status, stream = cudart.cudaStreamCreate()
    device = _malloc(cudart, 16)
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    pageable = np.full(4, 1, np.float32)
    cudart.reset_call_counts()
    _ok(cudart.cudaMemcpyAsync(device, pageable.ctypes.data, 16, kind, stream))
    assert cudart.call_counts()["implicit_synchronize"] == 1  # CUDA synchronized the stream first
    pageable[:] = 9  # after the call: too late to matter
    _ok(cudart.cudaStreamSynchronize(stream))
    assert (np.frombuffer(cudart.read_device(device, 16), np.float32) == 1).all()
    pointer, pinned = _pinned(cudart, 4)
    pinned[:] = 2
    _ok(cudart.cudaMemcpyAsync(device, pointer, 16, kind, stream))
    pinned[:] = 5  # before the stream runs: this is what arrives
    assert (np.frombuffer(cudart.read_device(device, 16), np.float32) == 1).all()
    _ok(cudart.cudaStreamSynchronize(stream))
    assert (np.frombuffer(cudart.read_device(device, 16), np.float32) == 5).all()
    assert cudart.call_counts()["implicit_synchronize"] == 1  # the pinned copy forced no synchronize
    # device -> pinned host is deferred (stale until synchronized); device -> pageable host is synchronous
    back = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    pinned[:] = 0
    _ok(cudart.cudaMemcpyAsync(pointer, device, 16, back, stream))
    assert not pinned.any()
    _ok(cudart.cudaStreamSynchronize(stream))
    assert (pinned == 5).all()
    host = np.zeros(4, np.float32)
    _ok(cudart.cudaMemcpyAsync(host.ctypes.data, device, 16, back, stream))
    assert (host == 5).all()
    # a pageable copy cannot be captured; a pinned one can
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
    _ok(cudart.cudaStreamBeginCapture(stream, mode))
    assert cudart.cudaMemcpyAsync(device, pageable.ctypes.data, 16, kind, stream)[0] != 0
    assert cudart.cudaStreamEndCapture(stream)[0] == cudart.cudaError_t.cudaErrorStreamCaptureInvalidated
    _ok(cudart.cudaStreamBeginCapture(stream, mode))
    _ok(cudart.cudaMemcpyAsync(device, pointer, 16, kind, stream))
    _ok(cudart.cudaStreamEndCapture(stream))


def test_strided_copies_follow_the_same_rules_in_every_direction(standin):
    _, cudart = standin
    stream = cudart.cudaStreamCreate()[1]
    kinds = cudart.cudaMemcpyKind
    device = _malloc(cudart, 4 * 16)
    pointer, pinned = _pinned(cudart, 8)
    pinned[:] = np.arange(8)
    # two rows of 2 floats from pinned rows 16 bytes apart into device rows 32 bytes apart: read when the stream runs
    _ok(cudart.cudaMemcpy2DAsync(device, 32, pointer, 16, 8, 2, kinds.cudaMemcpyHostToDevice, stream))
    pinned[:] += 10
    _ok(cudart.cudaStreamSynchronize(stream))
    rows = np.frombuffer(cudart.read_device(device, 64), np.float32).reshape(2, 8)
    np.testing.assert_array_equal(rows[:, :2], [[10, 11], [14, 15]])
    host = np.zeros((2, 4), np.float32)  # device -> pageable host: synchronous
    _ok(cudart.cudaMemcpy2DAsync(host.ctypes.data, 16, device, 32, 8, 2, kinds.cudaMemcpyDeviceToHost, stream))
    np.testing.assert_array_equal(host[:, :2], [[10, 11], [14, 15]])
    wrong = cudart.cudaMemcpy2DAsync(device, 32, pointer, 16, 8, 2, kinds.cudaMemcpyDeviceToHost, stream)
    assert wrong[0] == cudart.cudaError_t.cudaErrorInvalidValue  # the direction contradicts the pointers
    assert cudart.cudaMemcpy2DAsync(device, 32, pointer, 16, 24, 2, kinds.cudaMemcpyHostToDevice, stream)[0] != 0


# --- addresses ---------------------------------------------------------------------------------------------------

def test_tensor_addresses_must_be_256_byte_aligned(standin, engine):
    trt, cudart = standin
    context = engine.create_execution_context()
    pointer = _malloc(cudart, 4096)
    assert pointer % 256 == 0 and _malloc(cudart, 10) % 256 == 0
    assert not context.set_tensor_address("x", pointer + 4)  # wrong
    assert "256-byte aligned" in engine._logger.messages[-1][1]
    assert context.set_tensor_address("x", pointer + 256)  # right


# --- stale CUDA graphs -------------------------------------------------------------------------------------------

CHANGES = {
    "profile": lambda b: b.context.set_optimization_profile_async(1, int(b.stream)),
    "input shape": lambda b: b.context.set_input_shape("x", (1, 64)),
    "tensor address": lambda b: b.context.set_tensor_address("y", _malloc(b.cudart, b.nbytes)),
    "freed buffer": lambda b: b.cudart.cudaFree(b.x)[0] == 0,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_graph_is_stale_once_anything_it_baked_in_changes(standin, engine, change):
    trt, cudart = standin
    bound = Bound(cudart, engine)
    executable = bound.capture()
    for _ in range(2):
        _ok(cudart.cudaGraphLaunch(executable, bound.stream))  # right: nothing changed
    same = bound.context.set_input_shape("x", (2, 64)) and bound.context.set_tensor_address("y", bound.y)
    assert same and cudart.cudaGraphLaunch(executable, bound.stream)[0] == 0  # the same values change nothing
    assert CHANGES[change](bound)
    assert cudart.cudaGraphLaunch(executable, bound.stream)[0] == cudart.cudaError_t.cudaErrorLaunchFailure  # wrong
    assert "stale graph" in cudart.messages()[-1]
    _ok(cudart.cudaGraphExecDestroy(executable))


def test_user_memory_change_stales_a_graph_and_another_contexts_profile_does_not(standin, engine):
    trt, cudart = standin
    user = trt.ExecutionContextAllocationStrategy.USER_MANAGED
    bound = Bound(cudart, engine, user)
    size = engine.get_device_memory_size_for_profile_v2(0)
    bound.context.set_device_memory(_malloc(cudart, size), size)
    executable = bound.capture()
    other = engine.create_execution_context(user)
    assert other.set_optimization_profile_async(1, int(bound.stream))  # another context: this graph stays valid
    _ok(cudart.cudaGraphLaunch(executable, bound.stream))
    bound.context.set_device_memory(_malloc(cudart, size), size)
    assert cudart.cudaGraphLaunch(executable, bound.stream)[0] != 0
    assert "device memory" in cudart.messages()[-1]


# --- not capturable engines --------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["environment", "weight-streaming"])
def test_an_engine_marked_not_capturable_fails_and_invalidates_the_capture(standin, tmp_path, monkeypatch, how):
    trt, cudart = standin
    plan, _ = _build(trt, _add_one_graph(tmp_path / "decoder.onnx"), weight_streaming=how == "weight-streaming")
    if how == "environment":
        monkeypatch.setenv("JANUS_STANDIN_NOT_CAPTURABLE", "lm_head,decoder")
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
    assert engine.name == "decoder"
    bound = Bound(cudart, engine)
    assert bound.context.execute_async_v3(int(bound.stream))  # right: outside capture it runs
    _ok(cudart.cudaStreamBeginCapture(bound.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
    assert not bound.context.execute_async_v3(int(bound.stream))  # wrong: inside a capture
    assert "not capturable" in engine._logger.messages[-1][1]
    status, graph = cudart.cudaStreamEndCapture(bound.stream)
    assert status == cudart.cudaError_t.cudaErrorStreamCaptureInvalidated and graph is None
    assert cudart.cudaGetLastError()[0] != 0 and cudart.cudaGetLastError()[0] == 0  # the error, once
    assert bound.context.execute_async_v3(int(bound.stream))  # the fallback: run without a graph
    _ok(cudart.cudaStreamSynchronize(bound.stream))


# --- context memory ----------------------------------------------------------------------------------------------

def test_context_memory_follows_the_profiles_and_the_allocation_strategy(standin, tmp_path):
    trt, cudart = standin
    path = _add_one_graph(tmp_path / "add_one.onnx")
    small = trt.Runtime(trt.Logger()).deserialize_cuda_engine(_build(trt, path, ((1, 4),))[0])
    large = trt.Runtime(trt.Logger()).deserialize_cuda_engine(_build(trt, path, ((1, 4), (1, 4096)))[0])
    assert large.get_device_memory_size_for_profile_v2(0) == small.device_memory_size_v2
    assert large.device_memory_size_v2 == large.get_device_memory_size_for_profile_v2(1) > small.device_memory_size_v2
    strategies = trt.ExecutionContextAllocationStrategy
    for strategy, expected in ((strategies.STATIC, large.device_memory_size_v2),
                               (strategies.ON_PROFILE_CHANGE, large.get_device_memory_size_for_profile_v2(0)),
                               (strategies.USER_MANAGED, 0)):
        free = cudart.cudaMemGetInfo()[1]
        context = large.create_execution_context(strategy)
        assert free - cudart.cudaMemGetInfo()[1] == expected, strategy
        if strategy == strategies.ON_PROFILE_CHANGE:  # the selected profile's size, reallocated on a change
            assert context.set_optimization_profile_async(1, int(cudart.cudaStreamCreate()[1]))
            assert free - cudart.cudaMemGetInfo()[1] == large.get_device_memory_size_for_profile_v2(1)
        del context
        assert cudart.cudaMemGetInfo()[1] == free


def test_user_managed_context_memory_must_be_set_large_enough_and_aligned(standin, engine):
    trt, cudart = standin
    bound = Bound(cudart, engine, trt.ExecutionContextAllocationStrategy.USER_MANAGED)
    size = engine.get_device_memory_size_for_profile_v2(0)
    stream = int(bound.stream)
    assert not bound.context.execute_async_v3(stream)  # wrong: no memory given
    assert "set_device_memory" in engine._logger.messages[-1][1]
    scratch = _malloc(cudart, size + 256)
    for memory, nbytes in ((scratch, size - 256), (scratch + 16, size)):  # wrong: too small, unaligned
        bound.context.set_device_memory(memory, nbytes)
        assert not bound.context.execute_async_v3(stream)
    bound.context.set_device_memory(scratch + 256, size)  # right
    cudart.write_device(bound.x, np.zeros(2 * 64, np.float32).tobytes())
    assert bound.context.execute_async_v3(stream)
    _ok(cudart.cudaStreamSynchronize(bound.stream))
    assert (bound.output() == 1).all()
    cudart.cudaFree(scratch)
    assert not bound.context.execute_async_v3(stream)  # wrong: the memory was freed


def test_contexts_sharing_context_memory_must_not_run_at_once(standin, engine):
    trt, cudart = standin
    user = trt.ExecutionContextAllocationStrategy.USER_MANAGED
    first, second = Bound(cudart, engine, user), Bound(cudart, engine, user)
    shared = _malloc(cudart, engine.device_memory_size_v2)
    for bound in (first, second):
        bound.context.set_device_memory(shared, engine.device_memory_size_v2)
    assert first.context.execute_async_v3(int(first.stream))
    assert not second.context.execute_async_v3(int(second.stream))  # wrong: both queued on two streams at once
    assert "used by work still queued on stream" in engine._logger.messages[-1][1]
    assert second.context.execute_async_v3(int(first.stream))  # right: one after another on one stream
    event = cudart.cudaEventCreate()[1]
    assert first.context.execute_async_v3(int(first.stream))
    _ok(cudart.cudaEventRecord(event, first.stream))
    _ok(cudart.cudaStreamWaitEvent(second.stream, event, 0))
    assert second.context.execute_async_v3(int(second.stream))  # right: the second stream waits for the first
    _ok(cudart.cudaDeviceSynchronize())


def test_a_running_context_overwrites_its_context_memory(standin, engine):
    trt, cudart = standin
    bound = Bound(cudart, engine, trt.ExecutionContextAllocationStrategy.USER_MANAGED)
    size = engine.get_device_memory_size_for_profile_v2(0)
    scratch = _malloc(cudart, size)
    bound.context.set_device_memory(scratch, size)
    cudart.write_device(scratch, np.ones(16, np.float32).tobytes())  # wrong: data kept in context memory
    assert bound.context.execute_async_v3(int(bound.stream))
    _ok(cudart.cudaStreamSynchronize(bound.stream))
    assert (np.frombuffer(cudart.read_device(scratch, 64), np.float32) != 1).all()


# --- the ONNX parser follows the release's operator table -------------------------------------------------------

@pytest.mark.parametrize("version, accepted", [("10.3.0.30", False), ("10.16.1.4", True)])
def test_the_parser_refuses_what_its_releases_operator_table_refuses(tmp_path, version, accepted):
    from janus_edge.export.tensorrt.check import support_table, table_version

    path = _add_one_graph(tmp_path / "norm.onnx", rms_norm=True)
    table = support_table()["versions"][table_version(version)]["ops"]
    assert table.get("RMSNormalization", {"supported": False})["supported"] == accepted
    with standin_imports(JANUS_STANDIN_TRT_VERSION=version):
        import tensorrt as trt

        plan, errors = _build(trt, path)
        assert (plan is not None) == accepted, errors
        if not accepted:
            assert any("RMSNormalization norm: operator not supported" in e for e in errors)


# --- deserialisation, leaks, counts, versions --------------------------------------------------------------------

def test_engines_deserialise_from_an_istreamreader_that_delivers_every_byte(standin, tmp_path):
    trt, cudart = standin
    plan, _ = _build(trt, _add_one_graph(tmp_path / "add_one.onnx"))

    class Reader(trt.IStreamReader):
        def __init__(self, data: bytes, short: bool = False):
            trt.IStreamReader.__init__(self)
            self.data, self.offset, self.short = data, 0, short

        def read(self, size: int) -> bytes:
            size = size - 1 if self.short and self.offset > 100 else size
            chunk = self.data[self.offset:self.offset + size]
            self.offset += len(chunk)
            return chunk

    runtime = trt.Runtime(trt.Logger())
    assert runtime.deserialize_cuda_engine(Reader(bytes(plan), short=True)) is None  # wrong: a short read
    assert "short read" in runtime.logger.messages[-1][1]
    before = cudart.live_allocations()
    engine = runtime.deserialize_cuda_engine(Reader(bytes(plan)))  # right
    assert engine is not None and engine.name == "add_one"
    weights = onnx.load(str(tmp_path / "add_one.onnx")).SerializeToString()
    added = {p: n for p, n in cudart.live_allocations().items() if p not in before}
    assert added == {engine._weights.ptr: len(weights)}  # the weights: one device allocation


def test_streams_events_graphs_and_pinned_memory_are_tracked_until_destroyed(standin, engine):
    trt, cudart = standin
    before = (cudart.live_streams(), cudart.live_events(), cudart.live_graphs(), cudart.live_host_allocations())
    bound = Bound(cudart, engine)
    executable = bound.capture()
    event = cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming)[1]
    pointer, _ = _pinned(cudart, 4)
    assert (cudart.live_streams(), cudart.live_events(), cudart.live_graphs()) == (before[0] + 1, before[1] + 1,
                                                                                    before[2] + 1)
    assert cudart.live_host_allocations() == {**before[3], pointer: 16}
    for call in (cudart.cudaGraphExecDestroy(executable), cudart.cudaEventDestroy(event),
                 cudart.cudaStreamDestroy(bound.stream), cudart.cudaFreeHost(pointer)):
        _ok(call)
    assert (cudart.live_streams(), cudart.live_events(), cudart.live_graphs(), cudart.live_host_allocations()) == before
    assert cudart.cudaStreamDestroy(bound.stream)[0] != 0 and cudart.cudaFreeHost(pointer)[0] != 0  # twice: refused


def test_calls_are_counted_per_function(standin, engine):
    trt, cudart = standin
    bound = Bound(cudart, engine)
    cudart.reset_call_counts()
    for _ in range(3):
        assert bound.context.set_tensor_address("x", bound.x)
        assert bound.context.execute_async_v3(int(bound.stream))
    _ok(cudart.cudaStreamSynchronize(bound.stream))
    assert cudart.call_counts() == {"set_tensor_address": 3, "execute_async_v3": 3, "cudaStreamSynchronize": 1}


def test_a_machine_without_a_gpu_fails_every_call_but_the_version_queries():
    with standin_imports(JANUS_STANDIN_DEVICES="0"):
        from cuda.bindings import runtime as cudart

        assert cudart.cudaGetDevice() == (cudart.cudaError_t.cudaErrorNoDevice, None)
        assert cudart.cudaGetLastError()[0] == cudart.cudaError_t.cudaErrorNoDevice
        assert cudart.cudaDriverGetVersion() == (0, 12060)


def test_pinned_memory_comes_out_of_device_memory_on_an_integrated_gpu():
    for capability, integrated in (("9.0", False), ("8.7", True)):
        with standin_imports(JANUS_STANDIN_CC=capability, JANUS_STANDIN_MEMORY_BYTES=str(8 << 30)):
            from cuda.bindings import runtime as cudart

            free = cudart.cudaMemGetInfo()[1]
            pointer = cudart.cudaMallocHost(1 << 20)[1]
            assert free - cudart.cudaMemGetInfo()[1] == (1 << 20 if integrated else 0)
            assert cudart.cudaGetDeviceProperties(0)[1].integrated == integrated
            _ok(cudart.cudaFreeHost(pointer))


def test_a_cuda_13_runtime_needs_a_cuda_13_driver(monkeypatch):
    monkeypatch.setenv("JANUS_STANDIN_CUDA_RUNTIME", "13000")
    with standin_imports(JANUS_STANDIN_DRIVER="12060", JANUS_STANDIN_CC="8.7"):
        from cuda.bindings import runtime as cudart

        assert cudart.cudaMalloc(256) == (cudart.cudaError_t.cudaErrorInsufficientDriver, None)  # wrong driver
        assert cudart.cudaDriverGetVersion() == (0, 12060)
    with standin_imports(JANUS_STANDIN_DRIVER="13000", JANUS_STANDIN_CC="8.7"):
        from cuda.bindings import runtime as cudart

        assert cudart.cudaMalloc(256)[0] == 0
        props = cudart.cudaGetDeviceProperties(0)[1]
        assert (props.major, props.minor, props.integrated) == (8, 7, 1)
