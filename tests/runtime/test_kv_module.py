"""runtime/kv.py, the one KV module: every refusal of its rule table reached through the commands a user runs
(export, calibrate, loading with a GPU provider, build, plan) with the table's own message and fix, and its byte
counts against what the backends allocate."""

from __future__ import annotations

import json

import pytest

from janus_edge.runtime import JanusRuntime, kv
from janus_edge.runtime.errors import RequestError
from standin_env import standin_env


def _refusal(entry) -> RequestError:
    with pytest.raises(RequestError) as info:
        entry()
    return info.value


def _rule(name: str) -> kv.Rule:
    return next(rule for rule in kv.RULES if rule.name == name)


def _is(error: RequestError, name: str, **fields) -> None:
    rule = _rule(name)
    expected = rule.message.format(**{"form": None, "backend": None, "family": None, **fields})
    assert (error.message, error.hint) == (expected, rule.fix)


def _edited(source, tmp_path, edit):
    """`source` with its manifest edited (the other files linked, not copied)."""
    out = tmp_path / "edited"
    out.mkdir()
    for file in source.iterdir():
        if file.name != "janus_edge.json":
            (out / file.name).symlink_to(file)
    manifest = json.loads((source / "janus_edge.json").read_text())
    edit(manifest)
    (out / "janus_edge.json").write_text(json.dumps(manifest))
    return out


def test_export_refusals(tiny_hf, tmp_path):
    from janus_edge.export.exporter import export

    quiet = {"log": lambda message: None}
    _is(_refusal(lambda: export(tiny_hf, tmp_path / "a", kv_form="paged", **quiet)), "unknown_form", form="paged")
    _is(_refusal(lambda: export(tiny_hf, tmp_path / "b", "fp16", kv_form="ort_gqa", **quiet)), "gqa_fp16",
        form="ort_gqa")
    flow = tmp_path / "janusflow"  # decided from the checkpoint's config, before any weight is read
    flow.mkdir()
    (flow / "config.json").write_text(json.dumps({"vision_gen_enc_config": {}}))
    _is(_refusal(lambda: export(flow, tmp_path / "c", kv_form="ort_gqa", **quiet)), "family_form", form="ort_gqa",
        family="janusflow")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_calibrate_refusals(export_hf, export_gqa, tmp_path):
    from janus_edge.calibration.calibrate import calibrate

    quiet = {"log": lambda message: None}
    _is(_refusal(lambda: calibrate(export_hf, tmp_path / "a", "kv8", **quiet)), "kv8_in_place", form="in_place")
    _is(_refusal(lambda: calibrate(export_gqa, tmp_path / "b", "fp16,w4", **quiet)), "gqa_fp16", form="ort_gqa")
    _is(_refusal(lambda: calibrate(export_gqa, tmp_path / "c", "fp16,kv8", **quiet)), "kv8_fp16")
    flow = _edited(export_hf, tmp_path, lambda m: m["model"].update(family="janusflow"))
    _is(_refusal(lambda: calibrate(flow, tmp_path / "d", "w4,kv8", **quiet)), "family_kv8", form="in_place",
        family="janusflow")
    assert not any((tmp_path / name).exists() for name in "abcd")


@pytest.mark.parametrize("providers", [["cuda"], ["CUDAExecutionProvider"], [("TensorrtExecutionProvider", {})]])
def test_gpu_providers_refuse_the_ort_gqa_form_when_loading(export_gqa, providers):
    """Before a session is built, and whether or not onnxruntime-gpu is installed (it is not, here)."""
    _is(_refusal(lambda: JanusRuntime.load(export_gqa, providers=providers)), "gqa_gpu", form="ort_gqa")


def test_build_refuses_the_ort_gqa_form(export_gqa, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "janus_edge", "build", str(export_gqa), str(tmp_path / "engines"),
                             "--target", "datacenter"], capture_output=True, text=True, timeout=600,
                            env=standin_env())
    rule = _rule("gqa_tensorrt")
    assert result.returncode == 2 and f"{rule.message}; fix: {rule.fix}" in result.stderr, result.stderr


def test_plan_refuses_kv8_with_fp16():
    from janus_edge.export.tensorrt.targets import TARGETS
    from janus_edge.plan import MODELS, make_plan

    _is(_refusal(lambda: make_plan("janus-pro-1b", MODELS["janus-pro-1b"], TARGETS["orin-nano-8gb"], "fp16,kv8",
                                   2048, 1)), "kv8_fp16")


def test_plan_refuses_kv8_on_tensorrt():
    from janus_edge.export.tensorrt.targets import TARGETS
    from janus_edge.plan import MODELS, make_plan

    _is(_refusal(lambda: make_plan("janus-pro-1b", MODELS["janus-pro-1b"], TARGETS["orin-nano-8gb"], "w4,kv8",
                                   2048, 1)), "kv8_tensorrt")


def test_every_rule_has_its_entry_point_test():
    """The rule table and the tests above name the same refusals (a new rule needs a test through a command)."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    assert all(f'"{rule.name}"' in source.split("def test_every_rule_has")[0] for rule in kv.RULES)
    assert len({rule.name for rule in kv.RULES}) == len(kv.RULES)


def test_what_each_form_writes():
    assert (kv.kv_form("in_place").output("0.key"), kv.kv_form("ort_gqa").output("0.key")) == \
        ("new_key_values.0.key", "present_key_values.0.key")
    assert kv.cache_tensors("ort_gqa", ["0.key"]) == {"past_key_values.0.key", "present_key_values.0.key"}
    assert kv.kv_names(2) == ["0.key", "0.value", "1.key", "1.value"]


def test_bytes_are_what_the_decoders_allocate(runtime, export_fp16):
    """One formula: a cache of rows x capacity is the per-position bytes times both, the host decoder holds
    exactly that, and an fp16 cache half of it."""
    model = runtime.manifest.model
    per_position = kv.bytes_per_position(model, "float32")
    assert per_position == 2 * model.num_layers * model.num_kv_heads * model.head_dim * 4
    assert kv.cache_bytes(model, "float32", 3, 128) == per_position * 3 * 128
    assert kv.spare_bytes(model, "float32", 3, 128) * 2 * model.num_layers == kv.cache_bytes(model, "float32", 3, 128)
    with runtime.backend.kv_decoder(3, capacity=128) as decoder:
        assert decoder.nbytes == kv.cache_bytes(model, runtime.manifest.kv_dtype, 3, 128)
    half = JanusRuntime.load(export_fp16)
    with half.backend.kv_decoder(3, capacity=128) as decoder:
        assert 2 * decoder.nbytes == kv.cache_bytes(model, "float32", 3, 128)
    io = kv.decode_io_bytes(model, "float16", 2, 128)
    assert io["new_key_values.0.key"] == kv.tensor_bytes(model, "float16", 2, 1)
    assert io["attention_mask"] == 2 * 129 * 8 and len(io) == 4 + len(model.kv_names)
