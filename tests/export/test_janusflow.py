"""JanusFlow: DeepSeek's layout loads, every graph matches the PyTorch reference, understanding and the 30-step
rectified flow chained by the runtime reproduce DeepSeek's recipe, and bad inputs fail in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from janus_edge.runtime.errors import RequestError

from cli_helpers import run_cli


@pytest.fixture(scope="session")
def flow_reference(flow_dir):
    from janus_edge.export.checkpoint import load_checkpoint

    return load_checkpoint(flow_dir, vae=flow_dir / "vae")


def test_checkpoint_has_deepseeks_module_names_and_shapes(flow_dir):
    """Names and shapes as DeepSeek's modeling_vlm.py and uvit.py define them (tiny widths: D 64, C 32, SigLIP 32)."""
    from safetensors.torch import load_file

    state = load_file(str(flow_dir / "model.safetensors"))
    assert {k.split(".")[0] for k in state} == {
        "vision_und_enc_model", "vision_und_enc_aligner", "beg_of_und_embed", "vision_gen_enc_model",
        "vision_gen_enc_aligner", "vision_gen_dec_model", "language_model", "vision_gen_dec_aligner_norm",
        "vision_gen_dec_aligner"}
    from tokenizers import Tokenizer

    d, c, w = 64, 32, 32
    vocab = state["language_model.model.embed_tokens.weight"].shape[0]
    assert vocab >= Tokenizer.from_file(str(flow_dir / "tokenizer.json")).get_vocab_size()
    expected = {
        "beg_of_und_embed": (1, d), "vision_und_enc_aligner.weight": (d, w),
        "vision_und_enc_model.vision_tower.patch_embed.proj.weight": (w, 3, 16, 16),
        "vision_und_enc_model.vision_tower.pos_embed": (1, 576, w),
        "vision_und_enc_model.vision_tower.blocks.1.attn.qkv.weight": (3 * w, w),
        "vision_und_enc_model.vision_tower.attn_pool.kv.weight": (2 * w, w),
        "vision_gen_enc_model.time_embed.linear_1.weight": (d, c), "vision_gen_enc_model.in_conv.weight": (c, 4, 2, 2),
        "vision_gen_enc_model.mid_block.res_blocks.1.depthwise.weight": (c, 1, 7, 7),
        "vision_gen_enc_model.mid_block.res_blocks.0.channelwise_norm.weight": (1, 1, 1, 4 * c),
        "vision_gen_enc_model.mid_block.res_blocks.0.cond_embeds_mapper.weight": (2 * c, d),
        "vision_gen_enc_aligner.weight": (d, c), "vision_gen_dec_aligner_norm.weight": (d,),
        "vision_gen_dec_aligner.weight": (c, d), "vision_gen_dec_model.input_norm.weight": (c,),
        "vision_gen_dec_model.mid_block.res_blocks.1.channelwise_linear_1.weight": (8 * c, 2 * c),
        "vision_gen_dec_model.out_convs.0.norm.weight": (2 * c,),
        "vision_gen_dec_model.out_convs.0.unpatch_conv.weight": (16, 2 * c, 1, 1),
        "language_model.model.layers.1.self_attn.q_proj.weight": (d, d), "language_model.lm_head.weight": (vocab, d),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected


def test_every_graph_matches_the_reference(flow_dir, flow_export):
    from janus_edge.export.compare import compare, format_table

    rows = compare(flow_dir, flow_export, vae=flow_dir / "vae")
    assert {r.graph for r in rows} == {"vision_encoder", "text_embedding", "decoder", "lm_head", "flow_encoder",
                                       "flow_decoder", "vae_decoder"}
    assert all(r.ok for r in rows), format_table(rows)
    assert max(r.max_abs for r in rows) <= 1e-4


def test_understanding_greedy_tokens_equal_deepseeks_recipe(flow_runtime, flow_reference):
    image = Image.fromarray(data.astronaut()).resize((300, 180))
    answer = flow_runtime.understand([image], "What is in this picture?", max_new_tokens=16)

    from janus_edge.runtime import Turn
    from janus_edge.runtime.images import load_image, preprocess

    ids = flow_runtime.prompts.understanding([Turn("What is in this picture?", [image])])
    text, tokens = flow_runtime.tokenizer.decode(ids), flow_runtime.manifest.tokens
    assert "\n\nUser: " in text and text.endswith("\n\nAssistant:")  # JanusFlow's plain roles
    assert ids.count(tokens.image) == 576 and ids[ids.index(tokens.image_start) + 1] == tokens.image
    input_ids = torch.tensor([ids])
    pixels = torch.from_numpy(preprocess(load_image(image), flow_runtime.manifest.preprocessing))[None, None]
    model = flow_reference.model
    with torch.no_grad():  # DeepSeek's prepare_inputs_embeds, then the LLM's own greedy generate()
        embeds = model.prepare_inputs_embeds(input_ids, pixels, (input_ids == tokens.image) |
                                             (input_ids == tokens.image_start), torch.ones(1, 1, 577, dtype=bool))
        expected = model.language_model.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(input_ids),
                                                 max_new_tokens=16, do_sample=False, eos_token_id=tokens.eos,
                                                 pad_token_id=tokens.eos)[0].tolist()
    expected = expected[: expected.index(tokens.eos) + 1] if tokens.eos in expected else expected
    assert answer.token_ids == expected
    assert len(set(answer.token_ids)) > 3


def test_30_step_flow_equals_deepseeks_recipe(flow_runtime, flow_reference):
    from janus_edge.export.janusflow import reference
    from janus_edge.runtime.images import to_uint8

    prompt = "A watercolor landscape with mountains and a lake."
    noise = np.random.default_rng(3).standard_normal((1, 4, 48, 48), dtype=np.float32)
    steps = []
    result = flow_runtime.generate_images(prompt, initial_latents=noise, progress=lambda s, t: steps.append(s))
    assert steps == list(range(1, 31)) and result.images[0].size == (384, 384)
    latents, pixels = reference.generate(flow_reference.model, flow_reference.vae,
                                         flow_runtime.prompts.generation(prompt), flow_runtime.manifest.tokens.pad,
                                         torch.from_numpy(noise))
    assert np.abs(result.latents - latents.numpy()).max() <= 1e-3
    assert np.abs(result.latents - noise).max() > 0.5, "the flow should move the latent"
    diff = np.abs(to_uint8(result.pixels).astype(int) - to_uint8(pixels.numpy()).astype(int))
    assert diff.max() <= 2


def test_schedule_rounding_is_torchs_bfloat16():
    from janus_edge.runtime.pipelines.flow import round_to

    values = np.array([k / 30 * 1000.0 for k in range(30)] + [1 / 30, 1 / 7, 0.5, 999.9], dtype=np.float32)
    expected = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(round_to(values, "bfloat16"), expected)
    assert round_to(np.float32(1 / 30), "bfloat16") == np.float32(0.033447265625)


def test_guidance_and_seed_steer_the_flow(flow_runtime):
    a = flow_runtime.generate_images("a cat", n=1, seed=5, steps=3)
    b = flow_runtime.generate_images("a cat", n=1, seed=5, steps=3)
    c = flow_runtime.generate_images("a cat", n=1, seed=5, steps=3, cfg_weight=1.0)
    np.testing.assert_array_equal(a.latents, b.latents)
    assert np.abs(a.latents - c.latents).max() > 1e-3, "the prompt (through CFG) should change the velocity"


def test_generate_cli_with_initial_latents(flow_runtime, flow_export, tmp_path):
    noise = np.random.default_rng(1).standard_normal((2, 4, 48, 48), dtype=np.float32)
    np.save(tmp_path / "z.npy", noise)
    run_cli("generate", flow_export, "--prompt", "a red rocket", "--initial-latents", tmp_path / "z.npy",
            "--steps", "2", "--out", tmp_path / "images", check_code=0)
    expected = flow_runtime.generate_images("a red rocket", initial_latents=noise, steps=2)
    saved = np.asarray(Image.open(tmp_path / "images" / "image_1.png"))
    np.testing.assert_array_equal(saved, np.asarray(expected.images[1]))


def test_bad_flow_requests_are_user_errors(flow_runtime):
    with pytest.raises(RequestError, match="initial latents have shape"):
        flow_runtime.generate_images("a cat", initial_latents=np.zeros((1, 4, 32, 32), np.float32))
    with pytest.raises(RequestError, match="do not apply to JanusFlow"):
        flow_runtime.generate_images("a cat", temperature=0.5)
    with pytest.raises(RequestError, match="steps"):
        flow_runtime.generate_images("a cat", n=1, steps=0)


def _one_line_error(result, text: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("janus-edge export: error:") and text in lines[0], result.stderr


def test_export_without_vae_fails_in_one_line(flow_dir, tmp_path):
    _one_line_error(run_cli("export", flow_dir, tmp_path / "out"), "needs the SDXL VAE")


def test_export_with_a_vae_of_another_latent_fails_in_one_line(flow_dir, tmp_path):
    vae = tmp_path / "vae16"
    shutil.copytree(flow_dir / "vae", vae)
    config = json.loads((vae / "config.json").read_text())
    config["latent_channels"] = 16
    (vae / "config.json").write_text(json.dumps(config))
    _one_line_error(run_cli("export", flow_dir, tmp_path / "out", "--vae", vae), "16-channel latents")


def test_checkpoint_missing_a_module_fails_in_one_line(flow_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(flow_dir, broken)
    state = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("vision_gen_dec_model.")},
              str(broken / "model.safetensors"))
    _one_line_error(run_cli("export", broken, tmp_path / "out", "--vae", broken / "vae"),
                    "no module vision_gen_dec_model")


def test_check_trt_accepts_every_graph(flow_export):
    from janus_edge.export.tensorrt.check import check_export

    assert [f for f in check_export(flow_export) if f.severity == "error"] == []


def test_flow_on_the_bound_kv_decoder_matches_the_host_one(flow_export):
    from janus_edge.runtime import JanusRuntime

    noise = np.random.default_rng(0).standard_normal((1, 4, 48, 48), dtype=np.float32)
    host = JanusRuntime.load(flow_export).generate_images("a cat", initial_latents=noise, steps=3)
    bound = JanusRuntime.load(flow_export, io_binding=True).generate_images("a cat", initial_latents=noise, steps=3)
    assert np.abs(host.latents - bound.latents).max() <= 1e-4


def test_fp16_export_keeps_time_embedding_and_vae_in_fp32(flow_dir, tmp_path):
    from janus_edge.export.compare import compare, format_table
    from janus_edge.export.exporter import export

    manifest = export(flow_dir, tmp_path / "fp16", precision="fp16", log=lambda m: None, vae=flow_dir / "vae")
    assert {n: g.precision for n, g in manifest.graphs.items() if g.precision == "fp32"} == \
        {"flow_encoder": "fp32", "vae_decoder": "fp32"}
    assert manifest.kv_dtype == "float16", "the cache follows the decoder's activations, as plan counts it"
    rows = compare(flow_dir, tmp_path / "fp16", vae=flow_dir / "vae")
    assert all(r.ok for r in rows), format_table(rows)


def test_trt_profiles_cover_the_flow_step_the_pipeline_runs(flow_runtime):
    from janus_edge.runtime.profiles import flow_profiles

    manifest = flow_runtime.manifest
    profiles = flow_profiles(manifest, manifest.limits.max_batch, manifest.limits.max_context)
    from janus_edge.runtime.kv import request_capacity

    prompt = len(flow_runtime.prompts.generation("a red fox in the snow")) - 1
    slots = request_capacity(prompt + 577, manifest.limits.max_context)
    used = {"decoder_flow_step": {"inputs_embeds": [2, 577, 64], "attention_mask": [2, slots + 577],
                                  "position_ids": [2, 577], "past_key_values.0.key": [2, 4, slots, 16]},
            "flow_encoder": {"latents": [2, 4, 48, 48], "timesteps": [2]},
            "flow_decoder": {"hidden_states": [2, 577, 64], "skip": [2, 32, 24, 24], "time_embedding": [2, 64]},
            "vae_decoder": {"latents": [1, 4, 48, 48]}}
    for graph, shapes in used.items():
        (profile,) = profiles[graph]
        for name, shape in shapes.items():
            low, opt, high = profile[name]
            assert all(lo <= o <= hi for lo, o, hi in zip(low, opt, high)), (graph, name)
            assert all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)), (graph, name, shape, profile[name])


def test_chat_keeps_its_cache_and_answers_as_understand_does(flow_runtime):
    from janus_edge.runtime import Turn

    image = Image.fromarray(data.coffee()).resize((200, 160))
    with flow_runtime.chat(max_new_tokens=8) as chat:
        first = chat.ask("What is in this picture?", [image])
        second = chat.ask("What colour is it?")
    history = [Turn("What is in this picture?", [image], first.text)]
    expected = flow_runtime.understand([], "What colour is it?", history=history, max_new_tokens=8)
    assert second.token_ids == expected.token_ids


@pytest.fixture(scope="module")
def flow_engines(tmp_path_factory, flow_export):
    from standin_env import build_standin_engines

    return build_standin_engines(flow_export, tmp_path_factory.mktemp("flow-standin"))


def test_standin_tensorrt_runs_janusflow_as_onnxruntime_does(flow_engines, flow_runtime):
    """On the TEST-ONLY TensorRT STAND-IN (tests/standin/: ONNX Runtime behind TensorRT's API, not a GPU): engines
    for every JanusFlow graph and no CFG sampler, greedy understanding tokens equal to ONNX Runtime's, and a 3-step
    flow from the same latents within float noise, its 577-token steps on the decoder's flow-step profile over the
    in-place device cache, rewound to the prompt after each step; every device buffer freed on close."""
    from standin_env import standin_imports

    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        engines = JanusRuntime.load(flow_engines)
        assert engines.backend.name == "tensorrt"
        assert set(engines.backend.engines.engines) == set(flow_runtime.manifest.graphs) | {"sampler"}
        image = Image.fromarray(data.astronaut()).resize((300, 180))
        expected = flow_runtime.understand([image], "What is in this picture?", max_new_tokens=12).token_ids
        assert engines.understand([image], "What is in this picture?", max_new_tokens=12).token_ids == expected
        noise = np.random.default_rng(5).standard_normal((1, 4, 48, 48), dtype=np.float32)
        reference = flow_runtime.generate_images("a red fox in the snow", initial_latents=noise, steps=3)
        result = engines.generate_images("a red fox in the snow", initial_latents=noise, steps=3)
        decoder = engines.backend.graph("decoder")
        assert decoder.profile == len(decoder.ranges) - 1 == 2  # the flow-step profile, appended last
        assert np.abs(reference.latents - noise).max() > 0.1  # the flow moved the latent
        np.testing.assert_allclose(result.latents, reference.latents, atol=1e-4)
        np.testing.assert_allclose(result.pixels, reference.pixels, atol=1e-4)
        engines.close()
        assert cudart.live_allocations() == {}


@pytest.mark.parametrize("target_name", ["orin-nano-8gb", "datacenter"])
def test_plan_counts_the_flow_request_the_backends_allocate(flow_engines, flow_runtime, target_name):
    """`plan`'s flow KV cache (a text prompt + 577 positions, 2 rows per image) equals what ONNX Runtime's decoder
    holds for that request, and with its runtime buffers what the TensorRT backend allocates on the stand-in."""
    from standin_env import standin_imports

    from janus_edge.export.tensorrt.targets import TARGETS
    from janus_edge.plan import make_plan

    manifest = flow_runtime.manifest
    target = TARGETS[target_name]
    context = min(target.max_context, manifest.limits.max_context)
    plan = make_plan("tiny", manifest.model, target, "fp32", context, images=1).flow
    assert plan["capacity"] < context  # sized for the flow request, not the whole context
    with flow_runtime.backend.kv_decoder(plan["rows"], plan["capacity"]) as decoder:
        assert decoder.nbytes == plan["kv_cache_bytes"] == manifest.kv_cache_bytes(plan["rows"], plan["capacity"])
    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        with JanusRuntime.load(flow_engines) as engines:
            engines.backend.graph("decoder")
            before = cudart.live_allocations()
            with engines.backend.kv_decoder(plan["rows"], plan["capacity"]):
                added = {p: n for p, n in cudart.live_allocations().items() if p not in before}
                assert sum(added.values()) == plan["kv_cache_bytes"] + plan["runtime_buffers_bytes"]


def test_bench_times_the_flow_step_and_30_step_images(flow_export, tmp_path):
    from janus_edge.bench import validate_report

    report_path = tmp_path / "bench.json"
    result = run_cli("bench", flow_export, "--runs", "1", "--warmup", "0", "--stages", "load,decode,images",
                     "--image-counts", "1", "--json", report_path, check_code=0)
    assert "flow_step" in result.stdout and "s/image n=1" in result.stdout
    report = json.loads(report_path.read_text())
    validate_report(report)
    (row,) = report["results"]
    assert not row["error"] and report["settings"]["flow_steps"] == 30
    assert "flow_step" in row["metrics"] and "decode_b1" in row["metrics"] and "decode_b2" not in row["metrics"]
    floor = row["floors"]["flow_step"]
    assert floor["rows"] == 2 and floor["positions"] == 577 and floor["bound"] in ("bandwidth", "compute")
    assert floor["kv_bytes"] == 2 * (floor["prompt"] + 577) * row["kv"]["bytes_per_position_per_row"]
    assert floor["weight_bytes"] == sum(row["weight_bytes"][g] for g in ("decoder", "flow_encoder", "flow_decoder"))
    assert floor["compute_floor_ms"] > 0 and floor["bandwidth_floor_ms"] > 0 and report["machine"]["gemm_gflops"] > 0
    (images,) = row["throughput"]["images"]
    assert images["n"] == 1 and images["images_per_minute"] == pytest.approx(60 / images["seconds_per_image"]["median"])


def test_plan_of_a_janusflow_engine_directory_states_its_understanding_request(flow_engines):
    """`plan --model ENGINE_DIR` on JanusFlow engines: the understanding request from the recorded figures (the
    flow request is planned from the preset), not a traceback over graphs JanusFlow does not have."""
    from janus_edge.plan import plan_engines
    from janus_edge.runtime.manifest import load_manifest

    context = load_manifest(flow_engines, verify=False).limits.max_context
    plan = plan_engines(flow_engines, 1, context)
    assert set(plan.requests) == {"understanding"} and plan.kv_cache_bytes > 0 and plan.total_bytes > 0
    result = run_cli("plan", "--model", flow_engines, check_code=0)
    assert "KV cache" in result.stdout and "Traceback" not in result.stderr
