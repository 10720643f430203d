"""Model presets: the real Janus family's shapes, and the tiny model of the same architecture used for tests.

Every preset is a `ModelInfo` (the manifest's model description) that `config_of` turns into a
`transformers.JanusConfig` and `model_info` reads back from one. The tiny one keeps everything that shapes the data
flow (384x384 input, 16x16 patches -> 576 image tokens, 16x VQ downsampling, 16384-entry codebook of 8-dim codes,
the two-layer aligners and heads) and shrinks only widths and depths.
"""

from __future__ import annotations

import dataclasses

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import ModelInfo

from .components import LLM, LLM_1B, LLM_7B, SIGLIP_L16_384, VQ_16, VisionTower, VQModel

TINY_LLM = LLM(hidden=64, intermediate=128, layers=2, heads=4, vocab=0, max_positions=4096)  # vocab: the tokenizer's
TINY_SIGLIP = dataclasses.replace(SIGLIP_L16_384, width=32, layers=2, heads=2)
TINY_VQ = dataclasses.replace(VQ_16, base_channels=32, latent_channels=32, res_blocks=1)


def preset_fields(llm: LLM, vision: VisionTower) -> dict:
    """The `ModelInfo` fields of an LLM and a vision tower (every family's presets have both)."""
    return dict(hidden_size=llm.hidden, vocab_size=llm.vocab, num_layers=llm.layers, num_kv_heads=llm.heads,
                head_dim=llm.hidden // llm.heads, image_size=vision.image_size, num_image_tokens=vision.num_tokens,
                max_position_embeddings=llm.max_positions, intermediate_size=llm.intermediate, num_heads=llm.heads,
                vision_hidden_size=vision.width, vision_layers=vision.layers, vision_heads=vision.heads,
                vision_intermediate_size=vision.mlp_ratio * vision.width)


def _preset(family: str, llm: LLM, vision: VisionTower = SIGLIP_L16_384, vq: VQModel = VQ_16) -> ModelInfo:
    return ModelInfo(family=family, source_format="hf", codebook_size=vq.codebook_size, **preset_fields(llm, vision),
                     codebook_dim=vq.codebook_dim, vq_base_channels=vq.base_channels,
                     vq_channel_multiplier=list(vq.channel_multiplier), vq_latent_channels=vq.latent_channels,
                     vq_res_blocks=vq.res_blocks)


PRESETS: dict[str, ModelInfo] = {
    "janus-pro-1b": _preset("janus-pro", LLM_1B),
    "janus-pro-7b": _preset("janus-pro", LLM_7B),
    "janus-1.3b": _preset("janus", LLM_1B),
    # vocab_size is replaced by the tiny tokenizer's size (rounded up to a multiple of 64).
    "tiny": _preset("janus-pro", TINY_LLM, TINY_SIGLIP, TINY_VQ),
}


def preset(name: str) -> ModelInfo:
    if name not in PRESETS:
        raise RequestError(f"unknown model preset {name!r}", f"choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def llm_fields(text) -> dict:
    """The LLM part of a `ModelInfo`, from a transformers Llama-style config (Janus and JanusFlow alike)."""
    return dict(hidden_size=text.hidden_size, vocab_size=text.vocab_size, num_layers=text.num_hidden_layers,
                num_kv_heads=text.num_key_value_heads,
                head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
                max_position_embeddings=text.max_position_embeddings, intermediate_size=text.intermediate_size,
                num_heads=text.num_attention_heads)


def model_info(config, family: str = "janus-pro", source_format: str = "hf") -> ModelInfo:
    """The `ModelInfo` of a transformers `JanusConfig` (the inverse of `janus_config`)."""
    vision, vq = config.vision_config, config.vq_config
    size = vision.image_size
    return ModelInfo(family=family, source_format=source_format, codebook_size=vq.num_embeddings, image_size=size,
                     num_image_tokens=(size // vision.patch_size) ** 2, **llm_fields(config.text_config),
                     vision_hidden_size=vision.hidden_size, vision_layers=vision.num_hidden_layers,
                     vision_heads=vision.num_attention_heads,
                     vision_intermediate_size=int(vision.hidden_size * vision.mlp_ratio), codebook_dim=vq.embed_dim,
                     vq_base_channels=vq.base_channels, vq_channel_multiplier=list(vq.channel_multiplier),
                     vq_latent_channels=vq.latent_channels, vq_res_blocks=vq.num_res_blocks)


def janus_config(preset_name: str, vocab_size: int | None = None, special_ids: dict[str, int] | None = None):
    """Builds the `JanusConfig` of a preset; `special_ids` holds bos/eos/pad/image token ids from the tokenizer."""
    p = preset(preset_name)
    if vocab_size:
        p = dataclasses.replace(p, vocab_size=vocab_size)
    return config_of(p, special_ids)


def config_of(p: ModelInfo, special_ids: dict[str, int] | None = None):
    """The transformers `JanusConfig` of a model description (every optional field set, as presets have them)."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    ids = special_ids or {"bos": 100000, "eos": 100001, "pad": 100015, "image": 100581}
    text = LlamaConfig(
        vocab_size=p.vocab_size,
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        max_position_embeddings=p.max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
    )
    vision = JanusVisionConfig(
        hidden_size=p.vision_hidden_size,
        num_hidden_layers=p.vision_layers,
        num_attention_heads=p.vision_heads,
        mlp_ratio=p.vision_intermediate_size / p.vision_hidden_size,
        image_size=p.image_size,
        patch_size=p.patch_size,
        projection_dim=p.hidden_size,
        depth=2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=p.codebook_dim,
        num_embeddings=p.codebook_size,
        latent_channels=p.vq_latent_channels,
        base_channels=p.vq_base_channels,
        channel_multiplier=list(p.vq_channel_multiplier),
        num_res_blocks=p.vq_res_blocks,
        projection_dim=p.hidden_size,
        image_token_embed_dim=p.hidden_size,
        num_hidden_layers=2,
    )
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=ids["image"],
        tie_word_embeddings=False,
    )
