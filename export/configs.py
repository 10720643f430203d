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

# Every Janus model: SigLIP-L/16 at 384 x 384 and VQ-16, so 24 x 24 = 576 tokens per image.
IMAGE_SIZE, PATCH_SIZE = 384, 16
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2


def _preset(family: str, hidden: int, intermediate: int, layers: int, heads: int, vocab: int, vision_hidden: int,
            vision_layers: int, vision_heads: int, vq_base_channels: int, vq_latent_channels: int, vq_res_blocks: int,
            max_position_embeddings: int = 16384) -> ModelInfo:
    return ModelInfo(family=family, source_format="hf", hidden_size=hidden, vocab_size=vocab, codebook_size=16384,
                     num_layers=layers, num_kv_heads=heads, head_dim=hidden // heads, image_size=IMAGE_SIZE,
                     num_image_tokens=NUM_IMAGE_TOKENS, max_position_embeddings=max_position_embeddings,
                     intermediate_size=intermediate, num_heads=heads, vision_hidden_size=vision_hidden,
                     vision_layers=vision_layers, vision_heads=vision_heads, vision_intermediate_size=4 * vision_hidden,
                     codebook_dim=8, vq_base_channels=vq_base_channels, vq_channel_multiplier=[1, 1, 2, 2, 4],
                     vq_latent_channels=vq_latent_channels, vq_res_blocks=vq_res_blocks)


PRESETS: dict[str, ModelInfo] = {
    "janus-pro-1b": _preset("janus-pro", 2048, 5632, 24, 16, 102400, 1024, 24, 16, 128, 256, 2),
    "janus-pro-7b": _preset("janus-pro", 4096, 11008, 30, 32, 102400, 1024, 24, 16, 128, 256, 2),
    "janus-1.3b": _preset("janus", 2048, 5632, 24, 16, 102400, 1024, 24, 16, 128, 256, 2),
    # vocab_size is replaced by the tiny tokenizer's size (rounded up to a multiple of 64).
    "tiny": _preset("janus-pro", 64, 128, 2, 4, 0, 32, 2, 2, 32, 32, 1, max_position_embeddings=4096),
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
