"""Export writes valid graphs and an honest manifest; every graph matches PyTorch (`compare`)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from cli_helpers import run_cli
from janus_edge.export.compare import compare
from janus_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from janus_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file

GRAPHS = {"vision_encoder", "text_embedding", "generation_embedding", "decoder", "lm_head", "generation_head",
          "vq_decoder"}


@pytest.mark.parametrize("fixture", ["export_hf", "export_original"])
def test_fp32_graphs_match_pytorch_within_1e4(request, fixture, tiny_hf, tiny_original):
    model_dir = tiny_hf if fixture == "export_hf" else tiny_original
    rows = compare(model_dir, request.getfixturevalue(fixture))
    assert {r.graph for r in rows} == GRAPHS
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    numeric = [r for r in rows if r.case != "structure"]
    assert max(r.max_abs for r in numeric) <= 1e-4
    assert {r.case for r in rows if r.graph == "decoder"} >= {"b1,s1,p0", "b2,s1,p7"}  # past 0, sequence 1


def test_fp16_export_runs_and_passes_its_tolerances(export_fp16, tiny_hf):
    rows = compare(tiny_hf, export_fp16)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert load_manifest(export_fp16).kv_dtype == "float16"
    proto = onnx.load(str(export_fp16 / "decoder.onnx"))
    kv_types = {t.type.tensor_type.elem_type for t in [*proto.graph.input, *proto.graph.output] if "key_values" in t.name}
    assert kv_types == {onnx.TensorProto.FLOAT16}, "the fp16 export holds its KV cache in fp16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    kept = {n.op_type for n in proto.graph.node if n.op_type in ("Softmax", "Pow", "ReduceMean")}
    assert kept, "norms and softmax should remain (in fp32) in the fp16 graph"
    vq = onnx.load(str(export_fp16 / "vq_decoder.onnx"))
    assert not any(t.data_type == onnx.TensorProto.BFLOAT16 for t in vq.graph.initializer)


def test_both_formats_export_graphs_that_agree(export_hf, export_original):
    a = OnnxRuntimeBackend(export_hf, load_manifest(export_hf))
    b = OnnxRuntimeBackend(export_original, load_manifest(export_original))
    rng = np.random.default_rng(0)
    feeds = {"vision_encoder": {"pixel_values": rng.standard_normal((1, 3, 384, 384), dtype=np.float32)},
             "text_embedding": {"input_ids": rng.integers(0, 500, (2, 5))},
             "generation_embedding": {"image_ids": rng.integers(0, 16384, (2, 3))},
             "lm_head": {"hidden_states": rng.standard_normal((2, 1, 64), dtype=np.float32)},
             "generation_head": {"hidden_states": rng.standard_normal((2, 1, 64), dtype=np.float32)},
             "vq_decoder": {"image_ids": rng.integers(0, 16384, (1, 576))}}
    for name, feed in feeds.items():
        for key, value in a.graph(name).run(feed).items():
            np.testing.assert_allclose(value, b.graph(name).run(feed)[key], atol=1e-5, err_msg=name)


def test_manifest_describes_every_file_and_the_model(export_hf, tiny_hf):
    manifest = load_manifest(export_hf)
    on_disk = {p.name for p in export_hf.iterdir()} - {MANIFEST_NAME}
    assert set(manifest.files) == on_disk
    assert all(sha256_file(export_hf / name) == digest for name, digest in manifest.files.items())
    assert set(manifest.graphs) == GRAPHS
    decoder = manifest.graphs["decoder"]
    assert [t.name for t in decoder.inputs[:3]] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert len(decoder.outputs) == 1 + 2 * manifest.model.num_layers
    assert decoder.inputs[3].shape == ["batch", manifest.model.num_kv_heads, "capacity", manifest.model.head_dim]
    assert decoder.outputs[1].name == "new_key_values.0.key"
    assert decoder.outputs[1].shape == ["batch", manifest.model.num_kv_heads, "sequence", manifest.model.head_dim]
    assert (manifest.kv_cache.form, manifest.kv_dtype) == ("in_place", "float32")
    vocab = json.loads((tiny_hf / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in vocab}
    assert manifest.tokens.image == ids["<image_placeholder>"]
    assert manifest.tokens.bos == ids["<\uff5cbegin\u2581of\u2581sentence\uff5c>"]
    assert manifest.tokens.image_start == ids["<begin_of_image>"]
    assert (manifest.generation.cfg_weight, manifest.generation.temperature) == (5.0, 1.0)
    assert manifest.preprocessing.background == [127, 127, 127]
    assert {"torch", "transformers", "onnx"} <= set(manifest.producer)
    for graph in manifest.graphs.values():
        onnx.checker.check_model(str(export_hf / graph.file))


def test_cli_tiny_export_compare(tmp_path):
    run_cli("tiny", tmp_path / "model", "--format", "original", "--seed", "3", check_code=0)
    run_cli("export", tmp_path / "model", tmp_path / "export", "--max-batch", "4", "--max-context", "1024",
            check_code=0)
    result = run_cli("compare", tmp_path / "model", tmp_path / "export", check_code=0)
    assert "0 failed" in result.stdout
    assert load_manifest(tmp_path / "export").limits.max_context == 1024


def test_tiny_is_deterministic_per_seed(tmp_path):
    from janus_edge.export.tiny import write_checkpoint

    a = write_checkpoint(tmp_path / "a", seed=1)
    b = write_checkpoint(tmp_path / "b", seed=1)
    c = write_checkpoint(tmp_path / "c", seed=2)
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
    assert sha256_file(a / "model.safetensors") != sha256_file(c / "model.safetensors")
