"""`plan` arithmetic against hand-computed numbers and against transformers' real modules (on the meta device)."""

from __future__ import annotations

import pytest
import torch

from calibration_schemes import SCHEMES
from cli_helpers import run_cli
from janus_edge.export.configs import janus_config
from janus_edge.export.families import graph_parameters
from janus_edge.export.precision import parse_precision
from janus_edge.export.tensorrt.targets import GIB, TARGETS
from janus_edge.plan import MODELS, bytes_per_weight, make_plan
from janus_edge.runtime.kv import bytes_per_position


def _kv_token(d, dtype: str) -> int:
    return bytes_per_position(d, dtype)


def test_decoder_and_kv_by_hand():
    # 1B: 24 layers x (4 x 2048^2 attention + 3 x 2048 x 5632 MLP + 2 x 2048 norms) + 2048 final norm
    assert graph_parameters(MODELS["janus-pro-1b"])["decoder"] == 24 * (4 * 2048**2 + 3 * 2048 * 5632 + 2 * 2048) + 2048
    assert graph_parameters(MODELS["janus-pro-7b"])["decoder"] == 30 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096) \
        + 4096
    assert graph_parameters(MODELS["janus-pro-1b"])["lm_head"] == 102400 * 2048
    assert _kv_token(MODELS["janus-pro-1b"], "float16") == 192 * 1024  # 192 KiB per token in fp16
    assert _kv_token(MODELS["janus-pro-7b"], "float16") == 480 * 1024


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
    weights_read = (p["decoder"] + p["lm_head"]) * 2 + _kv_token(d, "float16") * 1024
    assert plan.decode_floor_ms["understanding_b1"] == pytest.approx(weights_read / 68e9 * 1e3)
    assert plan.kv_cache_bytes == _kv_token(d, "float16") * 2048 * 2
    w4 = make_plan("janus-pro-1b", d, TARGETS["orin-nano-8gb"], "w4", 2048, 1)
    assert w4.kv_cache_bytes == _kv_token(d, "float32") * 2048 * 2, "w4 alone computes, and caches, in fp32"


def test_precision_schemes():
    assert parse_precision("int8,w4").graph("vision_encoder") == "int8"
    assert parse_precision("int8,w4").graph("decoder") == "w4"
    assert parse_precision("w8").graph("vq_decoder") == "fp32"  # no word covers it: calibrate leaves it fp32
    assert parse_precision("w8,fp16").graph("vq_decoder") == "fp16"
    assert parse_precision("w4").graph("text_embedding") == "fp16"  # as calibrate makes it
    kv = {text: parse_precision(text).kv_dtype for text in ("fp16", "fp16,int8", "fp16,w4", "w4", "int8,w4", "w4,kv8")}
    assert kv == {"fp16": "float16", "fp16,int8": "float16", "fp16,w4": "float16", "w4": "float32",
                  "int8,w4": "float32", "w4,kv8": "int8"}  # the cache follows the decoder's activations
    assert bytes_per_weight("w4") == 0.5 + 2 / 128
    from janus_edge.runtime.errors import RequestError
    for bad in ("fp8,w4", "fp16,kv8", "w8,w4"):
        with pytest.raises(RequestError):
            parse_precision(bad)


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
    assert parse_precision(manifest.precision).kv_dtype == manifest.kv_dtype == plan.kv_dtype


@pytest.mark.parametrize("preset", ["tiny", "janusflow-1.3b"])
def test_janusflow_parameter_counts_equal_the_modules(preset, tmp_path):
    """plan's count of every JanusFlow graph equals our modules in DeepSeek's layout (checked against its
    state-dict in test_janusflow) and diffusers' VAE decode path, built on the meta device from the preset."""
    from diffusers import AutoencoderKL

    from janus_edge.export.janusflow.checkpoint import flow_config
    from janus_edge.export.janusflow.model import JanusFlowModel
    from janus_edge.export.janusflow.presets import config_json, model_info, vae_config
    from janus_edge.export.tiny_tokenizer import build_tokenizer

    build_tokenizer().save(str(tmp_path / "tokenizer.json"))
    vocab = 1024 if preset == "tiny" else 102400
    with torch.device("meta"):
        model = JanusFlowModel(flow_config(config_json(preset, vocab), tmp_path))
        vae = AutoencoderKL(**vae_config(preset))
    count = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    llm = model.language_model
    expected = {"vision_encoder": count(model.vision_und_enc_model, model.vision_und_enc_aligner),
                "text_embedding": count(llm.model.embed_tokens) + model.beg_of_und_embed.numel(),
                "decoder": count(llm.model) - count(llm.model.embed_tokens), "lm_head": count(llm.lm_head),
                "flow_encoder": count(model.vision_gen_enc_model, model.vision_gen_enc_aligner),
                "flow_decoder": count(model.vision_gen_dec_model, model.vision_gen_dec_aligner_norm,
                                      model.vision_gen_dec_aligner),
                "vae_decoder": count(vae.decoder, vae.post_quant_conv)}
    assert graph_parameters(model_info(preset, vocab)) == expected


def test_janusflow_step_is_compute_bound_and_janus_pro_decode_bandwidth_bound_on_a_datacenter_gpu():
    """The floor is the larger of bytes / bandwidth and FLOPs / datasheet peak: a JanusFlow step (577 positions x 2
    rows) is compute-bound on an H100-class target, Janus-Pro's one-position decode memory-bound."""
    from janus_edge.export.families import graph_parameters as params

    target = TARGETS["datacenter"]
    flow = make_plan("janusflow-1.3b", MODELS["janusflow-1.3b"], target, "fp16", 4096, 1)
    pro = make_plan("janus-pro-1b", MODELS["janus-pro-1b"], target, "fp16", 4096, 1)
    assert flow.image_bound == "compute" and pro.image_bound == "bandwidth"
    for plan in (flow, pro):
        assert plan.image_floor_s == max(plan.image_floors_s.values())
    f = flow.flow
    assert f["flow_tokens"] == 577 and f["rows"] == 2 and flow.image_steps == 30
    assert f["step_compute_floor_ms"] > f["step_bandwidth_floor_ms"]
    llm = 2 * params(MODELS["janusflow-1.3b"])["decoder"] * 577 * 2
    assert llm < f["step_flops"] < 1.3 * llm  # "about 2 x params x 577 x 2", plus attention and the flow graphs
    assert f["step_compute_floor_ms"] >= llm / 989.5e12 * 1e3
    assert f["step_bandwidth_floor_ms"] * 1e-3 * 3350e9 >= 2 * params(MODELS["janusflow-1.3b"])["decoder"]


def test_a_speculative_window_counts_the_verify_pass_and_its_floor():
    """`window` adds the verify pass's step buffers (W positions per row) and the head's logits for every position
    (rows x W x codebook x 4) to the plain plan, nothing else; its pass floor is one step's while W x C stays under
    B (the bandwidth floor) and W x C after (`pass_floors_s`, which bench models with); JanusFlow and a window
    outside 1..MAX_WINDOW are refused."""
    from janus_edge.export.tensorrt.targets import TARGETS as targets
    from janus_edge.plan import format_plan, pass_floors_s
    from janus_edge.runtime.backends.trt_decoder import step_io_bytes
    from janus_edge.runtime.errors import RequestError
    from janus_edge.runtime.pipelines.speculative import MAX_WINDOW

    d, target = MODELS["janus-pro-1b"], targets["orin-nano-8gb"]
    plain = make_plan("janus-pro-1b", d, target, "int8,w4,fp16", 1024, 1)
    for window in (1, 16, MAX_WINDOW):
        wide = make_plan("janus-pro-1b", d, target, "int8,w4,fp16", 1024, 1, window=window)
        rows, capacity = 2, 1024
        extra_io = sum(step_io_bytes(d, plain.kv_dtype, rows, capacity, window).values()) \
            - sum(step_io_bytes(d, plain.kv_dtype, rows, capacity).values())
        assert wide.runtime_buffers_bytes - plain.runtime_buffers_bytes == extra_io
        assert wide.activation_bytes - plain.activation_bytes == rows * (window - 1) * d.codebook_size * 4
        assert wide.total_bytes - plain.total_bytes == pytest.approx(extra_io + rows * (window - 1)
                                                                      * d.codebook_size * 4)
        assert wide.kv_cache_bytes == plain.kv_cache_bytes and wide.prefill_bytes == plain.prefill_bytes
        s = wide.speculative
        bandwidth, compute = (plain.image_floors_s[k] / d.num_image_tokens for k in ("bandwidth", "compute"))
        assert s["one_token_step_ms"] == pytest.approx(max(bandwidth, compute) * 1e3)
        assert s["pass_ms"] == pytest.approx(max(bandwidth, window * compute) * 1e3)
        assert s["free_window"] == pytest.approx(bandwidth / compute)
        assert (s["pass_ms"] == s["one_token_step_ms"]) == (window * compute <= bandwidth)
        assert f"speculative verify pass ({window} positions x 2 rows)" in format_plan(wide)
    assert plain.speculative == {} and "speculative" not in format_plan(plain)
    assert 16 < make_plan("janus-pro-1b", d, target, "int8,w4,fp16", 1024, 1, window=16).speculative[
        "free_window"] < MAX_WINDOW  # on the Orin Nano a 16-wide pass is free, a 64-wide one is not
    assert pass_floors_s(plain.image_floors_s, d.num_image_tokens, 16)[1] * 1e3 == pytest.approx(
        make_plan("janus-pro-1b", d, target, "int8,w4,fp16", 1024, 1, window=16).speculative["pass_ms"])
    for bad in (0, MAX_WINDOW + 1):
        with pytest.raises(RequestError, match=f"window of {bad}"):
            make_plan("janus-pro-1b", d, target, "int8,w4,fp16", 1024, 1, window=bad)
    with pytest.raises(RequestError, match="JanusFlow"):
        make_plan("janusflow-1.3b", MODELS["janusflow-1.3b"], target, "fp16", 1024, 1, window=16)


def test_plan_cli_knows_janusflow(tmp_path):
    result = run_cli("plan", "--model", "janusflow-1.3b", "--target", "orin-nano-8gb", "--precision", "fp16",
                     "--json", tmp_path / "plan.json", check_code=0)
    assert "weights flow_decoder" in result.stdout and "weights vae_decoder" in result.stdout
    assert "flow step (577 positions x 2 rows" in result.stdout and "-bound" in result.stdout
    import json

    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["graph_precisions"]["vae_decoder"] == plan["graph_precisions"]["flow_encoder"] == "fp32"
    assert plan["graph_precisions"]["decoder"] == "fp16" and plan["image_steps"] == 30


@pytest.fixture(scope="module")
def small_engines(small_standin_engines):
    """Stand-in engines built for 1 image and a 1024-token context: the session's (tests/conftest.py)."""
    return small_standin_engines


def test_build_records_each_engines_device_memory(small_engines):
    import json

    from standin_env import standin_imports

    recorded = json.loads((small_engines / "janus_edge_engines.json").read_text())
    assert recorded["schema_version"] == 2 and recorded["build_options"]["max_batch"] == 2
    assert recorded["build_options"]["max_context"] == 1024
    with standin_imports():
        import tensorrt as trt

        for name, info in recorded["engines"].items():
            plan = (small_engines / info["file"]).read_bytes()
            engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
            assert info["engine_bytes"] == len(plan)
            assert info["device_memory_bytes"] == engine.device_memory_size_v2
            assert info["profile_device_memory_bytes"] == [engine.get_device_memory_size_for_profile_v2(i)
                                                           for i in range(engine.num_optimization_profiles)]
    decoder = recorded["engines"]["decoder"]
    assert decoder["profiles"][0]["inputs_embeds"][2][:2] == [2, 1024]  # the --images/--context it was built for


def test_plan_of_an_engine_directory_reads_what_build_recorded(small_engines, tmp_path):
    import json

    from janus_edge.plan import plan_engines

    result = run_cli("plan", "--model", small_engines, "--images", "1", "--context", "700", "--json",
                     tmp_path / "plan.json", check_code=0)
    for line in ("engine decoder", "engines (weights) total", "contexts (shared scratch)", "KV cache",
                 "prefill buffers", "pinned host staging", "build peak"):
        assert line in result.stdout, result.stdout
    written = json.loads((tmp_path / "plan.json").read_text())
    recorded = json.loads((small_engines / "janus_edge_engines.json").read_text())["engines"]
    assert written["source"] == "engines" and written["target"] == "datacenter"
    assert written["weights_bytes"] == {name: info["engine_bytes"] for name, info in recorded.items()}
    assert written["activation_bytes"] == max(info["device_memory_bytes"] for info in recorded.values())
    plan = plan_engines(small_engines, 1, 700)
    assert set(plan.requests) == {"understanding", "generation"} and plan.total_bytes == written["total_bytes"]
    too_many = run_cli("plan", "--model", small_engines, "--images", "2")
    assert too_many.returncode == 2 and too_many.stderr.count("\n") == 1 and "--images 2" in too_many.stderr


def test_build_refuses_a_target_that_cannot_hold_its_peak(export_hf):
    import dataclasses

    from janus_edge.export.tensorrt.build import check_build_memory
    from janus_edge.runtime.errors import RequestError
    from janus_edge.runtime.manifest import load_manifest

    manifest = load_manifest(export_hf)
    check_build_memory(export_hf, manifest, TARGETS["orin-nano-8gb"])
    tiny = dataclasses.replace(TARGETS["orin-nano-8gb"], memory_gib=2.0)  # 0.5 GiB usable: under the 1 GiB workspace
    with pytest.raises(RequestError) as refused:
        check_build_memory(export_hf, manifest, tiny)
    assert "\n" not in str(refused.value) and "workspace" in str(refused.value) and refused.value.hint
