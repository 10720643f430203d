"""DeepSeek's original checkpoint format (model_type "multi_modality") mapped onto transformers' Janus.

The original config names its vision tower and VQ model ("siglip_large_patch16_384", "VQ-16") instead of giving
their shapes; those shapes are the presets below. janus-edge's tiny checkpoints add the shape keys of those
presets (width/layers/heads/mlp_ratio, ch/ch_mult/z_channels/num_res_blocks) to the params so that a small model
can be written in the same layout; real checkpoints do not need them.

Weight names follow transformers' convert_janus_weights_to_hf.py: qkv split into q/k/v, pos_embed squeezed,
attn_pool and the VQ codebook-usage buffer dropped.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Callable

import torch

from janus_edge.runtime.errors import CheckpointError

from .components import IMAGE_SIZE, NUM_IMAGE_TOKENS, SIGLIP_L16_384, VQ_16

SIGLIP_PRESETS = {SIGLIP_L16_384.name: SIGLIP_L16_384.shape()}
VQ_PRESETS = {VQ_16.name: VQ_16.shape()}
# transformers 4.33's LlamaConfig defaults, which the original language_config relies on for unset keys.
LLAMA_DEFAULTS = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                  "max_position_embeddings": 2048, "vocab_size": 32000}

_VISION = r"vision_model\.vision_tower\."
_VQ = "gen_vision_model."
# (original regex, HF replacement), applied in order to each key; None drops the key.
_TO_HF = [
    (rf"^{_VISION}attn_pool\..*", None),
    (r"^gen_vision_model\.quantize\.codebook_used$", None),
    (rf"^{_VISION}patch_embed\.proj\.", "model.vision_model.embeddings.patch_embedding."),
    (rf"^{_VISION}pos_embed$", "model.vision_model.embeddings.position_embedding.weight"),
    (rf"^{_VISION}norm\.", "model.vision_model.post_layernorm."),
    (rf"^{_VISION}blocks\.(\d+)\.norm(\d)\.", r"model.vision_model.encoder.layers.\1.layer_norm\2."),
    (rf"^{_VISION}blocks\.(\d+)\.attn\.qkv\.", r"model.vision_model.encoder.layers.\1.self_attn.qkv."),
    (rf"^{_VISION}blocks\.(\d+)\.attn\.proj\.", r"model.vision_model.encoder.layers.\1.self_attn.projection_layer."),
    (rf"^{_VISION}blocks\.(\d+)\.mlp\.", r"model.vision_model.encoder.layers.\1.mlp."),
    (r"^aligner\.layers\.0\.", "model.aligner.fc1."),
    (r"^aligner\.layers\.2\.", "model.aligner.hidden_layers.0."),
    (r"^gen_aligner\.layers\.0\.", "model.generation_aligner.fc1."),
    (r"^gen_aligner\.layers\.2\.", "model.generation_aligner.hidden_layers.0."),
    (r"^gen_head\.output_mlp_projector\.", "model.generation_head.proj_out."),
    (r"^gen_head\.vision_head\.", "model.generation_head.vision_head."),
    (r"^gen_embed\.", "model.generation_embeddings."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^gen_vision_model\.", "model.vqmodel."),
]
_VQ_PARTS = [(r"\.encoder\.conv_blocks\.", ".encoder.down."), (r"\.decoder\.conv_blocks\.", ".decoder.up."),
             (r"\.res\.", ".block."), (r"\.mid\.0\.", ".mid.block_1."), (r"\.mid\.1\.", ".mid.attn_1."),
             (r"\.mid\.2\.", ".mid.block_2.")]


def hf_name(key: str) -> str | None:
    for pattern, replacement in _TO_HF:
        if re.match(pattern, key):
            if replacement is None:
                return None
            new = re.sub(pattern, replacement, key)
            if new.startswith("model.vqmodel."):
                for part, hf_part in _VQ_PARTS:
                    new = re.sub(part, hf_part, new)
            return new
    return key  # unknown keys pass through and are reported by the shape check


def hf_mapping(keys) -> dict[str, tuple[str, Callable]]:
    """HF name -> (original key, function making the HF tensor from the original one) for the original `keys`."""
    out: dict[str, tuple[str, Callable]] = {}
    for key in keys:
        name = hf_name(key)
        if name is None:
            continue
        if ".self_attn.qkv." in name:
            for i, part in enumerate(("q_proj", "k_proj", "v_proj")):
                out[name.replace("qkv", part)] = (key, functools.partial(_third, i))
        elif name.endswith("position_embedding.weight"):
            out[name] = (key, _squeezed)
        else:
            out[name] = (key, _same)
    return out


def state_dict_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: change(state[key]).contiguous() for name, (key, change) in hf_mapping(state).items()}


def _third(i: int, tensor: torch.Tensor) -> torch.Tensor:
    return torch.chunk(tensor, 3, dim=0)[i]


def _squeezed(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.squeeze(0) if tensor.dim() == 3 else tensor


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def original_name(hf_key: str) -> str:
    """The inverse of `hf_name` for every key transformers' Janus has (q/k/v are merged by the caller)."""
    key = hf_key
    for part, hf_part in _VQ_PARTS:
        key = key.replace(hf_part, part.replace("\\", ""))
    fixed = [("model.vision_model.embeddings.patch_embedding.", "vision_model.vision_tower.patch_embed.proj."),
             ("model.vision_model.embeddings.position_embedding.weight", "vision_model.vision_tower.pos_embed"),
             ("model.vision_model.post_layernorm.", "vision_model.vision_tower.norm."),
             ("model.vision_model.encoder.layers.", "vision_model.vision_tower.blocks."),
             ("model.aligner.fc1.", "aligner.layers.0."), ("model.aligner.hidden_layers.0.", "aligner.layers.2."),
             ("model.generation_aligner.fc1.", "gen_aligner.layers.0."),
             ("model.generation_aligner.hidden_layers.0.", "gen_aligner.layers.2."),
             ("model.generation_head.proj_out.", "gen_head.output_mlp_projector."),
             ("model.generation_head.vision_head.", "gen_head.vision_head."),
             ("model.generation_embeddings.", "gen_embed."), ("model.language_model.", "language_model.model."),
             ("lm_head.", "language_model.lm_head."), ("model.vqmodel.", "gen_vision_model.")]
    if key.startswith("model.vision_model.encoder."):
        for hf_part, part in ((".self_attn.projection_layer.", ".attn.proj."), (".self_attn.", ".attn."),
                              (".layer_norm", ".norm")):
            key = key.replace(hf_part, part)
    for hf_part, part in fixed:
        if hf_part in key:
            key = key.replace(hf_part, part)
    return key


def state_dict_to_original(state: dict[str, torch.Tensor], vision_width: int) -> dict[str, torch.Tensor]:
    return {**renamed_to_original(state), **unused_original_weights(vision_width)}


def renamed_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF weights under their original names (a layer's q/k/v must all be in `state`: they become one qkv)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        if ".self_attn.q_proj." in key:
            parts = [state[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[original_name(key.replace("q_proj", "qkv"))] = torch.cat(parts).contiguous()
        elif key.endswith("position_embedding.weight"):
            out[original_name(key)] = tensor.unsqueeze(0).contiguous()
        else:
            out[original_name(key)] = tensor.contiguous()
    return out


def unused_original_weights(vision_width: int) -> dict[str, torch.Tensor]:
    """Present in the released checkpoints though never run: the SigLIP attention-pool head and a VQ usage buffer."""
    return {"vision_model.vision_tower.attn_pool.latent": torch.zeros(1, 1, vision_width),
            "vision_model.vision_tower.attn_pool.q.weight": torch.zeros(vision_width, vision_width),
            "gen_vision_model.quantize.codebook_used": torch.zeros(65536)}


def config_from_original(config_json: dict, directory: Path, state: dict[str, torch.Tensor]):
    """Builds transformers' JanusConfig from an original config.json plus the tokenizer's special ids."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    from .metadata import token_id, tokenizer_vocab

    try:
        language = {**LLAMA_DEFAULTS, **config_json["language_config"]}
        vision_params = config_json["vision_config"]["params"]
        aligner = config_json["aligner_config"]["params"]
        gen_vision = config_json["gen_vision_config"]["params"]
        gen_aligner = config_json["gen_aligner_config"]["params"]
        gen_head = config_json["gen_head_config"]["params"]
        vq_name = config_json["gen_vision_config"].get("cls", VQ_16.name)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{directory / 'config.json'} lacks {exc}, which the original Janus format has",
                              "download config.json again") from None
    siglip = vision_tower(vision_params)
    vq = {**named_part(VQ_PRESETS, vq_name, "VQ"),
          **{k: v for k, v in gen_vision.items() if k in ("ch", "ch_mult", "z_channels", "num_res_blocks")}}
    vocab = tokenizer_vocab(directory / "tokenizer.json")
    special = special_tokens(directory)
    text = LlamaConfig(
        vocab_size=language["vocab_size"], hidden_size=language["hidden_size"],
        intermediate_size=language["intermediate_size"], num_hidden_layers=language["num_hidden_layers"],
        num_attention_heads=language["num_attention_heads"],
        num_key_value_heads=language.get("num_key_value_heads", language["num_attention_heads"]),
        max_position_embeddings=language["max_position_embeddings"], rms_norm_eps=language["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": float(language["rope_theta"])},
        bos_token_id=token_id(vocab, special["bos_token"]), eos_token_id=token_id(vocab, special["eos_token"]),
        pad_token_id=token_id(vocab, special.get("pad_token") or "<\uff5c\u2581pad\u2581\uff5c>"),
        tie_word_embeddings="language_model.lm_head.weight" not in state)
    vision = JanusVisionConfig(hidden_size=siglip["width"], num_hidden_layers=siglip["layers"],
                               num_attention_heads=siglip["heads"], mlp_ratio=siglip["mlp_ratio"],
                               image_size=siglip["image_size"], patch_size=siglip["patch_size"],
                               projection_dim=aligner["n_embed"], depth=aligner.get("depth", 2))
    vq_config = JanusVQVAEConfig(embed_dim=gen_vision["n_embed"], num_embeddings=gen_vision["image_token_size"],
                                 latent_channels=vq["z_channels"], base_channels=vq["ch"],
                                 channel_multiplier=list(vq["ch_mult"]), num_res_blocks=vq["num_res_blocks"],
                                 projection_dim=gen_aligner["n_embed"], num_hidden_layers=gen_aligner.get("depth", 2),
                                 image_token_embed_dim=gen_head["image_token_embed"])
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq_config,
                       image_token_id=token_id(vocab, "<image_placeholder>"),
                       tie_word_embeddings=text.tie_word_embeddings)


def vision_tower(params: dict) -> dict:
    """The SigLIP tower DeepSeek's vision params describe: the named model's shape (overridden by explicit shape
    keys, as tiny checkpoints have), its depth cut at `select_layer`, and the image size."""
    siglip = {**named_part(SIGLIP_PRESETS, params.get("model_name", SIGLIP_L16_384.name), "vision"),
              **{k: v for k, v in params.items() if k in ("width", "layers", "heads", "mlp_ratio", "patch_size")}}
    select_layer = int(params.get("select_layer", -1))
    depth = siglip["layers"] + select_layer + 1 if select_layer <= 0 else select_layer
    siglip.update(layers=min(siglip["layers"], depth), image_size=int(params.get("image_size", IMAGE_SIZE)))
    return siglip


def named_part(presets: dict, name: str, what: str) -> dict:
    """The shape keys of a sub-model DeepSeek's config names (`SIGLIP_PRESETS`, `VQ_PRESETS`)."""
    if name not in presets:
        raise CheckpointError(f"unknown {what} model {name!r} in config.json", f"janus-edge knows {', '.join(presets)}")
    return dict(presets[name])


def special_tokens(directory: Path) -> dict:
    """special_tokens_map.json's tokens by role (DeepSeek's BOS and EOS where the file is absent)."""
    path = directory / "special_tokens_map.json"
    if not path.is_file():
        return {"bos_token": "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
                "eos_token": "<\uff5cend\u2581of\u2581sentence\uff5c>"}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: (v["content"] if isinstance(v, dict) else v) for k, v in data.items()}


def write_original(model, tokenizer, directory: Path) -> None:
    """Writes `model` in the original layout: config.json, pytorch_model.bin and the processor/tokenizer files."""
    write_original_files(model.config, tokenizer, directory)
    state = state_dict_to_original(model.state_dict(), model.config.vision_config.hidden_size)
    torch.save(state, directory / "pytorch_model.bin")


def write_original_files(config, tokenizer, directory: Path, dtype: str = "float32") -> None:
    """Everything of the original layout but the weights: config.json (weights in `dtype`), the processor and
    tokenizer files."""
    from .tiny_tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS

    text, vision, vq = config.text_config, config.vision_config, config.vq_config
    hidden = text.hidden_size
    vision_params = {"image_size": vision.image_size, "model_name": SIGLIP_L16_384.name, "select_feature": "same",
                     "select_layer": -1}
    gen_vision_params = {"image_token_size": vq.num_embeddings, "n_embed": vq.embed_dim}
    vision_shape = {"width": vision.hidden_size, "layers": vision.num_hidden_layers,
                    "heads": vision.num_attention_heads, "mlp_ratio": vision.mlp_ratio}
    vq_shape = {"ch": vq.base_channels, "ch_mult": list(vq.channel_multiplier), "z_channels": vq.latent_channels,
                "num_res_blocks": vq.num_res_blocks}
    if any(SIGLIP_PRESETS[SIGLIP_L16_384.name][k] != v for k, v in vision_shape.items()) \
            or any(VQ_PRESETS[VQ_16.name][k] != v for k, v in vq_shape.items()):
        # janus-edge extension: shapes other than the named models' (tiny checkpoints)
        vision_params.update(vision_shape)
        gen_vision_params.update(vq_shape)
    config_json = {
        "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
                           "params": {"depth": 2, "input_dim": vision.hidden_size, "n_embed": hidden,
                                      "projector_type": "mlp_gelu"}},
        "architectures": ["MultiModalityCausalLM"],
        "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
                               "params": {"depth": 2, "input_dim": vq.embed_dim, "n_embed": hidden,
                                          "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                            "params": {"image_token_embed": hidden, "image_token_size": vq.num_embeddings,
                                       "n_embed": hidden}},
        "gen_vision_config": {"cls": VQ_16.name, "model_type": "gen_vision", "params": gen_vision_params},
        "language_config": {"hidden_size": hidden, "intermediate_size": text.intermediate_size,
                            "max_position_embeddings": text.max_position_embeddings, "model_type": "llama",
                            "num_attention_heads": text.num_attention_heads,
                            "num_hidden_layers": text.num_hidden_layers,
                            "num_key_value_heads": text.num_key_value_heads, "torch_dtype": dtype,
                            "vocab_size": text.vocab_size},
        "model_type": "multi_modality",
        "torch_dtype": dtype,
        "transformers_version": "4.33.1",
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision", "params": vision_params},
    }
    files = {
        "config.json": config_json,
        "preprocessor_config.json": {"background_color": [127, 127, 127], "do_normalize": True,
                                     "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "VLMImageProcessor",
                                     "image_size": vision.image_size, "image_std": [0.5, 0.5, 0.5], "min_size": 14,
                                     "processor_class": "VLChatProcessor", "rescale_factor": 1 / 255},
        "processor_config.json": {"add_special_token": False, "ignore_id": -100, "image_tag": "<image_placeholder>",
                                  "mask_prompt": True, "num_image_tokens": NUM_IMAGE_TOKENS,
                                  "processor_class": "VLChatProcessor",
                                  "sft_format": "deepseek"},
        "special_tokens_map.json": {"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in
                                                                  (BOS, EOS, PAD)],
                                    "bos_token": BOS, "eos_token": EOS, "pad_token": PAD},
        "tokenizer_config.json": {"bos_token": BOS, "clean_up_tokenization_spaces": False, "eos_token": EOS,
                                  "model_max_length": 16384, "pad_token": None, "tokenizer_class": "LlamaTokenizer",
                                  "unk_token": None, "use_default_system_prompt": True},
    }
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
    tokenizer.save(str(directory / "tokenizer.json"))
