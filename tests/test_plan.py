"""`plan` arithmetic against hand-computed numbers and against transformers' real modules (on the meta device)."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from test_calibration import SCHEMES, calibrated  # noqa: F401 (the calibrated exports fixture, reused)
from janus_edge.export.configs import janus_config
from janus_edge.export.precision import parse_precision
from janus_edge.export.tensorrt.targets import GIB, TARGETS
from janus_edge.plan import MODELS, bytes_per_weight, graph_parameters, kv_bytes_per_token, make_plan


def test_decoder_and_kv_by_hand():
    # 1B: 24 layers x (4 x 2048^2 attention + 3 x 2048 x 5632 MLP + 2 x 2048 norms) + 2048 final norm
    assert graph_parameters(MODELS["janus-pro-1b"])["decoder"] == 24 * (4 * 2048**2 + 3 * 2048 * 5632 + 2 * 2048) + 2048
    assert graph_parameters(MODELS["janus-pro-7b"])["decoder"] == 30 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096) \
        + 4096
    assert graph_parameters(MODELS["janus-pro-1b"])["lm_head"] == 102400 * 2048
    assert kv_bytes_per_token(MODELS["janus-pro-1b"], 2) == 192 * 1024  # 192 KiB per token in fp16
    assert kv_bytes_per_token(MODELS["janus-pro-7b"], 2) == 480 * 1024


@pytest.mark.parametrize("name", ["janus-pro-1b", "janus-pro-7b"])
def test_parameter_counts_equal_transformers_modules(name):
    from transformers import JanusForConditionalGeneration

    with torch.device("meta"):
        model = JanusForConditionalGeneration(janus_config(name))
    count = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    m = model.model
    vq = m.vqmodel
    expected = {"vision_encoder": count(m.vision_model, m.aligner),
                "text_embedding": count(m.language_model.embed_tokens),
                "generation_embedding": count(m.generation_embeddings, m.generation_aligner),
                "decoder": count(m.language_model) - count(m.language_model.embed_tokens),
                "lm_head": count(model.lm_head), "generation_head": count(m.generation_head),
                "vq_decoder": count(vq.decoder, vq.post_quant_conv) + vq.quantize.embedding.weight.numel()}
    assert graph_parameters(MODELS[name]) == expected


@pytest.mark.parametrize("name", ["janus-pro-1b", "janus-pro-7b", "janus-1.3b"])
def test_a_preset_is_the_model_description_its_transformers_config_gives_back(name):
    from janus_edge.export.configs import PRESETS, model_info

    assert model_info(janus_config(name), PRESETS[name].family) == PRESETS[name]


@pytest.mark.parametrize("fixture", ["export_hf", "export_original"])
def test_an_export_records_the_tiny_preset_it_was_made_from(request, fixture):
    """The manifest carries the whole description (plan can count an export's graphs without its checkpoint)."""
    import dataclasses

    from janus_edge.export.configs import PRESETS
    from janus_edge.runtime.manifest import load_manifest

    model = load_manifest(request.getfixturevalue(fixture)).model
    assert model == dataclasses.replace(PRESETS["tiny"], vocab_size=model.vocab_size, source_format=model.source_format)
    assert model.vocab_size > 0 and model.source_format == ("hf" if fixture == "export_hf" else "original")


def test_orin_nano_fp16_floor_matches_the_reference_table():
    """1B LLM + lm_head in fp16 is ~3.3 GB; at 68 GB/s that is ~49 ms per token (shared/REFERENCE.md section 7)."""
    d = MODELS["janus-pro-1b"]
    p = graph_parameters(d)
    llm_bytes = (p["decoder"] + p["lm_head"] + p["text_embedding"]) * 2
    assert 3.2e9 < llm_bytes < 3.4e9
    plan = make_plan("janus-pro-1b", d, TARGETS["orin-nano-8gb"], "fp16", 2048, 1)
    weights_read = (p["decoder"] + p["lm_head"]) * 2 + kv_bytes_per_token(d, 2) * 1024
    assert plan.decode_floor_ms["understanding_b1"] == pytest.approx(weights_read / 68e9 * 1e3)
    assert plan.kv_cache_bytes == kv_bytes_per_token(d, 2) * 2048 * 2
    w4 = make_plan("janus-pro-1b", d, TARGETS["orin-nano-8gb"], "w4", 2048, 1)
    assert w4.kv_cache_bytes == kv_bytes_per_token(d, 4) * 2048 * 2, "calibrated exports keep the fp32 cache"


def test_precision_schemes():
    assert parse_precision("int8,w4").graph("vision_encoder") == "int8"
    assert parse_precision("int8,w4").graph("decoder") == "w4"
    assert parse_precision("w8").graph("vq_decoder") == "fp32"  # no word covers it: calibrate leaves it fp32
    assert parse_precision("w8,fp16").graph("vq_decoder") == "fp16"
    assert parse_precision("w4").graph("text_embedding") == "fp16"  # as calibrate makes it
    assert parse_precision("fp16").kv_dtype == "float16" and parse_precision("fp16,int8").kv_dtype == "float32"
    assert bytes_per_weight("w4") == 0.5 + 2 / 128
    from janus_edge.runtime.errors import RequestError
    with pytest.raises(RequestError):
        parse_precision("fp8,w4")


def test_7b_does_not_fit_orin_nx_in_fp16_and_a_fix_is_suggested():
    plan = make_plan("janus-pro-7b", MODELS["janus-pro-7b"], TARGETS["orin-nx-16gb"], "fp16", 2048, 1)
    assert not plan.fits and plan.total_bytes > 14.5 * GIB
    assert plan.suggestion.startswith("--precision")
    words = plan.suggestion.split()
    options = {"precision": "fp16", "context": "2048", "images": "1", **dict(zip(words[::2], words[1::2]))}
    options = {k.lstrip("-"): v for k, v in options.items()}
    assert make_plan("janus-pro-7b", MODELS["janus-pro-7b"], TARGETS["orin-nx-16gb"], options["precision"],
                     int(options["context"]), int(options["images"])).fits


def test_plan_cli_with_a_checkpoint_dir(tiny_original, tmp_path):
    result = run_cli("plan", "--model", tiny_original, "--target", "orin-nano-8gb", "--precision", "w4",
                     "--json", tmp_path / "plan.json", check_code=0)
    assert "FITS" in result.stdout and (tmp_path / "plan.json").is_file()


@pytest.mark.parametrize("target_name", ["orin-nano-8gb", "agx-orin-64gb", "thor", "datacenter"])
@pytest.mark.parametrize("fixture,precision", [("export_hf", "fp32"), ("export_fp16", "fp16")])
def test_plan_counts_the_kv_cache_the_backend_allocates(request, target_name, fixture, precision):
    """`plan`'s KV cache for a target equals what the ONNX Runtime backend allocates for that request (same rows,
    same context, the export's own KV dtype), for the tiny export's dimensions."""
    from janus_edge.runtime import JanusRuntime

    runtime = JanusRuntime.load(request.getfixturevalue(fixture))
    target = TARGETS[target_name]
    context = min(target.max_context, runtime.manifest.limits.max_context)
    plan = make_plan("tiny", runtime.manifest.model, target, precision, context, images=2)
    with runtime.backend.kv_decoder(4, capacity=context) as decoder:
        assert decoder.nbytes == plan.kv_cache_bytes
    assert runtime.manifest.kv_cache_bytes(4, context) == plan.kv_cache_bytes


@pytest.mark.parametrize("scheme", SCHEMES + ["fp32", "fp16-export"])
def test_plan_counts_each_graph_at_the_precision_calibrate_or_export_writes(request, calibrated, scheme):
    """`plan --precision P` and `calibrate --scheme P` (or `export --precision P`) mean the same export: plan's
    precision of every graph, and its KV dtype, equal what the command writes into the manifest."""
    from janus_edge.runtime.manifest import load_manifest

    sources = {"fp32": request.getfixturevalue("export_hf"), "fp16-export": request.getfixturevalue("export_fp16")}
    manifest = load_manifest(sources.get(scheme) or calibrated[scheme])
    plan = make_plan("tiny", manifest.model, TARGETS["datacenter"], manifest.precision, 1024, 1)
    assert plan.graph_precisions == {name: graph.precision for name, graph in manifest.graphs.items()}
    made_by_export = scheme in sources
    assert parse_precision(manifest.precision, calibrated=not made_by_export).kv_dtype == manifest.kv_dtype
    if scheme != "fp16":  # calibrate's fp16 keeps its source's fp32 cache; plan's fp16 is the fp16 export's
        assert plan.kv_dtype == manifest.kv_dtype
