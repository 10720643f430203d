"""Every precision scheme yields an export that checks out structurally, runs both pipelines and gets measured."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibration_schemes import SCHEMES
from cli_helpers import run_cli
from janus_edge.calibration.accuracy import accuracy
from janus_edge.calibration.calibrate import calibrate
from janus_edge.calibration.data import load_set
from janus_edge.export.compare import compare
from janus_edge.runtime import JanusRuntime
from janus_edge.runtime.errors import RequestError

@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_passes_compare_and_runs_both_pipelines(calibrated, tiny_hf, scheme):
    rows = compare(tiny_hf, calibrated[scheme])
    assert all(r.ok for r in rows if r.case == "structure")
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    runtime = JanusRuntime.load(calibrated[scheme])
    assert runtime.manifest.precision == scheme
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    assert runtime.understand([image], "What is this?", max_new_tokens=4).token_ids
    generated = runtime.generate_images("a cat", n=1, seed=0)
    assert generated.tokens.shape == (1, 576) and np.isfinite(generated.pixels).all()


def test_graph_precisions_follow_the_scheme(calibrated):
    graphs = JanusRuntime.load(calibrated["int8,w4"]).manifest.graphs
    assert {n: g.precision for n, g in graphs.items()} == {
        "vision_encoder": "int8", "vq_decoder": "int8", "decoder": "w4", "lm_head": "w4", "generation_head": "w4",
        "text_embedding": "fp16", "generation_embedding": "fp32"}


def test_int8_qdq_is_symmetric_with_zero_points_zero(calibrated):
    for name in ("vision_encoder.onnx", "vq_decoder.onnx"):
        proto = onnx.load(str(calibrated["int8"] / name))
        initializers = {i.name: i for i in proto.graph.initializer}
        qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert len(qdq) > 10
        for node in qdq:
            assert len(node.input) == 3, f"{node.name} has no explicit zero point"
            zero_point = initializers[node.input[2]]
            # signed int8 (int32 for biases, whose scale is input scale x weight scale)
            expected = onnx.TensorProto.INT32 if "bias" in node.input[0] else onnx.TensorProto.INT8
            assert zero_point.data_type == expected, node.name
            assert not numpy_helper.to_array(zero_point).any(), f"{node.name} has a non-zero zero point"


def test_weight_only_graphs_hold_int4_blocks_and_no_fp32_matmul_weights(calibrated):
    proto = onnx.load(str(calibrated["w4"] / "decoder.onnx"))
    initializers = {i.name: i for i in proto.graph.initializer}
    dequantize = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert dequantize and all(initializers[n.input[0]].data_type == onnx.TensorProto.INT4 for n in dequantize)
    assert all(len(n.input) == 2 for n in dequantize), "symmetric: no zero points"
    matmul_weights = [initializers[n.input[1]] for n in proto.graph.node if n.op_type == "MatMul"
                      and n.input[1] in initializers]
    assert not matmul_weights, "every MatMul weight should come through a DequantizeLinear"
    size = lambda d: sum(p.stat().st_size for p in d.glob("decoder.onnx*"))  # noqa: E731
    assert size(calibrated["w4"]) < size(calibrated["w8"]) < size(calibrated["fp16"]) * 0.75


def test_fp16_with_weight_only_computes_and_caches_in_fp16(calibrated):
    """fp16,w4 (the GPU/TensorRT weight-only export): INT4 weights with fp16 scales feeding fp16 MatMuls, and the
    KV cache held in fp16 (half the bytes of w4 alone), as the manifest and the backend both say."""
    proto = onnx.load(str(calibrated["fp16,w4"] / "decoder.onnx"))
    initializers = {i.name: i for i in proto.graph.initializer}
    dequantize = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert dequantize and all(initializers[n.input[1]].data_type == onnx.TensorProto.FLOAT16 for n in dequantize)
    cache = [t for t in proto.graph.input if t.name.startswith("past_key_values.")]
    assert cache and all(t.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for t in cache)
    half, full = JanusRuntime.load(calibrated["fp16,w4"]), JanusRuntime.load(calibrated["w4"])
    assert (half.manifest.kv_dtype, full.manifest.kv_dtype) == ("float16", "float32")
    with half.backend.kv_decoder(2, capacity=64) as decoder:
        assert decoder.cache.buffers[0].dtype == np.float16
        assert decoder.nbytes == half.manifest.kv_cache_bytes(2, 64) == full.manifest.kv_cache_bytes(2, 64) // 2


UNDERSTANDING_GRAPHS = ("vision_encoder", "text_embedding", "decoder", "lm_head")
GENERATION_GRAPHS = ("text_embedding", "generation_embedding", "decoder", "generation_head")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_accuracy_report_moves_exactly_where_the_scheme_changed_graphs(calibrated, export_hf, runtime, scheme):
    report = accuracy(export_hf, calibrated[scheme], samples=1, answer_tokens=8)
    changed = {name for name, graph in report["graphs"].items() if graph["precision"] != "fp32"}
    assert changed, "every scheme changes some graph"
    for name, graph in report["graphs"].items():
        assert (graph["rel_l2"] > 0) == (name in changed), name  # a graph left fp32 is the same maths: exactly 0
        assert 0.5 < graph["cosine"] <= 1.0 + 1e-9
    u, g = report["understanding"], report["generation"]
    calibration = load_set(None, None, 1)
    answer = runtime.understand(calibration.images, calibration.questions[0], max_new_tokens=8)
    assert u["tokens_scored"] == len(answer.token_ids)
    assert u["top1_agreement"] * u["tokens_scored"] == u["answers"][0]["agreeing"]
    assert (u["kl"] > 0) == bool(changed & set(UNDERSTANDING_GRAPHS))
    if not changed & set(GENERATION_GRAPHS):
        assert g["token_agreement"] == 1
    assert (g["vq_psnr_db"] is None) == ("vq_decoder" not in changed)
    if g["vq_psnr_db"] is not None:
        assert g["vq_psnr_db"] > 10
    if scheme == "fp16":
        assert u["top1_agreement"] > 0.8


def test_cli_calibrate_and_accuracy(tmp_path, export_hf):
    run_cli("calibrate", export_hf, tmp_path / "w8", "--scheme", "w8", check_code=0)
    result = run_cli("accuracy", export_hf, tmp_path / "w8", "--samples", "1", "--answer-tokens", "3",
                     "--json", tmp_path / "a.json", check_code=0)
    report = json.loads((tmp_path / "a.json").read_text())
    assert "top-1 agreement" in result.stdout and 1 <= report["understanding"]["tokens_scored"] <= 3
    assert f"{report['understanding']['tokens_scored']} answer tokens" in result.stdout


def test_bad_schemes_and_sources(tmp_path, export_hf, calibrated):
    with pytest.raises(RequestError, match="w8 and w4 exclude"):
        calibrate(export_hf, tmp_path / "x", "w8,w4")
    with pytest.raises(RequestError, match="calibration starts from fp32"):
        calibrate(calibrated["fp16"], tmp_path / "y", "int8")
