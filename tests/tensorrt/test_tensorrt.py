"""The TensorRT path, checked without TensorRT: imports, static types (mypy + tensorrt-stubs), profiles, the
engine manifest's refusal of foreign engines, the device sampler's maths, and the parser-support check."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cli_helpers import run_cli
from trt_stubs import patched_stubs
from janus_edge.export.tensorrt.sampler_graph import sampler_graph
from janus_edge.export.tensorrt.check import VERSIONS, check_export, check_model, support_table
from janus_edge.export.tensorrt.profiles import engine_profiles
from janus_edge.runtime.backends.engine_manifest import EngineInfo, EngineManifest, check_compatible
from janus_edge.runtime.errors import BackendError, ManifestError
from janus_edge.runtime.manifest import load_manifest, sha256_file
from janus_edge.runtime.sampling import Sampler
from janus_edge.export.tensorrt.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
TRT_MODULES = ["janus_edge.runtime.backends.tensorrt", "janus_edge.runtime.backends.cuda",
               "janus_edge.runtime.backends.trt_decoder", "janus_edge.runtime.backends.engine_manifest",
               "janus_edge.runtime.backends.trt_memory",
               "janus_edge.export.tensorrt.build", "janus_edge.export.tensorrt.profiles",
               "janus_edge.runtime.profiles", "janus_edge.export.tensorrt.check",
               "janus_edge.export.tensorrt.sampler_graph", "janus_edge.export.tensorrt.targets",
               "janus_edge.cli.build", "janus_edge.cli.check_trt", "janus_edge.gpu_check", "janus_edge.cli.gpu_check",
               "janus_edge.gpucheck.machine", "janus_edge.gpucheck.engines", "janus_edge.gpucheck.forced",
               "janus_edge.gpucheck.measure", "janus_edge.gpucheck.report", "janus_edge.gpucheck.tolerances"]


def test_trt_modules_import_without_tensorrt_or_cuda(export_hf):
    blocker = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"tensorrt", "cuda", "polygraphy", "pycuda", "cupy"}:
                    raise ImportError(f"{name} blocked")
        sys.meta_path.insert(0, Block())
        import importlib
        for module in sys.argv[2:]:
            importlib.import_module(module)
        from janus_edge.runtime.backends.tensorrt import require_tensorrt
        from janus_edge.runtime.errors import BackendError, ManifestError
        try:
            require_tensorrt()
        except BackendError as exc:
            print("REFUSED:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", blocker, str(export_hf), *TRT_MODULES], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "REFUSED: TensorRT is not installed" in result.stdout


def _mypy(tmp_path: Path, modules: list[str], extra_files: dict[str, str] | None = None):
    package = tmp_path / "src" / "janus_edge"
    package.mkdir(parents=True)
    shutil.copytree(ROOT / "janus_edge", package, dirs_exist_ok=True)
    for name in ("runtime", "export", "calibration"):
        shutil.copytree(ROOT / name, package / name)
    for relative, text in (extra_files or {}).items():
        (package / relative).write_text(text)
    stubs = patched_stubs(tmp_path)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nfollow_imports = silent\nignore_missing_imports = True\nincremental = False\n"
                      "check_untyped_defs = True\n"
                      "python_version = 3.11\n[mypy-tensorrt.*,tensorrt_bindings.*]\nignore_errors = True\n")
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), *sum((["-m", m] for m in modules), [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={"MYPYPATH": f"{tmp_path / 'src'}:{stubs}", "PATH": "/usr/bin:/bin"})


CUDA_TYPO = """from janus_edge.runtime.backends.cuda import Stream

def copy(stream: Stream, dst: int, src: int) -> None:
    kind = stream.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    stream.cudart.cudaMemcpyAsync(dst, src, size=4, kind=kind, stream=stream.handle)
    stream.cudart.cudaMemcpy2DAsnyc(dst, 4, src, 4, 4, 1, kind, stream.handle)
"""


@pytest.mark.parametrize("probe", [None, "tensorrt", "cuda"],
                         ids=["our-code", "stubs-catch-a-typo", "cuda-wrapper-catches-a-typo"])
def test_mypy_with_tensorrt_stubs(tmp_path, probe):
    if probe is None:
        result = _mypy(tmp_path, TRT_MODULES)
        assert result.returncode == 0, result.stdout + result.stderr
        return
    if probe == "cuda":  # cuda-python is untyped: `cuda.CudaRuntime` gives its calls cuda-python's names
        result = _mypy(tmp_path, ["janus_edge.probe"], {"probe.py": CUDA_TYPO})
        assert result.returncode != 0 and '"size"' in result.stdout and "cudaMemcpy2DAsnyc" in result.stdout
        return
    typo = ("import tensorrt as trt\n\ndef run(context: trt.IExecutionContext, stream: int) -> None:\n"
            "    context.execute_async_v4(stream)\n")
    result = _mypy(tmp_path, ["janus_edge.probe"], {"probe.py": typo})
    assert result.returncode != 0 and "execute_async_v4" in result.stdout


def _manifest(**changes) -> EngineManifest:
    base = dict(tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", target="orin-nano-8gb",
                export_dir="out/export", engines={"decoder": EngineInfo("decoder.engine", "decoder.onnx", "ab", "fp16",
                                                                        [], 1000, 4096, [4096])})
    return EngineManifest(**{**base, **changes})


def test_engine_manifest_round_trips_and_refuses_foreign_engines(tmp_path):
    _manifest().write(tmp_path)
    manifest = EngineManifest.read(tmp_path)
    assert manifest.engines["decoder"].precision == "fp16"
    check_compatible(manifest, tmp_path, "10.3.0.26", "Orin", "8.7")  # same release, other build: fine
    with pytest.raises(BackendError) as info:
        check_compatible(manifest, tmp_path, "10.16.1.4", "NVIDIA H100 80GB HBM3", "9.0")
    message = str(info.value)
    assert "TensorRT 10.3.0.30 (this machine has 10.16.1.4)" in message
    assert "8.7, Orin (this machine has 9.0, NVIDIA H100 80GB HBM3)" in message
    assert "janus-edge build out/export" in message and "--target orin-nano-8gb" in message
    with pytest.raises(BackendError, match="compute capability 8.7"):
        check_compatible(manifest, tmp_path, "10.3.0.30", "Thor", "11.0")
    old = json.loads((tmp_path / "janus_edge_engines.json").read_text())
    old["schema_version"] = 1  # engines built before device memory was recorded
    (tmp_path / "janus_edge_engines.json").write_text(json.dumps(old))
    with pytest.raises(ManifestError) as refused:
        EngineManifest.read(tmp_path)
    assert "schema version 1" in str(refused.value) and "\n" not in str(refused.value)
    assert f"janus-edge build out/export {tmp_path} --target orin-nano-8gb" in refused.value.hint


def test_profiles_cover_prefill_and_decode_within_the_target(export_hf):
    manifest = load_manifest(export_hf)
    profiles = engine_profiles(manifest, TARGETS["orin-nano-8gb"])
    prefill, decode, _ = profiles["decoder"]  # and speculative decoding's verify pass (test_speculative.py)
    # sized like `plan`: one image (2 CFG rows) and the target's context by default, not the export's max batch
    assert prefill["inputs_embeds"][2] == [2, 2048, manifest.model.hidden_size]
    assert engine_profiles(manifest, TARGETS["orin-nano-8gb"], images=3, context=1024)["decoder"][0][
        "inputs_embeds"][2] == [6, 1024, manifest.model.hidden_size]
    # the in-place decoder reads a cache of `capacity` slots (up to the context) in both profiles
    assert prefill["past_key_values.0.key"][2][2] == decode["past_key_values.0.key"][2][2] == 2048
    assert decode["inputs_embeds"][2][1] == 1 and decode["attention_mask"][2][1] == 2048 + 1
    for graph in profiles.values():
        for profile in graph:
            for low, opt, high in profile.values():
                assert all(lo <= o <= hi for lo, o, hi in zip(low, opt, high))
    assert profiles["vq_decoder"][0]["image_ids"][0] == profiles["vq_decoder"][0]["image_ids"][2] == [1, 576]
    small = dataclasses.replace(manifest, limits=dataclasses.replace(manifest.limits, max_batch=1, max_context=700))
    for graph in engine_profiles(small, TARGETS["orin-nano-8gb"]).values():  # opt stays inside [min, max]
        for profile in graph:
            for low, opt, high in profile.values():
                assert all(lo <= o <= hi for lo, o, hi in zip(low, opt, high))
    for name, cfg in (("sampler", False), ("cfg_sampler", True)):  # profiles name exactly the graphs' inputs
        assert set(profiles[name][0]) == {tensor.name for tensor in sampler_graph(cfg).graph.input}
    wide = engine_profiles(manifest, TARGETS["datacenter"])
    assert wide["decoder"][0]["attention_mask"][2][1] == 2 * min(manifest.limits.max_context, 4096)


@pytest.mark.parametrize("cfg", [False, True])
def test_device_sampler_graph_mixes_and_argmaxes_like_the_host(cfg):
    import onnxruntime as ort

    session = ort.InferenceSession(sampler_graph(cfg).SerializeToString())
    logits = (np.random.default_rng(0).standard_normal((4 if cfg else 2, 16384)) * 3).astype(np.float32)
    feeds = {"logits": logits, **({"cfg_weight": np.array([5.0], np.float32)} if cfg else {})}
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    mixed = logits[2:] + np.float32(5) * (logits[:2] - logits[2:]) if cfg else logits
    np.testing.assert_array_equal(outputs["greedy"], Sampler(0.0)(mixed))
    if cfg:
        np.testing.assert_array_equal(outputs["mixed"], mixed)  # same operations in the same order
    assert not [f for f in check_model(sampler_graph(cfg), "sampler", "10.3")], "no CumSum/loop on TensorRT 10.3"


def test_check_trt_passes_fp32_fp16_and_quantised_exports(export_hf, export_fp16):
    samplers = {"sampler": sampler_graph(False), "cfg_sampler": sampler_graph(True)}
    for export in (export_hf, export_fp16):
        findings = check_export(export, VERSIONS, samplers)
        assert not [f for f in findings if f.severity == "error"], findings
    result = run_cli("check-trt", export_hf, check_code=0)
    assert all(f"TensorRT {v}: ok" in result.stdout for v in VERSIONS)


def test_check_trt_fails_clearly_on_an_unsupported_op(tmp_path, export_hf):
    unsupported = next(op for op, entry in support_table()["versions"]["11"]["ops"].items()
                       if not entry["supported"] and all(not support_table()["versions"][v]["ops"].get(op, entry)
                                                         ["supported"] for v in VERSIONS))
    export = shutil.copytree(export_hf, tmp_path / "export")
    proto = onnx.load(str(export / "lm_head.onnx"))
    logits = proto.graph.output[0].name
    proto.graph.node.append(helper.make_node(unsupported, [logits], [f"{logits}_odd"], name="odd_node"))
    proto.graph.output.append(helper.make_tensor_value_info(f"{logits}_odd", TensorProto.FLOAT, None))
    onnx.save(proto, str(export / "lm_head.onnx"))
    manifest = load_manifest(export, verify=False)
    manifest.files["lm_head.onnx"] = sha256_file(export / "lm_head.onnx")
    manifest.write(export)
    result = run_cli("check-trt", export, "--trt-version", "10.3")
    assert result.returncode == 1
    assert f"error: lm_head: {unsupported} odd_node: operator not supported" in result.stdout
    assert "TensorRT 10.3: 1 problem(s)" in result.stdout


def test_build_without_tensorrt_is_a_clear_user_error(tmp_path, export_hf):
    result = run_cli("build", export_hf, tmp_path / "engines", "--target", "orin-nano-8gb")
    assert result.returncode == 2 and "TensorRT is not installed" in result.stderr


def test_gpu_check_says_what_is_missing():
    result = subprocess.run([sys.executable, "-m", "janus_edge.gpu_check"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "TensorRT is not installed" in result.stderr


@pytest.mark.parametrize("scheme", ["int8", "w8", "w4", "fp16"])
def test_check_trt_on_reduced_precision_exports(calibrated, scheme):
    samplers = {"sampler": sampler_graph(False), "cfg_sampler": sampler_graph(True)}
    findings = check_export(calibrated[scheme], VERSIONS, samplers)
    assert not [f for f in findings if f.severity == "error"], findings


def _with_body(op: str, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """A model whose only interesting node sits inside an If's branch, reading a second input of `dtype`."""
    branch = helper.make_graph([helper.make_node(op, ["x", "y"], ["z"], name=f"inner_{op}")], "then", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["w"])], "else", [],
                              [helper.make_tensor_value_info("w", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=other, name="if")], "probe",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("y", dtype, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_check_trt_probes_subgraphs_every_input_and_slow_ops():
    nested = check_model(_with_body("CumSum", TensorProto.INT64), "probe", "10.3")
    assert any(f.graph == "probe/if.then_branch" and "slow" in f.problem and f.severity == "warning"
               for f in nested), nested  # found inside the If body, and slow before 10.8
    assert not [f for f in check_model(_with_body("CumSum", TensorProto.INT64), "probe", "10.16")
                if "slow" in f.problem]
    fp8 = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"], name="mixed_add")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT8E4M3FN, [2])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 21)])
    assert any("input 1 (b) dtype FP8" in f.problem for f in check_model(fp8, "g", "11"))
