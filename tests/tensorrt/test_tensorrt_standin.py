"""The TensorRT backend end to end on the TEST-ONLY STAND-IN (tests/standin/: ONNX Runtime + host memory, not a
GPU): build, understanding and generation with the same greedy tokens as ONNX Runtime, device memory returned,
refusals of foreign engines as one line with exit 2, and the stand-in's own rules (so it cannot pass a call the
real TensorRT or cuda-python would refuse). Not a hardware result: `make gpu-check` is."""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from standin_env import STANDIN, standin_env, standin_imports
from trt_stubs import patched_stubs

IMAGE = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)


def _cli(*args, **machine) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "janus_edge", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=standin_env(**machine))


def test_standin_tensorrt_backend_matches_onnxruntime_tokens_and_frees_device_memory(standin_engines, runtime):
    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        before = dict(cudart.live_allocations())
        engines = JanusRuntime.load(standin_engines)  # the default backend name: the engine format picks TensorRT
        assert engines.backend.name == "tensorrt"
        for question in ("Describe this image.", "What colour is it?"):
            expected = runtime.understand([IMAGE], question, max_new_tokens=12).token_ids
            assert engines.understand([IMAGE], question, max_new_tokens=12).token_ids == expected
        expected_images = runtime.generate_images("a red fox", n=1, temperature=0)  # builds size for one image
        images = engines.generate_images("a red fox", n=1, temperature=0)
        np.testing.assert_array_equal(images.tokens, expected_images.tokens)
        np.testing.assert_allclose(images.pixels, expected_images.pixels, atol=1e-5)
        # seeded sampling draws on the host from the same stream: the same tokens as ONNX Runtime
        sampled = engines.generate_images("a red fox", n=1, seed=3, temperature=1.0).tokens
        np.testing.assert_array_equal(sampled, runtime.generate_images("a red fox", n=1, seed=3,
                                                                        temperature=1.0).tokens)
        assert len(cudart.live_allocations()) > len(before)
        graphs = engines.backend._sessions.values()
        assert all(len(g.engine._contexts) == 1 for g in graphs)  # one context (activation memory) per engine
        engines.close()
        assert cudart.live_allocations() == before  # every buffer, KV cache, engine and context went back
        assert engines.understand([IMAGE], "Again?", max_new_tokens=3).token_ids  # reloads after close()
        engines.close()
        assert cudart.live_allocations() == before


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_standin_decode_steps_write_in_place_replay_a_cuda_graph_and_allocate_nothing(
        precision, standin_engines, export_hf, standin_fp16_engines, export_fp16):
    """Teacher-forced decode steps across three capacity buckets, against ONNX Runtime's host cache: the same hidden
    states, the cache in the export's KV dtype and sized per request, the device allocations identical after every
    decode step (nothing allocated in or around the captured step), and every step after a bucket's first one a
    CUDA-graph replay."""
    engines, export = (standin_engines, export_hf) if precision == "fp32" else (standin_fp16_engines, export_fp16)
    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime, kv

        trt, cpu = JanusRuntime.load(engines).backend, JanusRuntime.load(export).backend
        model, rows, prompt, steps = trt.manifest.model, 2, 10, 150
        capacity = kv.request_capacity(prompt + steps, trt.manifest.limits.max_context)
        rng = np.random.default_rng(1)
        ids = rng.integers(0, 100, (rows, prompt + steps))
        kv_dtype = trt.manifest.kv_dtype
        assert kv_dtype == ("float16" if precision == "fp16" else "float32")
        with trt.kv_decoder(rows, capacity) as decoder, cpu.kv_decoder(rows, capacity) as reference:
            tensor = kv.tensor_bytes(model, kv_dtype, rows, capacity)
            cache = kv.cache_bytes(model, kv_dtype, rows, capacity)
            assert decoder.nbytes == cache + tensor  # the cache and one spare tensor for bucket crossings
            sizes = sorted(cudart.live_allocations().values())
            assert sizes.count(tensor) >= 2 * model.num_layers + 1
            mask, positions = np.ones((rows, prompt), np.int64), np.tile(np.arange(prompt), (rows, 1))
            hidden = decoder.step(trt.embed("text_embedding", ids[:, :prompt]), mask, positions, last_only=True)
            expected = reference.step(cpu.run("text_embedding", input_ids=ids[:, :prompt])["inputs_embeds"], mask,
                                      positions, last_only=True)
            np.testing.assert_allclose(hidden, expected, atol=1e-5)
            launches, allocations = cudart.graph_launches(), []
            for step in range(prompt, prompt + steps):
                mask, positions = np.ones((rows, step + 1), np.int64), np.full((rows, 1), step)
                hidden = decoder.step(trt.embed("text_embedding", ids[:, step:step + 1]), mask, positions)
                expected = reference.step(cpu.run("text_embedding", input_ids=ids[:, step:step + 1])["inputs_embeds"],
                                          mask, positions)
                np.testing.assert_allclose(hidden.download(trt.stream), expected, atol=1e-4 if precision == "fp16"
                                           else 1e-5)
                allocations.append(cudart.live_allocations())
            assert all(a == allocations[0] for a in allocations)  # same pointers and sizes at every decode step
            buckets = len({kv.bucket(length + 1) for length in range(prompt, prompt + steps)})
            assert buckets == 3 and decoder.captures == buckets
            assert decoder.replays == steps - buckets == cudart.graph_launches() - launches
        trt.close()
        assert cudart.live_allocations() == {}


def test_standin_cli_runs_engine_directories_and_refuses_a_bad_one(standin_engines, export_hf, tmp_path):
    result = _cli("understand", standin_engines, "--question", "What?", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    refused = _cli("understand", standin_engines, "--question", "Hi", "--provider", "CUDAExecutionProvider")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "holds TensorRT engines" in refused.stderr
    onnx_as_engines = _cli("understand", export_hf, "--backend", "tensorrt", "--question", "Hi")
    assert onnx_as_engines.returncode == 2 and "holds ONNX graphs, not TensorRT engines" in onnx_as_engines.stderr
    broken = shutil.copytree(standin_engines, tmp_path / "broken")
    (broken / "janus_edge_engines.json").unlink()
    missing = _cli("understand", broken, "--question", "Hi")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "janus_edge_engines.json is missing" in missing.stderr


@pytest.mark.parametrize("machine, words", [
    ({"JANUS_STANDIN_TRT_VERSION": "10.16.1.4"}, "TensorRT 10.3.0.30 (this machine has 10.16.1.4)"),
    ({"JANUS_STANDIN_GPU": "NVIDIA H200"}, "NVIDIA H100 80GB HBM3 (this machine has 9.0, NVIDIA H200)"),
    ({"JANUS_STANDIN_GPU": "Orin", "JANUS_STANDIN_CC": "8.7"}, "compute capability 9.0"),
], ids=["other-tensorrt", "other-gpu-model", "other-architecture"])
def test_standin_engines_from_another_tensorrt_or_gpu_are_refused_in_one_line(standin_engines, machine, words):
    result = _cli("understand", standin_engines, "--question", "Hi", **machine)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and words in result.stderr and "janus-edge build" in result.stderr


def test_standin_tampered_plan_is_refused_by_deserialisation(standin_engines, tmp_path):
    engines = shutil.copytree(standin_engines, tmp_path / "engines")
    plan = (engines / "lm_head.engine").read_bytes().replace(b'"trt": "10.3.0.30"', b'"trt": "10.3.9.99"', 1)
    (engines / "lm_head.engine").write_bytes(plan)
    with standin_imports():
        from janus_edge.runtime import JanusRuntime
        from janus_edge.runtime.errors import BackendError

        backend = JanusRuntime.load(engines, verify=False).backend
        with pytest.raises(BackendError, match="could not load lm_head.engine"):
            backend.graph("lm_head")


def test_standin_build_refuses_a_target_that_is_not_this_gpu_unless_forced(export_hf, tmp_path):
    result = _cli("build", export_hf, tmp_path / "engines", "--target", "orin-nano-8gb")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "GPU is NVIDIA H100 80GB HBM3 (compute capability 9.0), not target orin-nano-8gb" in result.stderr
    assert "--force" in result.stderr and not (tmp_path / "engines").exists()
    forced = _cli("build", export_hf, tmp_path / "engines", "--target", "orin-nano-8gb", "--force",
                  "--timing-cache", tmp_path / "cache")
    assert forced.returncode == 0, forced.stderr
    written = json.loads((tmp_path / "engines" / "janus_edge_engines.json").read_text())
    assert written["target"] == "orin-nano-8gb" and written["build_options"]["forced"] is True
    manifest = json.loads((tmp_path / "engines" / "janus_edge.json").read_text())
    assert {g["format"] for g in manifest["graphs"].values()} == {"engine"}
    on_orin = _cli("build", export_hf, tmp_path / "orin", "--target", "orin-nano-8gb", "--timing-cache",
                   tmp_path / "cache", JANUS_STANDIN_GPU="Orin", JANUS_STANDIN_CC="8.7")
    assert on_orin.returncode == 0, on_orin.stderr


def test_standin_build_and_plan_refuse_the_onnx_runtime_only_kv_forms(export_gqa, tmp_path):
    result = _cli("build", export_gqa, tmp_path / "engines", "--target", "datacenter")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "ort_gqa KV form" in result.stderr and "--kv-form in_place" in result.stderr
    plan = _cli("plan", "--model", "janus-pro-1b", "--target", "orin-nano-8gb", "--precision", "w4,kv8")
    assert plan.returncode == 2 and "kv8" in plan.stderr and "Traceback" not in plan.stderr, plan.stderr


# --- the stand-in's own rules: each one fails a call the real API would fail -----------------------------------

def test_standin_enforces_profiles_addresses_streams_and_capture(standin_engines):
    with standin_imports():
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        assert trt.STANDIN
        engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine((standin_engines / "lm_head.engine").read_bytes())
        first, second = engine.create_execution_context(), engine.create_execution_context()
        assert first.active_optimization_profile == 0 and second.active_optimization_profile == -1
        status, stream = cudart.cudaStreamCreate()
        assert not second.set_optimization_profile_async(0, int(stream))  # one profile per context
        with pytest.raises(TypeError):
            first.execute_async_v3(stream)  # TensorRT takes the stream as an int
        low, _, high = engine.get_tensor_profile_shape("hidden_states", 0)
        assert not first.set_input_shape("hidden_states", (high[0] + 1, 1, high[2]))  # outside the profile
        assert first.set_input_shape("hidden_states", tuple(low))
        assert not first.execute_async_v3(int(stream))  # no addresses set
        status, hidden = cudart.cudaMalloc(int(np.prod(tuple(low))) * 4)
        status, logits = cudart.cudaMalloc(4)  # too small for the logits
        first.set_tensor_address("hidden_states", hidden)
        first.set_tensor_address("logits", logits)
        assert not first.execute_async_v3(int(stream))
        assert cudart.cudaFree(logits)[0] == cudart.cudaError_t.cudaSuccess
        assert cudart.cudaFree(logits)[0] == cudart.cudaError_t.cudaErrorInvalidDevicePointer  # double free
        status, logits = cudart.cudaMalloc(int(np.prod(first.get_tensor_shape("logits"))) * 4)
        first.set_tensor_address("logits", logits)
        # CUDA-graph capture: work is recorded, not run; allocating inside the capture invalidates it
        cudart.write_device(hidden, np.ones(tuple(low), np.float32).tobytes())
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        assert cudart.cudaStreamBeginCapture(stream, mode)[0] == 0
        assert not first.execute_async_v3(int(stream))  # shapes changed since the last enqueue: enqueue once first
        assert cudart.cudaStreamEndCapture(stream)[0] == 0
        assert first.execute_async_v3(int(stream))
        cudart.write_device(logits, bytes(16))
        assert cudart.cudaStreamBeginCapture(stream, mode)[0] == 0
        assert first.execute_async_v3(int(stream))
        assert not any(cudart.read_device(logits, 16))  # nothing ran yet
        status, graph = cudart.cudaStreamEndCapture(stream)
        status, executable = cudart.cudaGraphInstantiate(graph, 0)
        assert cudart.cudaGraphLaunch(executable, stream)[0] == 0 and not any(cudart.read_device(logits, 16))
        assert cudart.cudaStreamSynchronize(stream)[0] == 0 and any(cudart.read_device(logits, 16))  # ran now
        assert second.set_optimization_profile_async(0, int(stream)) is False  # still one profile per context
        assert first.set_optimization_profile_async(0, int(stream))  # the same profile: the graph stays valid
        assert cudart.cudaGraphLaunch(executable, stream)[0] == 0
        assert cudart.cudaGraphExecDestroy(executable)[0] == 0
        assert cudart.cudaGraphLaunch(executable, stream)[0] != 0  # destroyed
        cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal)
        assert cudart.cudaMalloc(64)[0] == cudart.cudaError_t.cudaErrorStreamCaptureUnsupported
        assert cudart.cudaStreamEndCapture(stream)[0] == cudart.cudaError_t.cudaErrorStreamCaptureInvalidated
        host = np.zeros(4, np.float32)
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice  # the wrong direction for these pointers
        assert cudart.cudaMemcpyAsync(host.ctypes.data, logits, 16, kind, stream)[0] != 0
        for pointer in (hidden, logits):
            cudart.cudaFree(pointer)


def _stub_classes(stubs) -> dict[str, dict[str, list[str]]]:
    """class -> method -> parameter names, from tensorrt-stubs (the real API's signatures)."""
    tree = ast.parse((stubs / "tensorrt_bindings" / "tensorrt.pyi").read_text())
    classes: dict[str, dict[str, list[str]]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = classes.setdefault(node.name, {})
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    methods.setdefault(item.name, []).append(",".join(a.arg for a in item.args.args))
    return classes  # overloads keep every variant


def test_standin_tensorrt_signatures_are_the_real_apis(tmp_path):
    """Every public stand-in method exists in tensorrt-stubs with the same parameter names (so a keyword or name
    the real TensorRT would reject also fails on the stand-in)."""
    stubs = _stub_classes(patched_stubs(tmp_path))
    with standin_imports():
        import tensorrt as trt

        checked = 0
        for name in trt.__all__:
            cls = getattr(trt, name)
            if not inspect.isclass(cls) or issubclass(cls, int) or name == "IHostMemory":
                continue
            assert name in stubs, f"{name} is not a TensorRT class"
            for method, function in vars(cls).items():
                if isinstance(function, property) and not method.startswith("_"):  # a property TensorRT has too
                    assert method in stubs[name], f"{name}.{method} is not a TensorRT property"
                    checked += 1
                if method.startswith("_") and method != "__init__" or not inspect.isfunction(function):
                    continue
                if method == "__init__" and "__init__" not in stubs[name]:
                    continue  # made by a factory in TensorRT (builder.create_builder_config() ...), never by users
                params = ",".join(inspect.signature(function).parameters)
                assert params in stubs[name].get(method, []), f"{name}.{method}({params}) vs {stubs[name].get(method)}"
                checked += 1
        assert checked > 40


def test_standin_cudart_signatures_are_cuda_pythons():
    """Parameter names of cuda-python's cudart (cuda/bindings/runtime.pyx, 12.x) for every function we mimic."""
    real = {"cudaMalloc": "size", "cudaFree": "devPtr", "cudaMallocHost": "size", "cudaHostAlloc": "size,flags",
            "cudaFreeHost": "ptr", "cudaMemcpyAsync": "dst,src,count,kind,stream",
            "cudaMemcpy2DAsync": "dst,dpitch,src,spitch,width,height,kind,stream",
            "cudaMemsetAsync": "devPtr,value,count,stream", "cudaMemGetInfo": "",
            "cudaStreamCreate": "", "cudaStreamCreateWithFlags": "flags", "cudaStreamDestroy": "stream", "cudaStreamSynchronize": "stream",
            "cudaStreamWaitEvent": "stream,event,flags",
            "cudaStreamBeginCapture": "stream,mode", "cudaStreamEndCapture": "stream",
            "cudaGraphInstantiate": "graph,flags", "cudaGraphLaunch": "graphExec,stream", "cudaGraphDestroy": "graph",
            "cudaGraphExecDestroy": "graphExec", "cudaEventCreate": "", "cudaEventCreateWithFlags": "flags",
            "cudaEventRecord": "event,stream", "cudaEventSynchronize": "event", "cudaEventQuery": "event",
            "cudaEventElapsedTime": "start,end", "cudaEventDestroy": "event",
            "cudaGetDevice": "", "cudaGetDeviceProperties": "device", "cudaDeviceSynchronize": "",
            "cudaGetLastError": "", "cudaPeekAtLastError": "", "cudaDriverGetVersion": "", "cudaRuntimeGetVersion": ""}
    with standin_imports():
        from cuda.bindings import runtime as cudart

        defined = {name: ",".join(inspect.signature(function).parameters) for name, function in vars(cudart).items()
                   if name.startswith("cuda") and inspect.isfunction(function)}
    assert defined == real


@pytest.mark.parametrize("target_name", ["orin-nano-8gb", "agx-orin-64gb", "thor", "datacenter"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_plan_counts_what_the_standin_tensorrt_backend_allocates(target_name, precision, standin_engines,
                                                                 standin_fp16_engines):
    """`plan`'s KV cache plus its runtime buffers equal the device memory the TensorRT backend allocates when it
    opens a request of that size (cache in the export's KV dtype, spare tensor, decode-step IO), for four targets."""
    from janus_edge.export.tensorrt.targets import TARGETS
    from janus_edge.plan import make_plan

    engines = standin_engines if precision == "fp32" else standin_fp16_engines
    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime, kv

        with JanusRuntime.load(engines) as runtime:
            manifest, model = runtime.manifest, runtime.manifest.model
            target = TARGETS[target_name]
            context = min(target.max_context, manifest.limits.max_context)
            plan = make_plan("tiny", model, target, precision, context, images=2)
            runtime.backend.graph("decoder")  # the engine and its one context, before the request
            before = cudart.live_allocations()
            with runtime.backend.kv_decoder(4, capacity=context) as decoder:
                added = {p: n for p, n in cudart.live_allocations().items() if p not in before}
                assert sum(added.values()) == plan.kv_cache_bytes + plan.runtime_buffers_bytes
                spare = kv.spare_bytes(model, manifest.kv_dtype, 4, context)
                assert decoder.nbytes == plan.kv_cache_bytes + spare


def test_a_step_after_rewinding_below_the_mirrored_mask_attends_only_to_kept_positions(standin_engines, export_hf):
    """A chat turn can rewind the cache below positions the device mask already marks valid and then step with the
    same layout; the rewound slots must not be attended to (same hidden states as ONNX Runtime's host cache)."""
    with standin_imports():
        from janus_edge.runtime import JanusRuntime

        trt, cpu = JanusRuntime.load(standin_engines).backend, JanusRuntime.load(export_hf).backend
        rows, ids = 1, np.random.default_rng(4).integers(0, 100, (1, 20))
        with trt.kv_decoder(rows, 64) as decoder, cpu.kv_decoder(rows, 64) as reference:
            outputs = []
            for backend, cache in ((trt, decoder), (cpu, reference)):
                cache.step(backend.embed("text_embedding", ids[:, :8]), np.ones((1, 8), np.int64),
                           np.arange(8)[None], last_only=True)
                for position in range(8, 14):  # decode steps: the device mask marks slots up to 13 valid
                    cache.step(backend.embed("text_embedding", ids[:, position:position + 1]),
                               np.ones((1, position + 1), np.int64), np.array([[position]]))
                cache.rewind(10)
                hidden = cache.step(backend.embed("text_embedding", ids[:, 15:16]), np.ones((1, 11), np.int64),
                                    np.array([[10]]))
                outputs.append(hidden if isinstance(hidden, np.ndarray) else hidden.download(trt.stream))
            np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
        trt.close()


def test_the_kv_pool_keeps_one_request_kinds_cache_not_every_kinds(standin_engines):
    """An understanding request (1 row) then a generation (2 CFG rows): the pool frees the set that does not fit
    instead of keeping both, so the backend holds what plan counts (the larger request's), not their sum."""
    with standin_imports():
        from janus_edge.runtime import JanusRuntime

        with JanusRuntime.load(standin_engines) as engines:
            engines.understand([IMAGE], "What?", max_new_tokens=4)
            assert len(engines.backend.pool.free) == 1
            engines.generate_images("a red fox", n=1, temperature=0)
            assert len(engines.backend.pool.free) == 1 and engines.backend.pool.free[0][0].nbytes > 0
