"""Checkpoint loading in both formats, and the clear errors bad model directories get."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from cli_helpers import run_cli
from janus_edge.export import original_format
from janus_edge.export.checkpoint import load_checkpoint
from janus_edge.runtime.errors import CheckpointError


def test_both_formats_load_the_same_weights(tiny_hf, tiny_original):
    hf, original = load_checkpoint(tiny_hf), load_checkpoint(tiny_original)
    assert (hf.source_format, original.source_format) == ("hf", "original")
    a, b = hf.model.state_dict(), original.model.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_original_checkpoint_has_the_released_layout(tiny_original):
    names = {p.name for p in tiny_original.iterdir()}
    assert {"config.json", "pytorch_model.bin", "tokenizer.json", "processor_config.json",
            "preprocessor_config.json", "special_tokens_map.json", "tokenizer_config.json"} <= names
    state = torch.load(tiny_original / "pytorch_model.bin", weights_only=True)
    assert "vision_model.vision_tower.blocks.0.attn.qkv.weight" in state
    assert state["vision_model.vision_tower.pos_embed"].shape[:2] == (1, 576)
    assert "gen_head.output_mlp_projector.weight" in state and "language_model.lm_head.weight" in state
    assert json.loads((tiny_original / "config.json").read_text())["model_type"] == "multi_modality"


def test_sharded_safetensors_load(tmp_path, tiny_hf):
    from janus_edge.export.tiny import write_checkpoint

    sharded = write_checkpoint(tmp_path / "sharded", "hf", seed=0, max_shard_size="4MB")
    assert (sharded / "model.safetensors.index.json").is_file()
    a, b = load_checkpoint(sharded).model.state_dict(), load_checkpoint(tiny_hf).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("size, hidden, layers", [("1b", 2048, 24), ("7b", 4096, 30)])
def test_released_original_configs_map_to_the_real_shapes(tmp_path, tiny_original, size, hidden, layers):
    """The original Janus-Pro config.json (as published) gives the real architecture, with no shape keys."""
    language = {"max_position_embeddings": 16384, "model_type": "llama", "num_hidden_layers": layers,
                "torch_dtype": "bfloat16", "vocab_size": 102400}
    if size == "1b":
        language.update(hidden_size=2048, intermediate_size=5632, num_attention_heads=16, num_key_value_heads=16)
    config_json = {
        "aligner_config": {"cls": "MlpProjector", "params": {"depth": 2, "input_dim": 1024, "n_embed": hidden,
                                                             "projector_type": "mlp_gelu"}},
        "gen_aligner_config": {"cls": "MlpProjector", "params": {"depth": 2, "input_dim": 8, "n_embed": hidden,
                                                                 "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "params": {"image_token_embed": hidden, "image_token_size": 16384,
                                                             "n_embed": hidden}},
        "gen_vision_config": {"cls": "VQ-16", "params": {"image_token_size": 16384, "n_embed": 8}},
        "language_config": language, "model_type": "multi_modality",
        "vision_config": {"cls": "CLIPVisionTower", "params": {"image_size": 384, "model_name":
                                                               "siglip_large_patch16_384", "select_feature": "same",
                                                               "select_layer": -1}}}
    for name in ("tokenizer.json", "special_tokens_map.json"):
        shutil.copy(tiny_original / name, tmp_path / name)
    config = original_format.config_from_original(config_json, tmp_path, {"language_model.lm_head.weight": None})
    text, vision, vq = config.text_config, config.vision_config, config.vq_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (hidden, layers, hidden // 128)
    assert text.intermediate_size == {"1b": 5632, "7b": 11008}[size]
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (1024, 24, 16)
    assert (vq.base_channels, list(vq.channel_multiplier), vq.latent_channels) == (128, [1, 1, 2, 2, 4], 256)
    assert not config.tie_word_embeddings


def test_name_mapping_round_trips(reference):
    state = reference.state_dict()
    original = original_format.state_dict_to_original(state, reference.config.vision_config.hidden_size)
    back = original_format.state_dict_to_hf(original)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _no_config(d):
    (d / "config.json").unlink()


def _truncate_safetensors(d):
    path = d / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _unknown_model_type(d):
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "llava"
    (d / "config.json").write_text(json.dumps(config))


def _pickle_not_state_dict(d):
    torch.save([1, 2, 3], d / "pytorch_model.bin")


def _arbitrary_pickle(d):
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(shutil.copy))


def _shapes_disagree(d):
    config = json.loads((d / "config.json").read_text())
    config["text_config"]["hidden_size"] = 96
    (d / "config.json").write_text(json.dumps(config))


BAD = [("hf", _no_config, "config.json is missing"),
       ("hf", _truncate_safetensors, "cannot be read as safetensors"),
       ("hf", _unknown_model_type, "model_type 'llava'"),
       ("original", _pickle_not_state_dict, "not a state dict"),
       ("original", _arbitrary_pickle, "weights_only=True"),
       ("hf", _shapes_disagree, "do not match its config.json")]


@pytest.mark.parametrize("fmt, damage, message", BAD, ids=[b[1].__name__.strip("_") for b in BAD])
def test_bad_checkpoints_give_one_clear_error(tmp_path, tiny_hf, tiny_original, fmt, damage, message):
    model_dir = _copy(tiny_hf if fmt == "hf" else tiny_original, tmp_path / "model")
    damage(model_dir)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        load_checkpoint(model_dir)
    out = tmp_path / "export"
    result = run_cli("export", model_dir, out)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".export*")), "a failed export left files behind"
